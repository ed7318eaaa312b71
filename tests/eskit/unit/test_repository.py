"""Loading aggregates: snapshots taken by policy, snapshots that cannot be trusted, time travel.

Every test runs against the in-memory store and against SQLite. The event stores
are real subclasses that remember the ``(gt, lte)`` bounds of each read, which
shows where a load started reading events.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self

import orjson
import pytest

from eskit import (
    Aggregate,
    AggregateNotFound,
    CommandRunner,
    DomainEvent,
    EventCodec,
    EventMetadata,
    Repository,
    Snapshot,
    SnapshotPolicy,
    SnapshotStore,
    StoredEvent,
    Upcasters,
)
from eskit.stores.memory import InMemoryEventStore, InMemorySnapshotStore
from eskit.stores.sqlite import SQLiteConnection, SQLiteEventStore, SQLiteSnapshotStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Added(DomainEvent):
    type_name = "test.Added"

    amount: int


class Counter(Aggregate):
    """A running total; its snapshot schema is at v2 (v1 called the total ``value``)."""

    snapshot_type = "test.Counter"
    snapshot_version = 2

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.total = 0
        self.additions = 0

    def add(self, amount: int) -> None:
        self.trigger(Added(amount))

    def apply(self, event: DomainEvent) -> None:
        if isinstance(event, Added):
            self.total += event.amount
            self.additions += 1

    def to_snapshot(self) -> Mapping[str, Any]:
        return {"total": self.total, "additions": self.additions}

    @classmethod
    def from_snapshot(cls, aggregate_id: str, version: int, state: Mapping[str, Any]) -> Self:
        counter = cls(aggregate_id)
        counter.version = version
        counter.total = state["total"]
        counter.additions = state["additions"]
        return counter


class CounterThatCannotSnapshot(Counter):
    def to_snapshot(self) -> Mapping[str, Any]:
        raise RuntimeError("state too big")


class ReadBounds:
    """Mixed into a real event store: remembers the bounds of every ``read``."""

    reads: list[tuple[int, int | None]]

    def read(
        self, stream_id: str, *, gt: int = 0, lte: int | None = None, limit: int | None = None, desc: bool = False
    ) -> list[StoredEvent]:
        self.reads.append((gt, lte))
        return super().read(stream_id, gt=gt, lte=lte, limit=limit, desc=desc)  # type: ignore[misc]


class RecordingInMemoryEventStore(ReadBounds, InMemoryEventStore):
    def __init__(self) -> None:
        super().__init__()
        self.reads = []


class RecordingSQLiteEventStore(ReadBounds, SQLiteEventStore):
    def __init__(self, db: SQLiteConnection) -> None:
        super().__init__(db)
        self.reads = []


Recording = RecordingInMemoryEventStore | RecordingSQLiteEventStore


@dataclass
class Backend:
    events: Recording
    snapshots: SnapshotStore

    def repository(
        self,
        *,
        every: int = 0,
        keep_every: int = 1000,
        snapshot_upcasters: Upcasters | None = None,
        aggregate: type[Counter] = Counter,
    ) -> Repository[Counter]:
        return Repository(
            aggregate,
            self.events,
            EventCodec([Added]),
            snapshots=self.snapshots,
            snapshot_policy=SnapshotPolicy(every=every, keep_every=keep_every),
            snapshot_upcasters=snapshot_upcasters,
            stream_prefix="counter-",
        )

    def events_read_after(self) -> int:
        """Where the latest load started reading events (the version it took from a snapshot)."""
        return self.events.reads[-1][0]


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "memory":
        yield Backend(RecordingInMemoryEventStore(), InMemorySnapshotStore())
        return
    db = SQLiteConnection(tmp_path / "events.db")
    try:
        yield Backend(RecordingSQLiteEventStore(db), SQLiteSnapshotStore(db))
    finally:
        db.close()


def at(second: float) -> EventMetadata:
    return EventMetadata(recorded_at=T0 + timedelta(seconds=second))


def add_one_by_one(repo: Repository[Counter], amounts: Iterable[int], *, first_second: int = 1) -> None:
    """Save one ``Added`` per amount, each in its own command, the n-th recorded at T0 + n seconds."""
    for second, amount in enumerate(amounts, start=first_second):
        CommandRunner(repo).run("c", lambda counter, a=amount: counter.add(a), metadata=at(second), create=True)


def save_snapshot(backend: Backend, version: int, state: bytes, *, schema: int = 2, kind: str = "test.Counter") -> None:
    backend.snapshots.save(Snapshot("counter-c", version, kind, schema, state, T0))


def snapshot_state(backend: Backend, *, lte: int | None = None) -> tuple[int, dict[str, Any]] | None:
    snapshot = backend.snapshots.load("counter-c", lte=lte)
    return None if snapshot is None else (snapshot.version, orjson.loads(snapshot.state))


# -- taking snapshots -----------------------------------------------------------


def test_a_snapshot_is_taken_whenever_a_save_reaches_a_multiple_of_the_policy_interval(backend: Backend) -> None:
    add_one_by_one(backend.repository(every=3), [1, 2, 3, 4, 5, 6, 7])

    assert snapshot_state(backend, lte=2) is None
    assert snapshot_state(backend, lte=5) == (3, {"total": 6, "additions": 3})
    assert snapshot_state(backend) == (6, {"total": 21, "additions": 6})


def test_a_save_of_several_events_that_crosses_a_multiple_snapshots_at_its_new_version(backend: Backend) -> None:
    repo = backend.repository(every=3)
    add_one_by_one(repo, [1, 1])

    counter = repo.load("c")
    for amount in (10, 10, 10):
        counter.add(amount)
    assert repo.save(counter, at(3)) == 5

    assert snapshot_state(backend) == (5, {"total": 32, "additions": 5})


def test_a_policy_interval_of_zero_takes_no_snapshots(backend: Backend) -> None:
    add_one_by_one(backend.repository(every=0), range(1, 11))

    assert snapshot_state(backend) is None


def test_a_snapshot_that_fails_to_be_taken_does_not_fail_the_save(backend: Backend) -> None:
    repo = backend.repository(every=1, aggregate=CounterThatCannotSnapshot)

    add_one_by_one(repo, [5, 6])

    assert snapshot_state(backend) is None
    assert repo.load("c").total == 11


class SlowSnapshotStore(InMemorySnapshotStore):
    """A store whose writes take a network round trip: they wait until the test lets them through."""

    deferred_writes = True

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def save(self, snapshot: Snapshot) -> None:
        assert self.gate.wait(10), "the test never let the snapshot through"
        super().save(snapshot)


def test_a_store_with_deferred_writes_gets_its_snapshot_after_the_save_returned() -> None:
    snapshots = SlowSnapshotStore()
    repo = Repository(
        Counter, InMemoryEventStore(), EventCodec([Added]), snapshots=snapshots, snapshot_policy=SnapshotPolicy(every=2)
    )
    counter = Counter("c")
    counter.add(1)
    counter.add(2)

    assert repo.save(counter, at(1)) == 2  # returned while the snapshot's write still waits
    counter.add(3)  # the aggregate goes on changing: the snapshot holds the state it was taken at
    assert snapshots.load("c") is None

    snapshots.gate.set()
    repo.flush_snapshots(timeout=10)
    stored = snapshots.load("c")
    assert stored is not None and (stored.version, orjson.loads(stored.state)) == (2, {"total": 3, "additions": 2})


def test_a_stream_keeps_its_newest_two_snapshots_and_the_first_of_each_span(backend: Backend) -> None:
    # Snapshots used to be kept forever: one per 10 events here, a hundred of them.
    repo = backend.repository(every=10, keep_every=100)
    add_one_by_one(repo, [1] * 1000)

    assert backend.snapshots.versions("counter-c") == [10, 100, 200, 300, 400, 500, 600, 700, 800, 900, 990, 1000]
    assert snapshot_state(backend) == (1000, {"total": 1000, "additions": 1000})


def test_after_pruning_time_travel_still_starts_from_a_snapshot_near_the_point(backend: Backend) -> None:
    repo = backend.repository(every=10, keep_every=100)
    add_one_by_one(repo, [1] * 600)
    for version in (9, 55, 150, 199, 201, 399, 455, 589, 600):
        counter = repo.load("c", version=version)
        started = backend.events_read_after()
        assert (counter.version, counter.total) == (version, version)
        assert version - started <= 100 + 10, (version, started)


def test_keeping_no_spans_leaves_only_the_newest_snapshots(backend: Backend) -> None:
    repo = backend.repository(every=5, keep_every=0)
    add_one_by_one(repo, [2] * 40)

    assert backend.snapshots.versions("counter-c") == [35, 40]


class Ledger(Counter):
    """A counter that keeps every amount: its state grows with its history, as an account's does."""

    snapshot_type = "test.Ledger"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.amounts: list[int] = []

    def apply(self, event: DomainEvent) -> None:
        super().apply(event)
        if isinstance(event, Added):
            self.amounts.append(event.amount)

    def to_snapshot(self) -> Mapping[str, Any]:
        return {**super().to_snapshot(), "amounts": self.amounts}

    @classmethod
    def from_snapshot(cls, aggregate_id: str, version: int, state: Mapping[str, Any]) -> Self:
        ledger = super().from_snapshot(aggregate_id, version, state)
        ledger.amounts = list(state["amounts"])
        return ledger


