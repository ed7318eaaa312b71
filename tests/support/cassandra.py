"""Real Cassandra clusters for tests: started by the session, one at a time, always stopped.

All local clusters listen on 127.0.0.x:9042, so one runs at a time: asking for a
cluster of another kind stops the running one first. The three-region kind runs every
connection between regions through its WAN proxies, handed out at 0 ms and healed; a test
that sets a distance or cuts a region off puts it back in a ``finally``. Tests say which kind they
need with ``pytest.mark.cluster(nodes=..., dcs=..., paxos_variant=...)``, and
the session runs them grouped by kind in :data:`KINDS` order (see the root
conftest), so each kind starts once.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tools.cassandra_cluster import LocalCassandraCluster

#: every kind of cluster the tests start: (nodes, data centres, Paxos variant)
KINDS = ((1, 1, "v2"), (1, 1, "v1"), (3, 1, "v2"), (3, 3, "v2"))

#: the master key of every service the Cassandra tests run (a Cassandra store is production mode: it needs one)
MASTER_KEY = "1yjvkFm0IGZr7bB2V7Kcwr9ZqB0E8H6G3F4z6mW9mBk"


class ClusterPool:
    """Keeps at most one local cluster running and hands it out by kind (size, regions, Paxos)."""

    def __init__(self) -> None:
        self.current: LocalCassandraCluster | None = None

    def get(self, nodes: int, *, dcs: int = 1, paxos_variant: str = "v2") -> LocalCassandraCluster:
        kind = (nodes, dcs, paxos_variant)
        current = self.current
        if current is not None and (current.nodes, current.dcs, current.paxos_variant) == kind:
            return current
        if current is not None:
            current.stop(wipe=True)  # local clusters share 127.0.0.x:9042: one at a time
            self.current = None
        for other in KINDS:  # one left up by an earlier run with ESKIT_KEEP_CLUSTERS=1
            left = LocalCassandraCluster(other[0], dcs=other[1], paxos_variant=other[2])
            if other != kind and left.is_running():
                left.stop(wipe=True)
        cluster = LocalCassandraCluster(nodes, dcs=dcs, paxos_variant=paxos_variant)
        self.current = cluster
        cluster.start()
        if cluster.proxied:  # one left up by an earlier run may still be cut off or at a distance
            cluster.heal()
            cluster.set_wan(0)
        return cluster

    def close(self) -> None:
        """Stop and wipe the running cluster; ``ESKIT_KEEP_CLUSTERS=1`` leaves it up for the next run."""
        if self.current is not None and os.environ.get("ESKIT_KEEP_CLUSTERS") != "1":
            self.current.stop(wipe=True)
        self.current = None


@pytest.fixture(scope="session")
def cluster_pool() -> Iterator[ClusterPool]:
    pool = ClusterPool()
    try:
        yield pool
    finally:
        pool.close()


def store_url(cluster: LocalCassandraCluster, keyspace: str, **options: str) -> str:
    """A store URL for a fresh keyspace on ``cluster`` (every node a replica: one per DC on a multi-DC one)."""
    one_per_dc = ",".join(f"{dc}:1" for dc in cluster.data_centres)
    replication = one_per_dc if cluster.dcs > 1 else str(cluster.nodes)
    query = {"dc": "dc1", "replication": replication, "create_schema": "true", **options}
    hosts = ",".join(cluster.contact_points)
    return f"cassandra://{hosts}/{keyspace}?" + "&".join(f"{k}={v}" for k, v in query.items())


def fresh_keyspace(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def drop_keyspace(cluster: LocalCassandraCluster, keyspace: str) -> None:
    """Drop a test's keyspace (its tables cost the nodes' heaps for the rest of the session)."""
    from cassandra.cluster import Cluster

    driver = Cluster(cluster.contact_points, protocol_version=5)
    try:
        session = driver.connect()
        session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=120)
    finally:
        driver.shutdown()


@contextmanager
def keyspace_url(cluster: LocalCassandraCluster, prefix: str, **options: str) -> Iterator[str]:
    """A store URL on a fresh keyspace of ``cluster``, dropped afterwards."""
    keyspace = fresh_keyspace(prefix)
    try:
        yield store_url(cluster, keyspace, **options)
    finally:
        drop_keyspace(cluster, keyspace)
