"""Every service a Cassandra test runs has the same master key (a Cassandra store is production mode)."""

from __future__ import annotations

import pytest

from tests.support.cassandra import MASTER_KEY


@pytest.fixture(autouse=True)
def _master_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Set after the root's clean environment: in-process services and started servers read it."""
    monkeypatch.setenv("DOWNLOADS_MASTER_KEY", MASTER_KEY)
