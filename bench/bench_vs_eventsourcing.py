"""The same append and load work done by eskit and by the ``eventsourcing`` library, on SQLite."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar

from bench.harness import goal_at_least, median, progress, scratch_dir
from eskit import Aggregate, DomainEvent, EventCodec, EventMetadata, Repository
from eskit.stores.sqlite import SQLiteEventStore

NAME = "vs_eventsourcing"
TITLE = "eskit against the eventsourcing library (SQLite): append and load"

TARGET = 1.5
NOTE = "x" * 80  # the same payload string in every event on both sides
CONTENDERS = ("eskit", "eventsourcing")


# -- eskit side ----------------------------------------------------------------------


@dataclass(frozen=True)
class Created(DomainEvent):
    type_name: ClassVar[str] = "bench.CounterCreated"
    note: str


@dataclass(frozen=True)
class Incremented(DomainEvent):
    type_name: ClassVar[str] = "bench.CounterIncremented"
    amount: int
    note: str


class Counter(Aggregate):
    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.total = 0

    def create(self, note: str) -> None:
        self.trigger(Created(note=note))

    def increment(self, amount: int, note: str) -> None:
        self.trigger(Incremented(amount=amount, note=note))

    def apply(self, event: DomainEvent) -> None:
        if isinstance(event, Incremented):
            self.total += event.amount


class EskitSide:
    """eskit: explicit aggregate, ``Repository`` without snapshots, ``SQLiteEventStore``."""

    def __init__(self, path: Path) -> None:
        self.store = SQLiteEventStore(path)
        self.repo = Repository(Counter, self.store, EventCodec([Created, Incremented]))
        self.aggregates: list[Counter] = []

    def create(self) -> None:
        counter = Counter(str(uuid.uuid4()))
        counter.create(NOTE)
        self.repo.save(counter, EventMetadata(recorded_at=datetime.now(UTC)))
        self.aggregates.append(counter)

    def command(self, i: int) -> None:
        counter = self.aggregates[i]
        counter.increment(1, NOTE)
        self.repo.save(counter, EventMetadata(recorded_at=datetime.now(UTC)))

    def load(self, i: int) -> int:
        return self.repo.load(self.aggregates[i].id).total

    def pragmas(self) -> tuple[str, int]:
        conn = self.store.db.get()
        return conn.execute("PRAGMA journal_mode").fetchone()[0], conn.execute("PRAGMA synchronous").fetchone()[0]

    def close(self) -> None:
        self.store.close()


def _eventsourcing_side(path: Path) -> Any:
    """Build the eventsourcing side (imported here, so a missing library means a skip, not an import error)."""
    from bench._eventsourcing_side import EventsourcingSide

    return EventsourcingSide(path, NOTE)


# -- the run -------------------------------------------------------------------------


def _stored_bytes(path: Path, contender: str) -> tuple[int, float]:
    """Events stored and mean bytes per event of what each side writes per row (ids and keys included)."""
    if contender == "eskit":
        sql = (
            "SELECT count(*), avg(length(stream_id) + 8 + length(event_id) + length(type_name) + 8"
            " + length(data) + length(metadata) + 8) FROM events"
        )
    else:
        sql = "SELECT count(*), avg(length(originator_id) + 8 + length(topic) + length(state)) FROM stored_events"
    with sqlite3.connect(path) as conn:
        count, size = conn.execute(sql).fetchone()
    return int(count), float(size)


def _paired(sides: dict[str, Any], action: str, arg: int | None, first: int, times: dict[str, list[float]]) -> None:
    """Run one unit of work on each side back to back (who goes first alternates); record seconds."""
    order = CONTENDERS if first % 2 == 0 else CONTENDERS[::-1]
    for name in order:
        fn: Callable[..., Any] = getattr(sides[name], action)
        t0 = time.perf_counter()
        if arg is None:
            fn()
        else:
            fn(arg)
        times[name].append(time.perf_counter() - t0)


def _round(workdir: Path, n: int, m: int, load_passes: int, r: int) -> dict[str, Any]:
    paths = {name: workdir / f"{name}-{r}.db" for name in CONTENDERS}
    sides: dict[str, Any] = {
        "eskit": EskitSide(paths["eskit"]),
        "eventsourcing": _eventsourcing_side(paths["eventsourcing"]),
    }
    append: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    load: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    try:
        pragmas = {name: side.pragmas() for name, side in sides.items()}
        if pragmas["eskit"] != pragmas["eventsourcing"]:
            raise RuntimeError(f"durability differs (journal_mode, synchronous): {pragmas}")
        k = r
        for i in range(n):
            _paired(sides, "create", None, k, append)
            k += 1
            for _ in range(m):
                _paired(sides, "command", i, k, append)
                k += 1
        for p in range(load_passes):
            for i in range(n):
                _paired(sides, "load", i, k, load)
                k += 1
            if p == 0:
                for name, side in sides.items():
                    if side.load(0) != m:
                        raise RuntimeError(f"{name} loaded total {side.load(0)}, expected {m}")
    finally:
        for side in sides.values():
            side.close()
    stored = {name: _stored_bytes(paths[name], name) for name in CONTENDERS}
    for name, (count, _) in stored.items():
        if count != n * (m + 1):
            raise RuntimeError(f"{name} stored {count} events, expected {n * (m + 1)}")
    return {"append": append, "load": load, "stored": stored, "pragmas": pragmas["eskit"]}


def _cpu_profile(workdir: Path, n: int, m: int) -> dict[str, dict[str, float]]:
    """CPU and wall µs per save and per load for each side, run alone (unpaired), to show non-fsync work."""
    out: dict[str, dict[str, float]] = {}
    for name in CONTENDERS:
        path = workdir / f"cpu-{name}.db"
        side: Any = EskitSide(path) if name == "eskit" else _eventsourcing_side(path)
        try:
            w0, c0 = time.perf_counter(), time.process_time()
            for i in range(n):
                side.create()
                for _ in range(m):
                    side.command(i)
            w1, c1 = time.perf_counter(), time.process_time()
            for i in range(n):
                side.load(i)
            c2 = time.process_time()
        finally:
            side.close()
        saves = n * (m + 1)
        out[name] = {
            "append": (c1 - c0) / saves * 1e6,
            "append wall": (w1 - w0) / saves * 1e6,
            "load": (c2 - c1) / n * 1e6,
        }
    return out


def run(quick: bool) -> dict[str, Any]:
    try:
        version = metadata.version("eventsourcing")
    except metadata.PackageNotFoundError:
        return {"skipped": "the eventsourcing library is not installed (pip install -e '.[bench]')"}
    n, m = (20, 5) if quick else (100, 10)
    rounds = 2 if quick else 3
    load_passes = 3 if quick else 5
    append_ratios: list[float] = []
    load_ratios: list[float] = []
    rates: dict[str, dict[str, list[float]]] = {
        phase: {name: [] for name in CONTENDERS} for phase in ("append", "load")
    }
    stored: dict[str, tuple[int, float]] = {}
    pragmas: tuple[str, int] = ("?", -1)
    with scratch_dir() as workdir:
        for r in range(rounds):
            result = _round(workdir, n, m, load_passes, r)
            for phase, ratios in (("append", append_ratios), ("load", load_ratios)):
                times = result[phase]
                ratios += [theirs / ours for ours, theirs in zip(times["eskit"], times["eventsourcing"], strict=True)]
                for name in CONTENDERS:
                    rates[phase][name].append(len(times[name]) / sum(times[name]))
            stored, pragmas = result["stored"], result["pragmas"]
            progress(
                f"round {r + 1}/{rounds}: append x{median(append_ratios):.2f}, load x{median(load_ratios):.2f} so far"
            )
        cpu = _cpu_profile(workdir, n, m)
    append_ratio, load_ratio = median(append_ratios), median(load_ratios)
    rows = [
        {
            "work": "append (one command, one save, one commit)",
            "eskit ops/s": median(rates["append"]["eskit"]),
            "eventsourcing ops/s": median(rates["append"]["eventsourcing"]),
            "eskit x eventsourcing": append_ratio,
            "eskit CPU µs/op": cpu["eskit"]["append"],
            "eventsourcing CPU µs/op": cpu["eventsourcing"]["append"],
        },
        {
            "work": f"load (one aggregate of {m + 1} events)",
            "eskit ops/s": median(rates["load"]["eskit"]),
            "eventsourcing ops/s": median(rates["load"]["eventsourcing"]),
            "eskit x eventsourcing": load_ratio,
            "eskit CPU µs/op": cpu["eskit"]["load"],
            "eventsourcing CPU µs/op": cpu["eventsourcing"]["load"],
        },
    ]
    goals = [
        goal_at_least(f"eskit append throughput ≥ {TARGET}x eventsourcing", append_ratio, TARGET),
        goal_at_least(f"eskit load throughput ≥ {TARGET}x eventsourcing", load_ratio, TARGET),
    ]
    method = (
        f"Both sides, in one process, each on its own fresh SQLite file in one temporary folder, create {n} "
        f"aggregates and run {m} increment commands on each, saving after every create and every command "
        f"(one append, one transaction, one commit: {n * (m + 1):,} commits per side per round), then load every "
        f"aggregate {load_passes} times. The two sides take turns unit by unit (one save, or one load), "
        f"alternating who goes first; {rounds} rounds on fresh files. "
        f"eskit: a `Counter(Aggregate)` with frozen `Created(note)` and `Incremented(amount, note)` events, "
        f"`Repository(Counter, SQLiteEventStore(file), EventCodec(...))` without snapshots; "
        f"`repo.save(counter, EventMetadata(recorded_at=now))` after each command (`BEGIN IMMEDIATE`, version "
        f"check, insert, `COMMIT`), `repo.load(id)` to load. "
        f"eventsourcing {version}: an explicit-style `Aggregate` subclass (`__init__(note)` gives its Created "
        f"event; a nested `Incremented(Aggregate.Event)` with `amount`, `note` and `apply`, triggered with "
        f"`trigger_event`) in an `Application` with env `PERSISTENCE_MODULE=eventsourcing.sqlite`, "
        f"`SQLITE_DBNAME=file` (its `SQLiteApplicationRecorder`: `BEGIN`, insert, commit), no snapshots and no "
        f"aggregate cache; `app.save(counter)` after each command, `app.repository.get(id)` to load. "
        f"Durability is the same: eventsourcing sets `journal_mode=WAL` and leaves `synchronous` at SQLite's "
        f"default, which the run checks on both connections equals eskit's `synchronous=FULL` (measured: "
        f"journal_mode={pragmas[0]}, synchronous={pragmas[1]} on both; the run fails if they differ), so every "
        f"commit is fsynced on both sides. Payload: every event carries the same 80-character note (and the "
        f"increments an int); stored bytes per event, ids and keys included: eskit "
        f"{stored.get('eskit', (0, 0.0))[1]:.0f}, eventsourcing {stored.get('eventsourcing', (0, 0.0))[1]:.0f}. "
        f"The ratio is the median over all back-to-back pairs of (eventsourcing time / eskit time) — fsync "
        f"latency here swings from 0.1 ms to 10+ ms, and pairing cancels it; ops/s are medians over rounds of "
        f"units / total time. The CPU columns come from a separate unpaired pass of the same work (process "
        f"time per unit), showing each side's own work besides waiting for fsync."
    )
    ours, theirs = cpu["eskit"], cpu["eventsourcing"]
    notes = [
        f"Appends wait for one fsync per commit on both sides, which no library code can shorten at this "
        f"durability. In the unpaired pass a save took {ours['append wall']:.0f} µs wall, {ours['append']:.0f} µs "
        f"CPU with eskit and {theirs['append wall']:.0f} µs wall, {theirs['append']:.0f} µs CPU with "
        f"eventsourcing: with a free fsync the append ratio would approach the CPU ratio "
        f"({theirs['append'] / ours['append']:.2f}); it falls toward 1 as fsync latency grows."
    ]
    return {"title": TITLE, "method": method, "rows": rows, "goals": goals, "notes": notes}
