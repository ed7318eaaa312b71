"""The key store contract against a real 3-node Cassandra cluster (lightweight transactions at SERIAL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from eskit import Stores, open_stores
from eskit.privacy import KeyStore
from eskit.testing.keys import KeyStoreContract
from tests.support.cassandra import ClusterPool, fresh_keyspace, store_url

pytestmark = [pytest.mark.cassandra, pytest.mark.cluster(nodes=3)]


@pytest.fixture(scope="module")
def cassandra_keys(cluster_pool: ClusterPool) -> Iterator[Stores]:
    cluster = cluster_pool.get(3)
    stores = open_stores(store_url(cluster, fresh_keyspace("keys")))
    yield stores
    stores.close()


class TestCassandraKeyStore(KeyStoreContract):
    racers = 4

    @pytest.fixture(autouse=True)
    def _shared(self, cassandra_keys: Stores) -> None:
        self.shared = cassandra_keys

    def make_key_store(self) -> KeyStore:
        assert self.shared.keys is not None
        return self.shared.keys

    def release_key_store(self, store: KeyStore) -> None:
        """The module's connection stays open for the next test."""
