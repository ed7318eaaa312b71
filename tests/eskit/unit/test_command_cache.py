"""The command runner's cache: aggregates kept between commands, never stale, never half-changed."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from eskit import CommandRunner, ConcurrencyError, EventCodec, NewEvent, Repository, StoredEvent, StoreUnavailable
from eskit.stores.sqlite import SQLiteEventStore
from tests.eskit.unit.test_commands import META, EntryRecorded, Ledger, Refused


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


class CountingStore(SQLiteEventStore):
    """A SQLite store that counts the reads a command makes (``read`` and ``version`` calls)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.reads: list[tuple[str, int, int | None]] = []

    def read(
        self, stream_id: str, *, gt: int = 0, lte: int | None = None, limit: int | None = None, desc: bool = False
    ) -> list[StoredEvent]:
        self.reads.append(("read", gt, lte))
        return super().read(stream_id, gt=gt, lte=lte, limit=limit, desc=desc)

    def version(self, stream_id: str) -> int:
        self.reads.append(("version", 0, None))
        return super().version(stream_id)


def counted(tmp_path: Path) -> tuple[CommandRunner[Ledger], CountingStore, CommandRunner[Ledger]]:
    """A caching runner over a counting store, and another process's runner on the same file."""
    codec = EventCodec([EntryRecorded])
    store = CountingStore(tmp_path / "counted.db")
    other = CommandRunner(Repository(Ledger, SQLiteEventStore(tmp_path / "counted.db"), codec))
    return CommandRunner(Repository(Ledger, store, codec), cache_size=10), store, other


def test_a_command_on_a_cached_aggregate_reads_nothing_before_its_append(tmp_path: Path) -> None:
    cached, store, _ = counted(tmp_path)
    cached.run("l1", lambda ledger: ledger.record("a"), metadata=META, create=True)
    store.reads.clear()

    cached.run("l1", lambda ledger: ledger.record("b"), metadata=META)

    assert store.reads == []  # the conditional append alone tells a stale cache
    assert cached.repository.load("l1").entries == ["a", "b"]


def test_a_stale_cached_aggregate_loses_its_append_and_is_decided_again_on_the_stored_state(tmp_path: Path) -> None:
    cached, store, other = counted(tmp_path)
    cached.run("l1", lambda ledger: ledger.record("a"), metadata=META, create=True)
    other.run("l1", lambda ledger: ledger.record("b"), metadata=META)
    other.run("l1", lambda ledger: ledger.record("c"), metadata=META)
    seen: list[list[str]] = []

    def record_after_seeing(ledger: Ledger) -> None:
        seen.append(list(ledger.entries))
        ledger.record("d")

    store.reads.clear()
    cached.run("l1", record_after_seeing, metadata=META)

    assert seen == [["a"], ["a", "b", "c"]]
    # The reload after the conflict reads exactly up to the version the refusal reported.
    assert store.reads == [("read", 0, 3)]
    assert other.repository.load("l1").entries == ["a", "b", "c", "d"]


def test_a_refusal_decided_on_a_stale_cached_aggregate_is_decided_again(tmp_path: Path) -> None:
    cached, _, other = counted(tmp_path)
    cached.run("l1", lambda ledger: ledger.record("a"), metadata=META, create=True)
    other.run("l1", lambda ledger: ledger.record("b"), metadata=META)

    def needs_b(ledger: Ledger) -> int:
        if "b" not in ledger.entries:
            raise Refused("no b yet")
        return len(ledger.entries)

    assert cached.run("l1", needs_b, metadata=META) == 2
    with pytest.raises(Refused):  # a refusal on current state stands, and the state stays cached
        cached.run("l2", needs_b, metadata=META, create=True)


