"""The command runner's cache: aggregates kept between commands, never stale, never half-changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from eskit import CommandRunner, EventCodec, Repository
from eskit.stores.sqlite import SQLiteEventStore
from tests.eskit.unit.test_commands import META, EntryRecorded, Ledger


def repositories(tmp_path: Path) -> tuple[CommandRunner[Ledger], CommandRunner[Ledger]]:
    """Two repositories on one SQLite file, as two server processes would have: the first caches."""
    codec = EventCodec([EntryRecorded])
    path = tmp_path / "cache.db"
    cached = CommandRunner(Repository(Ledger, SQLiteEventStore(path), codec), cache_size=10)
    other = CommandRunner(Repository(Ledger, SQLiteEventStore(path), codec))
    return cached, other


def test_a_cached_aggregate_sees_what_another_process_appended_since(tmp_path: Path) -> None:
    cached, other = repositories(tmp_path)
    cached.run("l1", lambda ledger: ledger.record("a"), metadata=META, create=True)
    other.run("l1", lambda ledger: ledger.record("b"), metadata=META)
    seen = cached.run("l1", lambda ledger: list(ledger.entries), metadata=META)
    assert seen == ["a", "b"]
    cached.run("l1", lambda ledger: ledger.record("c"), metadata=META)
    assert other.repository.load("l1").entries == ["a", "b", "c"]


def test_a_command_that_fails_after_changing_the_aggregate_leaves_no_trace_in_the_cache(tmp_path: Path) -> None:
    cached, _ = repositories(tmp_path)
    cached.run("l1", lambda ledger: ledger.record("a"), metadata=META, create=True)

    def record_then_fail(ledger: Ledger) -> None:
        ledger.record("never saved")
        raise RuntimeError("refused after a change")

    with pytest.raises(RuntimeError):
        cached.run("l1", record_then_fail, metadata=META)
    assert cached.run("l1", lambda ledger: list(ledger.entries), metadata=META) == ["a"]
    assert cached.run("l1", lambda ledger: ledger.version, metadata=META) == 1


def test_the_cache_holds_at_most_cache_size_aggregates(tmp_path: Path) -> None:
    cached, _ = repositories(tmp_path)
    for n in range(25):
        cached.run(f"l{n}", lambda ledger: ledger.record("x"), metadata=META, create=True)
    assert len(cached._cache) == 10
    assert cached.run("l0", lambda ledger: list(ledger.entries), metadata=META) == ["x"]
