"""The feed and follower contract, run on memory (its stream feed) and SQLite (one sequence)."""

from __future__ import annotations

from pathlib import Path

import pytest

from eskit import Stores, open_stores
from eskit.testing.feeds import FollowerContract


class TestInMemoryFollower(FollowerContract):
    def make_stores(self) -> Stores:
        return open_stores("memory://")


class TestSQLiteFollower(FollowerContract):
    @pytest.fixture(autouse=True)
    def _db(self, tmp_path: Path) -> None:
        self.path = tmp_path / "feed.db"

    def make_stores(self) -> Stores:
        return open_stores(f"sqlite:///{self.path}")