def test_a_refusal_on_a_current_cached_aggregate_costs_one_read_and_keeps_it_cached(tmp_path: Path) -> None:
    cached, store, _ = counted(tmp_path)
    cached.run("l1", lambda ledger: ledger.record("a"), metadata=META, create=True)
    store.reads.clear()

    def refuse(ledger: Ledger) -> None:
        raise Refused("no")

    with pytest.raises(Refused):
        cached.run("l1", refuse, metadata=META)
    assert store.reads == [("read", 1, None)]  # what came after the cached state: nothing
    store.reads.clear()
    cached.run("l1", lambda ledger: ledger.record("b"), metadata=META)
    assert store.reads == []  # still cached


def test_a_new_stream_is_written_without_reading_first_and_an_existing_one_is_found_by_the_refused_append(
    tmp_path: Path,
) -> None:
    cached, store, other = counted(tmp_path)
    cached.run("fresh", lambda ledger: ledger.record("a"), metadata=META, create=True, new=True)
    assert store.reads == []

    other.run("taken", lambda ledger: ledger.record("theirs"), metadata=META, create=True)
    seen: list[list[str]] = []

    def open_once(ledger: Ledger) -> None:
        seen.append(list(ledger.entries))
        if not ledger.entries:
            ledger.record("ours")

    cached.run("taken", open_once, metadata=META, create=True, new=True)
    assert seen == [[], ["theirs"]]
    assert other.repository.load("taken").entries == ["theirs"]


