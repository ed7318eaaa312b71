"""The key store contract, run against the in-memory store and the SQLite store's file."""

from __future__ import annotations

from pathlib import Path

import pytest

from eskit import open_stores
from eskit.privacy import KeyStore
from eskit.stores.memory import InMemoryKeyStore
from eskit.testing.keys import KeyStoreContract


class TestInMemoryKeyStore(KeyStoreContract):
    def make_key_store(self) -> KeyStore:
        return InMemoryKeyStore()


class TestSQLiteKeyStore(KeyStoreContract):
    @pytest.fixture(autouse=True)
    def _db(self, tmp_path: Path) -> None:
        self.url = f"sqlite:///{tmp_path / 'keys.db'}"

    def make_key_store(self) -> KeyStore:
        stores = open_stores(self.url)
        assert stores.keys is not None
        return stores.keys
