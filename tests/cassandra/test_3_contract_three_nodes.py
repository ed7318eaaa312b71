"""The eskit store contract against a real 3-node Cassandra cluster (replication factor 3)."""

import pytest

from tests.cassandra.contract import contract_tests

pytestmark = pytest.mark.cassandra

cassandra_stores, TestCassandraEventStoreThreeNodes, TestCassandraSnapshotStoreThreeNodes = contract_tests(3)
