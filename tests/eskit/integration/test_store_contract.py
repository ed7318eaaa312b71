"""The store contract, run against the in-memory and SQLite stores."""

from __future__ import annotations

from pathlib import Path

import pytest

from eskit import Stores, open_stores
from eskit.ports import EventStore, SnapshotStore
from eskit.stores.memory import InMemoryEventStore, InMemorySnapshotStore
from eskit.stores.sqlite import SQLiteEventStore, SQLiteSnapshotStore
from eskit.testing.contract import EventFeedContract, EventStoreContract, SnapshotStoreContract


class TestInMemoryEventStore(EventStoreContract):
    def make_event_store(self) -> EventStore:
        return InMemoryEventStore()


class TestInMemorySnapshotStore(SnapshotStoreContract):
    def make_snapshot_store(self) -> SnapshotStore:
        return InMemorySnapshotStore()


class TestSQLiteEventStore(EventStoreContract):
    @pytest.fixture(autouse=True)
    def _db(self, tmp_path: Path) -> None:
        self.path = tmp_path / "events.db"

    def make_event_store(self) -> EventStore:
        return SQLiteEventStore(self.path)


class TestSQLiteSnapshotStore(SnapshotStoreContract):
    @pytest.fixture(autouse=True)
    def _db(self, tmp_path: Path) -> None:
        self.path = tmp_path / "snapshots.db"

    def make_snapshot_store(self) -> SnapshotStore:
        return SQLiteSnapshotStore(self.path)


class TestInMemoryEventFeed(EventFeedContract):
    def make_stores(self) -> Stores:
        return open_stores("memory://")


class TestSQLiteEventFeed(EventFeedContract):
    @pytest.fixture(autouse=True)
    def _db(self, tmp_path: Path) -> None:
        self.path = tmp_path / "feed.db"

    def make_stores(self) -> Stores:
        return open_stores(f"sqlite:///{self.path}")
