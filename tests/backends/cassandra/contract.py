"""The eskit store contract, bound to a local cluster of a given size (shared by the test modules)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from eskit import Stores, open_stores
from eskit.ports import EventStore, SnapshotStore
from eskit.testing.contract import EventStoreContract, SnapshotStoreContract
from tests.support.cassandra import ClusterPool, fresh_keyspace, store_url


def contract_tests(nodes: int) -> tuple[Any, type[EventStoreContract], type[SnapshotStoreContract]]:
    """A module fixture and the two contract classes, running on a ``nodes``-node cluster
    (replication factor ``nodes``, a bucket size of 10 so the contract's streams cross partitions)."""

    @pytest.fixture(scope="module")
    def cassandra_stores(cluster_pool: ClusterPool) -> Iterator[Stores]:
        cluster = cluster_pool.get(nodes)
        stores = open_stores(store_url(cluster, fresh_keyspace("contract"), bucket_size="10"))
        yield stores
        stores.close()

    class EventStoreOnCluster(EventStoreContract):
        racers = 4
        race_rounds = 5
        max_append = 10  # the bucket size
        long_streams = False  # 7,000 appends of 10: test_1_buckets builds one with bigger buckets

        @pytest.fixture(autouse=True)
        def _shared(self, cassandra_stores: Stores) -> None:
            self.shared = cassandra_stores

        def make_event_store(self) -> EventStore:
            return self.shared.events

        def release_event_store(self, store: EventStore) -> None:
            """The module's connection stays open for the next test."""

    class SnapshotStoreOnCluster(SnapshotStoreContract):
        @pytest.fixture(autouse=True)
        def _shared(self, cassandra_stores: Stores) -> None:
            self.shared = cassandra_stores

        def make_snapshot_store(self) -> SnapshotStore:
            return self.shared.snapshots

        def release_snapshot_store(self, store: SnapshotStore) -> None:
            """The module's connection stays open for the next test."""

    return cassandra_stores, EventStoreOnCluster, SnapshotStoreOnCluster
