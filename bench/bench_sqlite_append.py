"""SQLite appends: eskit's ``SQLiteEventStore.append`` against raw ``sqlite3`` doing the same statements."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import goal_at_least, median, progress, scratch_dir
from eskit.events import NewEvent
from eskit.stores.sqlite import SQLiteEventStore
from eskit.stores.sqlite.schema import INSERT_EVENT, PRAGMAS, SELECT_LAST_SEQ, SELECT_VERSION
from eskit.stores.timestamps import to_micros

NAME = "sqlite_append"
TITLE = "SQLite append: eskit SQLiteEventStore against raw sqlite3"

CONTENDERS = ("eskit", "raw")
TARGET = 0.8
PAYLOAD = b'{"amount":1,"note":"' + b"x" * 80 + b'"}'
METADATA = b'{"request_id":"bench-0123456789abcdef","command":"increment"}'


@dataclass(frozen=True)
class Scenario:
    label: str
    per_append: int
    one_stream: bool

    def stream_and_version(self, i: int) -> tuple[str, int]:
        """Where append number ``i`` goes and the version it expects."""
        if self.one_stream:
            return "stream-0", i * self.per_append
        return f"stream-{i}", 0


SCENARIOS = (
    Scenario("1 event/append, new stream each", 1, one_stream=False),
    Scenario("10 events/append, new stream each", 10, one_stream=False),
    Scenario("1 event/append, one stream", 1, one_stream=True),
    Scenario("10 events/append, one stream", 10, one_stream=True),
)

Step = Callable[[int], None]


def _batches(appends: int, per_append: int) -> list[list[NewEvent]]:
    now = datetime.now(UTC)
    return [[NewEvent("Incremented", 1, PAYLOAD, METADATA, now) for _ in range(per_append)] for _ in range(appends)]


def _open_eskit(path: Path, scenario: Scenario, batches: list[list[NewEvent]]) -> tuple[Step, Callable[[], None]]:
    store = SQLiteEventStore(path)

    def step(i: int) -> None:
        stream_id, expected = scenario.stream_and_version(i)
        store.append(stream_id, batches[i], expected_version=expected)

    return step, store.close


def _open_raw(path: Path, scenario: Scenario, batches: list[list[NewEvent]]) -> tuple[Step, Callable[[], None]]:
    # The schema is eskit's own (created by opening a store once); the rest is plain sqlite3.
    SQLiteEventStore(path).db.get()
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    for pragma in PRAGMAS:
        conn.execute(pragma)
    # Raw code would hold its column values ready; only the stream and position vary per append.
    fields = [
        [(e.event_id.bytes, e.type_name, e.schema_version, e.data, e.metadata, to_micros(e.recorded_at)) for e in b]
        for b in batches
    ]

    def step(i: int) -> None:
        stream_id, expected = scenario.stream_and_version(i)
        conn.execute("BEGIN IMMEDIATE")
        try:
            (last,) = conn.execute(SELECT_LAST_SEQ).fetchone()
            (current,) = conn.execute(SELECT_VERSION, (stream_id,)).fetchone()
            if (current or 0) != expected:
                raise RuntimeError(f"{stream_id} is at {current}, expected {expected}")
            seq = last or 0
            rows = [(stream_id, expected + k, *f, seq + k) for k, f in enumerate(fields[i], start=1)]
            conn.executemany(INSERT_EVENT, rows)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    return step, conn.close


OPENERS = {"eskit": _open_eskit, "raw": _open_raw}


def _count_events(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        (count,) = conn.execute("SELECT count(*) FROM events").fetchone()
    return int(count)


def _round(workdir: Path, scenario: Scenario, appends: int, r: int) -> dict[str, list[float]]:
    """One round on fresh files: the contenders take turns, one append each, alternating who goes first.

    Returns, per contender, the wall-clock seconds of each append and (under
    ``"<name> cpu"``) the total CPU seconds; append ``i`` of both contenders ran
    back to back, so their ratio is a paired measurement.
    """
    batches = {name: _batches(appends, scenario.per_append) for name in CONTENDERS}
    paths = {name: workdir / f"{name}-r{r}-{scenario.per_append}-{int(scenario.one_stream)}.db" for name in CONTENDERS}
    opened = {name: OPENERS[name](paths[name], scenario, batches[name]) for name in CONTENDERS}
    steps = [(name, opened[name][0]) for name in CONTENDERS]
    times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
    cpu = dict.fromkeys(CONTENDERS, 0.0)
    clock, cpu_clock = time.perf_counter, time.process_time
    try:
        for i in range(appends):
            for name, step in steps if (i + r) % 2 == 0 else steps[::-1]:
                t0, c0 = clock(), cpu_clock()
                step(i)
                times[name].append(clock() - t0)
                cpu[name] += cpu_clock() - c0
    finally:
        for _, close in opened.values():
            close()
    for name in CONTENDERS:
        count = _count_events(paths[name])
        if count != appends * scenario.per_append:
            raise RuntimeError(f"{name} stored {count} events, expected {appends * scenario.per_append}")
        for suffix in ("", "-wal", "-shm"):
            Path(f"{paths[name]}{suffix}").unlink(missing_ok=True)
        times[f"{name} cpu"] = [cpu[name]]
    return times


def run(quick: bool) -> dict[str, Any]:
    appends = 200 if quick else 2000
    rounds = 3
    rows: list[dict[str, Any]] = []
    goals: list[dict[str, Any]] = []
    with scratch_dir() as workdir:
        for scenario in SCENARIOS:
            rates: dict[str, list[float]] = {name: [] for name in CONTENDERS}
            cpu_us: dict[str, list[float]] = {name: [] for name in CONTENDERS}
            ratios: list[float] = []
            round_ratios: list[float] = []
            for r in range(rounds):
                times = _round(workdir, scenario, appends, r)
                for name in CONTENDERS:
                    rates[name].append(appends / sum(times[name]))
                    cpu_us[name].append(sum(times[f"{name} cpu"]) / appends * 1e6)
                pairs = [raw / eskit for raw, eskit in zip(times["raw"], times["eskit"], strict=True)]
                ratios += pairs
                round_ratios.append(median(pairs))
            eskit_rate, raw_rate, ratio = median(rates["eskit"]), median(rates["raw"]), median(ratios)
            progress(f"{scenario.label}: eskit/raw = {ratio:.3f} (per round {[round(x, 3) for x in round_ratios]})")
            rows.append(
                {
                    "scenario": scenario.label,
                    "eskit appends/s": eskit_rate,
                    "raw appends/s": raw_rate,
                    "eskit events/s": eskit_rate * scenario.per_append,
                    "raw events/s": raw_rate * scenario.per_append,
                    "eskit / raw": ratio,
                    "per-round ratios": f"{min(round_ratios):.2f}-{max(round_ratios):.2f}",
                    "eskit CPU µs/append": median(cpu_us["eskit"]),
                    "raw CPU µs/append": median(cpu_us["raw"]),
                }
            )
            goals.append(goal_at_least(f"eskit append ≥ {TARGET}x raw sqlite3 ({scenario.label})", ratio, TARGET))
    method = (
        f"Each append is its own transaction with an expected version, on a fresh database file per round and "
        f"contender in one temporary folder (same filesystem for both), with eskit's PRAGMAS "
        f"({'; '.join(p.removeprefix('PRAGMA ') for p in PRAGMAS)}), so every commit is fsynced to the WAL. "
        f"eskit: `SQLiteEventStore.append(stream, events, expected_version=v)` with pre-encoded `NewEvent`s "
        f"(its cost includes argument checks, building rows from the records, the transaction context manager "
        f"and error translation). raw: one `sqlite3` connection with the same pragmas runs the same statements "
        f"(`BEGIN IMMEDIATE`; `SELECT_LAST_SEQ` for the feed's sequence; "
        f"`SELECT_VERSION`; `executemany(INSERT_EVENT)`; `COMMIT`) with the column values "
        f"ready. Each event has a {len(PAYLOAD)}-byte payload and {len(METADATA)}-byte metadata. 'new stream "
        f"each' appends to a new stream (expected version 0); 'one stream' appends sequentially to one stream. "
        f"{appends} appends per contender, scenario and round; the contenders take turns append by append, "
        f"alternating which goes first; {rounds} rounds. Commit latency (fsync) on this shared machine ranges "
        f"from 0.1 ms to over 10 ms, so the ratio (the goal's value) is the median over all pairs of "
        f"back-to-back appends of (raw append time / eskit append time); an A/A test (raw against raw) puts "
        f"it at 1.00 ± 0.01. 'per-round ratios' is the range of the per-round medians. Appends/s are medians "
        f"over rounds of appends / total time, so fsync stalls weigh on them. The CPU columns (process time, "
        f"user + system, per append) show the work each side does besides waiting for fsync."
    )
    return {"title": TITLE, "method": method, "rows": rows, "goals": goals}
