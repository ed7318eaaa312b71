"""The eskit store contract against a real 1-node Cassandra cluster."""

import pytest

from tests.backends.cassandra.contract import contract_tests

pytestmark = [pytest.mark.cassandra, pytest.mark.cluster(nodes=1)]

cassandra_stores, TestCassandraEventStoreOneNode, TestCassandraSnapshotStoreOneNode = contract_tests(1)
