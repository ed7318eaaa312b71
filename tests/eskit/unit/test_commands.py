"""CommandRunner.run: load, run the command, save; on a conflict, reload and run it again.

A concurrent writer is simulated by a command that, on some calls, appends an
event through a second repository (over its own store handle) between this
repository's load and save. Every test runs on the in-memory store and on SQLite.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from eskit import (
    Aggregate,
    AggregateNotFound,
    CommandRunner,
    ConcurrencyError,
    DomainEvent,
    EventCodec,
    EventMetadata,
    EventStore,
    Repository,
)
from eskit.stores.memory import InMemoryEventStore
from eskit.stores.sqlite import SQLiteEventStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
META = EventMetadata(recorded_at=T0, request_id="req-1")


@dataclass(frozen=True)
class EntryRecorded(DomainEvent):
    type_name = "test.EntryRecorded"

    text: str


class Ledger(Aggregate):
    """An append-only list of entries."""

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.entries: list[str] = []

    def record(self, text: str) -> None:
        if not text:
            raise ValueError("an entry needs text")
        self.trigger(EntryRecorded(text))

    def apply(self, event: DomainEvent) -> None:
        if isinstance(event, EntryRecorded):
            self.entries.append(event.text)


class Refused(Exception):
    pass


OpenRepository = Callable[[], CommandRunner[Ledger]]


@pytest.fixture(params=["memory", "sqlite"])
def open_repository(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenRepository]:
    """A factory of repositories that each hold their own handle on one shared store."""
    shared = InMemoryEventStore()
    opened: list[EventStore] = []

    def open_one() -> CommandRunner[Ledger]:
        store = shared if request.param == "memory" else SQLiteEventStore(tmp_path / "events.db")
        opened.append(store)
        return CommandRunner(Repository(Ledger, store, EventCodec([EntryRecorded])))

    yield open_one
    for store in opened:
        store.close()


def record(text: str) -> Callable[[Ledger], None]:
    return lambda ledger: ledger.record(text)


def opened_ledger(open_repository: OpenRepository) -> CommandRunner[Ledger]:
    """A repository whose ledger ``l`` already holds the entry ``opened``."""
    repo = open_repository()
    repo.run("l", record("opened"), metadata=META, create=True)
    return repo


def test_a_command_that_lost_a_race_is_rerun_on_fresh_state_and_both_writes_are_kept(
    open_repository: OpenRepository,
) -> None:
    ours = opened_ledger(open_repository)
    theirs = open_repository()
    seen: list[list[str]] = []
    conflicts: list[int] = []

    def command(ledger: Ledger) -> int:
        seen.append(list(ledger.entries))
        if len(seen) == 1:
            theirs.run("l", record("theirs"), metadata=META)
        ledger.record("ours")
        return len(ledger.entries)

    result = ours.run("l", command, metadata=META, on_conflict=conflicts.append)

    assert seen == [["opened"], ["opened", "theirs"]]
    assert conflicts == [1]
    assert result == 3
    assert open_repository().repository.load("l").entries == ["opened", "theirs", "ours"]


def test_after_max_attempts_conflicts_the_conflict_propagates_and_nothing_of_ours_is_written(
    open_repository: OpenRepository,
) -> None:
    ours = opened_ledger(open_repository)
    theirs = open_repository()
    conflicts: list[int] = []
    calls = 0

    def command(ledger: Ledger) -> None:
        nonlocal calls
        calls += 1
        theirs.run("l", record(f"theirs-{calls}"), metadata=META)
        ledger.record("ours")

    with pytest.raises(ConcurrencyError):
        ours.run("l", command, metadata=META, max_attempts=3, on_conflict=conflicts.append)

    assert calls == 3
    assert conflicts == [1, 2, 3]
    ledger = open_repository().repository.load("l")
    assert ledger.entries == ["opened", "theirs-1", "theirs-2", "theirs-3"]
    assert ledger.version == 4


def test_an_exception_raised_by_the_command_propagates_and_nothing_is_saved(
    open_repository: OpenRepository,
) -> None:
    repo = opened_ledger(open_repository)

    def command(ledger: Ledger) -> None:
        ledger.record("half done")
        raise Refused("changed my mind")

    with pytest.raises(Refused):
        repo.run("l", command, metadata=META)
    with pytest.raises(ValueError, match="needs text"):
        repo.run("l", record(""), metadata=META)

    assert [r.event for r in repo.repository.history("l")] == [EntryRecorded("opened")]


def test_create_starts_a_new_aggregate_when_the_stream_is_empty(open_repository: OpenRepository) -> None:
    repo = open_repository()

    repo.run("l", record("first"), metadata=META, create=True)
    repo.run("l", record("second"), metadata=META, create=True)

    ledger = repo.repository.load("l")
    assert (ledger.entries, ledger.version) == (["first", "second"], 2)


def test_without_create_a_missing_aggregate_raises_not_found_and_nothing_is_written(
    open_repository: OpenRepository,
) -> None:
    repo = open_repository()

    with pytest.raises(AggregateNotFound) as caught:
        repo.run("l", record("first"), metadata=META)

    assert caught.value.stream_id == "l"
    assert repo.repository.history("l") == []


def test_a_metadata_function_receives_the_aggregate_and_the_result_and_is_saved(
    open_repository: OpenRepository,
) -> None:
    repo = opened_ledger(open_repository)
    received: list[tuple[list[str], str]] = []

    def metadata(ledger: Ledger, result: str) -> EventMetadata:
        received.append((list(ledger.entries), result))
        return EventMetadata(recorded_at=T0, request_id="req-2", extra={"answer": result})

    def command(ledger: Ledger) -> str:
        ledger.record("paid")
        return "receipt-7"

    assert repo.run("l", command, metadata=metadata) == "receipt-7"

    assert received == [(["opened", "paid"], "receipt-7")]
    last = repo.repository.history("l")[-1]
    assert last.metadata.request_id == "req-2"
    assert last.metadata.extra == {"answer": "receipt-7"}


def test_a_command_that_records_nothing_saves_nothing_and_still_returns_its_result(
    open_repository: OpenRepository,
) -> None:
    repo = opened_ledger(open_repository)

    def metadata(ledger: Ledger, result: int) -> EventMetadata:
        raise AssertionError("no events, so no metadata is needed")

    assert repo.run("l", lambda ledger: len(ledger.entries), metadata=metadata) == 1
    assert repo.repository.load("l").version == 1
