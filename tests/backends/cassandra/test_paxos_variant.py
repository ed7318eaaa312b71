"""The store refuses a cluster that does not run Paxos v2.

A timed-out conditional append is resolved by sending the same batch again and
reading at serial consistency; that resolution is sound under Paxos v2 only, so
a store opened on a node running ``paxos_variant: v1`` must refuse to start and
say which setting to change.
"""

from __future__ import annotations

import pytest

from eskit import open_stores
from eskit.exceptions import SchemaError
from tests.support.cassandra import ClusterPool, fresh_keyspace, store_url

pytestmark = [pytest.mark.cassandra, pytest.mark.slow, pytest.mark.cluster(nodes=1, paxos_variant="v1")]


def test_a_store_on_a_cluster_running_paxos_v1_refuses_to_start_naming_the_setting(
    cluster_pool: ClusterPool,
) -> None:
    cluster = cluster_pool.get(1, paxos_variant="v1")

    with pytest.raises(SchemaError, match="paxos_variant") as refused:
        open_stores(store_url(cluster, fresh_keyspace("paxos")))

    assert "v1" in str(refused.value) and "v2" in str(refused.value)
