"""The eskit store contract against a real 1-node Cassandra cluster."""

import pytest

from tests.cassandra.contract import contract_tests

pytestmark = pytest.mark.cassandra

cassandra_stores, TestCassandraEventStoreOneNode, TestCassandraSnapshotStoreOneNode = contract_tests(1)