class SizedInMemorySnapshots(InMemorySnapshotStore):
    """A real snapshot store that also notes the size of every state it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def save(self, snapshot: Snapshot) -> None:
        self.sizes.append(len(snapshot.state))
        super().save(snapshot)


class SizedSQLiteSnapshots(SQLiteSnapshotStore):
    def __init__(self, db: SQLiteConnection) -> None:
        super().__init__(db)
        self.sizes: list[int] = []

    def save(self, snapshot: Snapshot) -> None:
        self.sizes.append(len(snapshot.state))
        super().save(snapshot)


@pytest.mark.parametrize("cache_size", [0, 10])
@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_snapshots_of_a_growing_state_cost_a_bounded_number_of_bytes_per_event(
    kind: str, cache_size: int, tmp_path: Path
) -> None:
    budget, events = 64, 3000
    db = SQLiteConnection(tmp_path / "events.db")
    store = SizedInMemorySnapshots() if kind == "memory" else SizedSQLiteSnapshots(db)
    repo = Repository(
        Ledger,
        InMemoryEventStore() if kind == "memory" else SQLiteEventStore(db),
        EventCodec([Added]),
        snapshots=store,
        snapshot_policy=SnapshotPolicy(every=10, max_bytes_per_event=budget),
    )
    runner = CommandRunner(repo, cache_size=cache_size)
    try:
        for n in range(1, events + 1):
            runner.run("c", lambda ledger, a=n: ledger.add(a), metadata=at(n), create=True)

        loaded = repo.load("c")
        stored_state = store.load("c")
    finally:
        db.close()

    # Each snapshot holds every amount so far (its size grows with the history): taken every 10 events,
    # they would add up to about 2 MB. Spaced by their size, they cost at most about 2 x the budget per event.
    assert sum(store.sizes) <= 2 * budget * events + store.sizes[0] * 10, (len(store.sizes), sum(store.sizes))
    assert store.sizes[:3] == sorted(store.sizes[:3]) and len(store.sizes) >= 10
    assert stored_state is not None and orjson.loads(stored_state.state)["amounts"] == list(
        range(1, stored_state.version + 1)
    )
    assert (loaded.version, loaded.amounts) == (events, list(range(1, events + 1)))


def test_a_small_state_is_still_snapshotted_at_every_multiple_of_the_interval(backend: Backend) -> None:
    repo = Repository(
        Counter,
        backend.events,
        EventCodec([Added]),
        snapshots=backend.snapshots,
        snapshot_policy=SnapshotPolicy(every=3, keep_latest=10, max_bytes_per_event=16),
        stream_prefix="counter-",
    )
    add_one_by_one(repo, range(1, 13))

    assert [v for v in range(1, 13) if (found := snapshot_state(backend, lte=v)) and found[0] == v] == [3, 6, 9, 12]


# -- loading from snapshots -----------------------------------------------------


def test_loading_starts_from_the_latest_snapshot_and_reads_only_the_events_after_it(backend: Backend) -> None:
    repo = backend.repository(every=3)
    add_one_by_one(repo, [1, 2, 3, 4, 5, 6, 7])
    backend.events.reads.clear()

    counter = repo.load("c")

    assert backend.events.reads == [(6, None)]
    assert (counter.version, counter.total, counter.additions) == (7, 28, 7)


def test_a_snapshot_of_an_older_schema_is_upcast_when_an_upcaster_is_registered(backend: Backend) -> None:
    def v1_to_v2(state: dict[str, Any]) -> dict[str, Any]:
        return {"total": state["value"], "additions": state["additions"]}

    upcasters = Upcasters()
    upcasters.register("test.Counter", 1, v1_to_v2)
    repo = backend.repository(snapshot_upcasters=upcasters)
    add_one_by_one(repo, [1, 2, 3, 4, 5])
    save_snapshot(backend, 4, b'{"value": 10, "additions": 4}', schema=1)

    counter = repo.load("c")

    assert backend.events_read_after() == 4
    assert (counter.version, counter.total, counter.additions) == (5, 15, 5)


def test_a_snapshot_of_an_older_schema_without_an_upcaster_is_ignored_and_the_state_rebuilt(
    backend: Backend,
) -> None:
    repo = backend.repository()
    add_one_by_one(repo, [1, 2, 3, 4, 5])
    # Deliberately wrong, so using it would show in the state.
    save_snapshot(backend, 4, b'{"value": 999, "additions": 1}', schema=1)

    counter = repo.load("c")

    assert backend.events_read_after() == 0
    assert (counter.version, counter.total, counter.additions) == (5, 15, 5)


def test_a_snapshot_whose_upcaster_throws_is_ignored_and_the_state_rebuilt(backend: Backend) -> None:
    def broken(state: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("cannot read v1")

    upcasters = Upcasters()
    upcasters.register("test.Counter", 1, broken)
    repo = backend.repository(snapshot_upcasters=upcasters)
    add_one_by_one(repo, [1, 2, 3])
    save_snapshot(backend, 2, b'{"value": 999, "additions": 1}', schema=1)

    counter = repo.load("c")

    assert backend.events_read_after() == 0
    assert (counter.version, counter.total) == (3, 6)


def test_a_snapshot_written_by_newer_code_is_ignored_and_the_state_rebuilt(backend: Backend) -> None:
    repo = backend.repository()
    add_one_by_one(repo, [1, 2, 3])
    save_snapshot(backend, 2, b'{"total": 999, "additions": 1}', schema=3)

    counter = repo.load("c")

    assert backend.events_read_after() == 0
    assert (counter.version, counter.total) == (3, 6)


@pytest.mark.parametrize(
    "garbage",
    [b"\x00\xff\xfe not json at all", b"[1, 2, 3]", b'{"unexpected": true}', b""],
    ids=["binary", "not-an-object", "wrong-shape", "empty"],
)
def test_a_corrupt_snapshot_is_ignored_and_the_state_rebuilt(backend: Backend, garbage: bytes) -> None:
    repo = backend.repository()
    add_one_by_one(repo, [1, 2, 3])
    save_snapshot(backend, 2, garbage)

    counter = repo.load("c")

    assert backend.events_read_after() == 0
    assert (counter.version, counter.total, counter.additions) == (3, 6, 3)


def test_a_snapshot_of_another_snapshot_type_is_ignored(backend: Backend) -> None:
    repo = backend.repository()
    add_one_by_one(repo, [1, 2, 3])
    save_snapshot(backend, 2, b'{"total": 999, "additions": 1}', kind="test.SomethingElse")

    counter = repo.load("c")

    assert backend.events_read_after() == 0
    assert (counter.version, counter.total) == (3, 6)


# -- time travel ----------------------------------------------------------------

# Powers of ten, so every prefix of the stream has its own total.
AMOUNTS = [1, 10, 100, 1000, 10000]


def test_loading_at_a_version_gives_the_state_after_that_many_events(backend: Backend) -> None:
    repo = backend.repository()
    add_one_by_one(repo, AMOUNTS)

    for version in range(1, 6):
        counter = repo.load("c", version=version)
        assert (counter.version, counter.total) == (version, sum(AMOUNTS[:version]))


def test_loading_as_of_a_time_gives_the_state_recorded_by_then(backend: Backend) -> None:
    repo = backend.repository()
    add_one_by_one(repo, AMOUNTS)  # recorded at T0 + 1s ... T0 + 5s

    assert repo.load("c", as_of=T0 + timedelta(seconds=1)).total == 1
    assert repo.load("c", as_of=T0 + timedelta(seconds=3, milliseconds=500)).total == 111
    assert repo.load("c", as_of=T0 + timedelta(seconds=4)).total == 1111
    assert repo.load("c", as_of=T0 + timedelta(days=1)).total == 11111


def test_loading_with_both_a_version_and_a_time_gives_the_earlier_state(backend: Backend) -> None:
    repo = backend.repository()
    add_one_by_one(repo, AMOUNTS)

    assert repo.load("c", version=2, as_of=T0 + timedelta(seconds=4)).total == 11
    assert repo.load("c", version=4, as_of=T0 + timedelta(seconds=2)).total == 11


def test_loading_before_the_first_event_raises_aggregate_not_found(backend: Backend) -> None:
    repo = backend.repository()
    add_one_by_one(repo, AMOUNTS)

    with pytest.raises(AggregateNotFound):
        repo.load("c", as_of=T0 + timedelta(milliseconds=999))
    with pytest.raises(AggregateNotFound):
        repo.load("c", version=0)
    with pytest.raises(AggregateNotFound):
        repo.load("never-written")


def test_time_travel_uses_a_snapshot_before_the_point_and_never_one_after_it(backend: Backend) -> None:
    repo = backend.repository(every=2)
    add_one_by_one(repo, AMOUNTS)
    assert snapshot_state(backend) == (4, {"total": 1111, "additions": 4})

    counter = repo.load("c", version=3)
    assert backend.events.reads[-1] == (2, 3)
    assert (counter.version, counter.total) == (3, 111)

    counter = repo.load("c", as_of=T0 + timedelta(seconds=3, milliseconds=500))
    assert backend.events.reads[-1] == (2, 3)
    assert (counter.version, counter.total) == (3, 111)

    counter = repo.load("c", version=1)
    assert backend.events.reads[-1] == (0, 1)
    assert (counter.version, counter.total) == (1, 1)

    counter = repo.load("c", version=4)
    assert backend.events.reads[-1] == (4, 4)
    assert (counter.version, counter.total) == (4, 1111)


def test_history_returns_decoded_events_with_their_positions_and_metadata(backend: Backend) -> None:
    repo = backend.repository()
    add_one_by_one(repo, AMOUNTS)

    history = repo.history("c", gt=1, lte=3)

    assert [(r.position, r.event, r.metadata.recorded_at) for r in history] == [
        (2, Added(10), T0 + timedelta(seconds=2)),
        (3, Added(100), T0 + timedelta(seconds=3)),
    ]
