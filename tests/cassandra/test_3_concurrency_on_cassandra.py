"""The end-to-end concurrency races, with two server processes on the 3-node cluster.

The races are the SQLite ones, imported: 8 clients racing on one account for the
device limit, the per-device limit and the per-title yearly limit, and repeating
one Idempotency-Key from many clients at once. Here both worker processes append
through lightweight transactions on a cluster with replication factor 3.
"""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cassandra.conftest import ClusterPool, cassandra_server
from tests.e2e.test_concurrency import *  # noqa: F403
from tests.e2e.test_concurrency import POLICY
from tests.support.server import Server

pytestmark = [pytest.mark.cassandra]


@pytest.fixture(scope="module")
def server(cluster_pool: ClusterPool, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Two worker processes sharing one keyspace of the 3-node cluster, running the races' policy."""
    tmp_path: Path = tmp_path_factory.mktemp("concurrency")
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    with cassandra_server(cluster_pool, tmp_path, workers=2, policy=policy) as running:
        yield running
