"""Aggregate load time against history length, with and without snapshots (SQLite store)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

from bench.harness import goal_at_most, median, progress, scratch_dir
from eskit import Aggregate, DomainEvent, EventCodec, EventMetadata, Repository, SnapshotPolicy
from eskit.stores.sqlite import SQLiteConnection, SQLiteEventStore, SQLiteSnapshotStore

NAME = "load"
TITLE = "Aggregate load time: history length, with and without snapshots"

TARGET = 1.5
SNAPSHOT_EVERY = 100
BATCH = SNAPSHOT_EVERY  # one save per snapshot interval, so a snapshot lands at every multiple
WITH = "with snapshots"
WORST = f"with snapshots, {SNAPSHOT_EVERY - 1} events after the snapshot"
WITHOUT = "without snapshots"


@dataclass(frozen=True)
class Incremented(DomainEvent):
    type_name: ClassVar[str] = "bench.Incremented"
    amount: int
    note: str


class Counter(Aggregate):
    """A counter: the smallest aggregate with state worth snapshotting."""

    snapshot_type: ClassVar[str] = "bench.Counter"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.total = 0

    def increment(self, amount: int) -> None:
        self.trigger(Incremented(amount=amount, note="x" * 80))

    def apply(self, event: DomainEvent) -> None:
        if isinstance(event, Incremented):
            self.total += event.amount

    def to_snapshot(self) -> Mapping[str, Any]:
        return {"total": self.total}

    @classmethod
    def from_snapshot(cls, aggregate_id: str, version: int, state: Mapping[str, Any]) -> Self:
        counter = cls(aggregate_id)
        counter.version = version
        counter.total = int(state["total"])
        return counter


def _build(repo: Repository[Counter], stream: str, length: int) -> None:
    """Write ``length`` events in saves of up to ``BATCH`` events (the policy snapshots as it goes)."""
    counter = Counter(stream)
    metadata = EventMetadata(recorded_at=datetime.now(UTC), command="increment")
    while counter.version < length:
        for _ in range(min(BATCH, length - counter.version)):
            counter.increment(1)
        repo.save(counter, metadata)


def _time_load(repo: Repository[Counter], stream: str, version: int, *, latest: bool) -> float:
    """Seconds per load (of the latest version, or of ``version``), over enough loads to last about 50 ms."""
    loads, spent = 0, 0.0
    while spent < 0.05:
        t0 = time.perf_counter()
        counter = repo.load(stream) if latest else repo.load(stream, version=version)
        spent += time.perf_counter() - t0
        loads += 1
        if counter.version != version or counter.total != version:
            raise RuntimeError(f"{stream} loaded at v{counter.version} total {counter.total}, expected {version}")
    return spent / loads


def run(quick: bool) -> dict[str, Any]:
    lengths = (10, 1_000, 10_000) if quick else (10, 1_000, 100_000)
    rounds = 3 if quick else 7
    codec = EventCodec([Incremented])
    with scratch_dir() as workdir:
        db = SQLiteConnection(workdir / "load.db")
        events, snapshots = SQLiteEventStore(db), SQLiteSnapshotStore(db)
        with_snapshots = Repository(
            Counter, events, codec, snapshots=snapshots, snapshot_policy=SnapshotPolicy(every=SNAPSHOT_EVERY)
        )
        without = Repository(Counter, events, codec)
        repos = {WITH: with_snapshots, WORST: with_snapshots, WITHOUT: without}
        for length in lengths:
            progress(f"building a stream of {length:,} events")
            _build(with_snapshots, f"counter-{length}", length)
        cases = [(label, length) for length in lengths for label in repos if label != WORST or length > SNAPSHOT_EVERY]
        samples: dict[tuple[str, int], list[float]] = {case: [] for case in cases}
        for r in range(rounds):
            # Rotate the order each round so no case always runs first (or right after the biggest).
            for label, length in cases[r % len(cases) :] + cases[: r % len(cases)]:
                version = length - 1 if label == WORST else length
                sample = _time_load(repos[label], f"counter-{length}", version, latest=label != WORST)
                samples[label, length].append(sample)
            progress(f"round {r + 1}/{rounds} done")
        snapshot_at: dict[tuple[str, int], int] = {}
        for label, length in cases:
            found = snapshots.load(f"counter-{length}", lte=length - 1 if label == WORST else None)
            snapshot_at[label, length] = found.version if found is not None and label != WITHOUT else 0
        db.close()
    ms = {case: median(values) * 1000 for case, values in samples.items()}
    base = ms[WITH, lengths[0]]
    rows = [
        {
            "events in stream": length,
            "case": label,
            "loaded version": length - 1 if label == WORST else length,
            "snapshot used": snapshot_at[label, length] or "-",
            "events replayed": (length - 1 if label == WORST else length) - snapshot_at[label, length],
            "median load ms": ms[label, length],
            "min ms": min(samples[label, length]) * 1000,
            f"x {lengths[0]}-event load": ms[label, length] / base,
        }
        for label, length in cases
    ]
    biggest = ms[WITH, lengths[-1]] / base
    goals = [
        goal_at_most(
            f"with snapshots, a {lengths[-1]:,}-event load within {TARGET}x of a {lengths[0]}-event load",
            biggest,
            TARGET,
        )
    ]
    method = (
        f"One SQLite file (eskit PRAGMAS) holds one stream per length ({', '.join(f'{n:,}' for n in lengths)} "
        f"events) of a counter aggregate, written by `Repository.save` in saves of {BATCH} events with "
        f"`SnapshotPolicy(every={SNAPSHOT_EVERY})` and a `SQLiteSnapshotStore` in the same file, so a snapshot "
        f"is taken at every multiple of {SNAPSHOT_EVERY}. Each event carries an int and an 80-character string. "
        f"'with snapshots' loads the latest version through that repository (newest snapshot, then the events "
        f"after it); '{SNAPSHOT_EVERY - 1} events after the snapshot' loads version length - 1 through it "
        f"(time travel: the snapshot below, then {SNAPSHOT_EVERY - 1} events), the most a stream can be past "
        f"its last snapshot under this policy; 'without snapshots' loads through a repository with no snapshot "
        f"store (every event replayed). The goal compares latest-version loads with snapshots. A sample is the "
        f"mean of as many consecutive `Repository.load` calls as fill 50 ms (page cache warm); {rounds} rounds "
        f"rotate the order of the cases; the table gives the median and the minimum sample, and each median "
        f"relative to the {lengths[0]}-event load with snapshots."
    )
    return {"title": TITLE, "method": method, "rows": rows, "goals": goals}
