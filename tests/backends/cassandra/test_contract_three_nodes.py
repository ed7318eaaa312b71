"""The eskit store contract against a real 3-node Cassandra cluster (replication factor 3)."""

import pytest

from tests.backends.cassandra.contract import contract_tests

pytestmark = [pytest.mark.cassandra, pytest.mark.cluster(nodes=3)]

cassandra_stores, TestCassandraEventStoreThreeNodes, TestCassandraSnapshotStoreThreeNodes = contract_tests(3)