class LaggingStore(SQLiteEventStore):
    """A store whose plain reads miss what another region appended (as a local read on a cluster of
    several regions may, until the write's commit reaches this one), and whose reads after
    :meth:`read_latest` see it (as a serial read does)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.visible: dict[str, int] = {}  # stream -> the last position a plain read sees
        self.latest: set[str] = set()
        self.reads: list[str] = []

    def read_latest(self, stream_id: str) -> bool:
        self.latest.add(stream_id)
        return True

    def _limit(self, stream_id: str, kind: str) -> int | None:
        if stream_id in self.latest:
            self.latest.discard(stream_id)
            self.reads.append(f"{kind}, latest")
            return None
        self.reads.append(kind)
        return self.visible.get(stream_id)

    def read(
        self, stream_id: str, *, gt: int = 0, lte: int | None = None, limit: int | None = None, desc: bool = False
    ) -> list[StoredEvent]:
        seen = self._limit(stream_id, "read")
        if seen is not None:
            lte = seen if lte is None else min(lte, seen)
        return super().read(stream_id, gt=gt, lte=lte, limit=limit, desc=desc)

    def version(self, stream_id: str) -> int:
        seen = self._limit(stream_id, "version")
        found = super().version(stream_id)
        return found if seen is None else min(found, seen)


def lagging(tmp_path: Path, *, cache_size: int) -> tuple[CommandRunner[Ledger], LaggingStore, CommandRunner[Ledger]]:
    """A runner in a far region over a lagging store, and a runner in another region on the same file."""
    codec = EventCodec([EntryRecorded])
    store = LaggingStore(tmp_path / "regions.db")
    other = CommandRunner(Repository(Ledger, SQLiteEventStore(tmp_path / "regions.db"), codec))
    return CommandRunner(Repository(Ledger, store, codec), cache_size=cache_size), store, other


def needs_b(ledger: Ledger) -> int:
    if "b" not in ledger.entries:
        raise Refused("no b yet")
    return len(ledger.entries)


@pytest.mark.parametrize("cache_size", [0, 10])
def test_a_refusal_decided_on_a_read_that_missed_another_regions_append_is_decided_again(
    tmp_path: Path, cache_size: int
) -> None:
    far, store, near = lagging(tmp_path, cache_size=cache_size)
    far.run("l1", lambda ledger: ledger.record("a"), metadata=META, create=True)
    store.visible["l1"] = 1
    near.run("l1", lambda ledger: ledger.record("b"), metadata=META)  # acknowledged in the other region

    assert far.run("l1", needs_b, metadata=META) == 2  # not refused on a read that missed it
    assert "version, latest" in store.reads


def test_a_refusal_on_an_account_another_region_just_made_is_decided_again(tmp_path: Path) -> None:
    far, store, near = lagging(tmp_path, cache_size=10)
    store.visible["l1"] = 0
    near.run("l1", lambda ledger: ledger.record("b"), metadata=META, create=True)

    assert far.run("l1", needs_b, metadata=META, create=True) == 1


def test_a_refusal_that_a_latest_read_confirms_stands_after_one_more_read(tmp_path: Path) -> None:
    far, store, _ = lagging(tmp_path, cache_size=0)
    far.run("l1", lambda ledger: ledger.record("a"), metadata=META, create=True)
    store.reads.clear()

    with pytest.raises(Refused):
        far.run("l1", needs_b, metadata=META)
    assert store.reads == ["read", "version, latest"]  # the load, then the head as every region left it


class ContendedStore(SQLiteEventStore):
    """A store on which every append loses to another writer, after a while, and whose commands have a budget."""

    command_budget = 0.3

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.appends = 0

    def append(self, stream_id: str, events: Sequence[NewEvent], *, expected_version: int) -> int:
        self.appends += 1
        time.sleep(0.1)
        raise ConcurrencyError(stream_id, expected_version, expected_version + 1)


def test_a_command_retries_its_conflicts_only_while_its_stores_budget_lasts(tmp_path: Path) -> None:
    store = ContendedStore(tmp_path / "contended.db")
    runner = CommandRunner(Repository(Ledger, store, EventCodec([EntryRecorded])))
    with pytest.raises(ConcurrencyError):
        runner.run("l1", lambda ledger: ledger.record("a"), metadata=META, create=True, max_attempts=10)
    assert 2 <= store.appends <= 4  # 0.3 s of 0.1 s attempts, not the ten attempts allowed


def test_a_stores_request_gets_what_is_left_of_its_commands_budget_but_never_less_than_the_floor() -> None:
    from eskit.budget import command_budget
    from eskit.stores.cassandra.session import FLOOR, Deadline

    assert Deadline.for_command(3.0).seconds == 3.0  # outside a command: the store's own bound
    with command_budget(2.0):
        assert 1.5 < Deadline.for_command(3.0).seconds <= 2.0
        assert Deadline.for_command(0.5).seconds == 0.5
    with command_budget(0.01):
        time.sleep(0.02)
        assert Deadline.for_command(3.0).seconds == FLOOR


class CutOffStore(LaggingStore):
    """A lagging store that cannot reach the other regions: its latest reads fail."""

    def version(self, stream_id: str) -> int:
        if stream_id in self.latest:
            self.latest.discard(stream_id)
            raise StoreUnavailable("no quorum of the other regions' replicas")
        return super().version(stream_id)


def test_a_refusal_that_cannot_be_checked_against_every_region_stands(tmp_path: Path) -> None:
    codec = EventCodec([EntryRecorded])
    store = CutOffStore(tmp_path / "cut.db")
    far = CommandRunner(Repository(Ledger, store, codec))
    far.run("l1", lambda ledger: ledger.record("a"), metadata=META, create=True)
    with pytest.raises(Refused):  # the refusal, not the failed check
        far.run("l1", needs_b, metadata=META)


class BudgetedStore(SQLiteEventStore):
    command_budget = 0.2


def test_a_command_whose_turn_does_not_come_within_its_budget_is_answered_as_contended(tmp_path: Path) -> None:
    runner = CommandRunner(Repository(Ledger, BudgetedStore(tmp_path / "turns.db"), EventCodec([EntryRecorded])))
    runner.run("l1", lambda ledger: ledger.record("a"), metadata=META, create=True)
    inside, release = threading.Event(), threading.Event()

    def hold(ledger: Ledger) -> None:
        inside.set()
        release.wait(10)
        ledger.record("b")

    first = threading.Thread(target=lambda: runner.run("l1", hold, metadata=META))
    first.start()
    try:
        assert inside.wait(10)
        ran: list[str] = []
        with pytest.raises(ConcurrencyError):
            runner.run("l1", lambda ledger: ran.append("ran"), metadata=META)
        assert ran == []
    finally:
        release.set()
        first.join(10)
    assert runner.repository.load("l1").entries == ["a", "b"]
