"""Time travel cost against stream length: ``Repository.load(as_of=...)`` on SQLite and 1-node Cassandra."""

from __future__ import annotations

import random
import shutil
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.bench_load import Counter, Incremented
from bench.harness import goal_at_most, median, progress, scratch_dir
from eskit import EventCodec, EventMetadata, EventStore, Repository, SnapshotPolicy, SnapshotStore

NAME = "time-travel"
TITLE = "Time travel: as_of cost against stream length (SQLite, 1-node Cassandra)"

TARGET = 2.0
SNAPSHOT_EVERY = 100
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _build(repo: Repository[Counter], stream: str, length: int) -> None:
    """``length`` events one millisecond apart, saved 100 at a time (a snapshot at every hundred)."""
    counter = Counter(stream)
    while counter.version < length:
        n = min(SNAPSHOT_EVERY, length - counter.version)
        metas = [EventMetadata(recorded_at=T0 + timedelta(milliseconds=counter.version + i)) for i in range(n)]
        for _ in range(n):
            counter.increment(1)
        repo.save(counter, metas)


def _time_as_of(repo: Repository[Counter], stream: str, length: int, rng: random.Random) -> float:
    """Seconds per ``as_of`` load at a random point of the stream, over loads filling about 100 ms."""
    loads, spent = 0, 0.0
    while spent < 0.1 or loads < 5:
        version = rng.randint(1, length)
        when = T0 + timedelta(milliseconds=version - 1, microseconds=500)
        t0 = time.perf_counter()
        counter = repo.load(stream, as_of=when)
        spent += time.perf_counter() - t0
        loads += 1
        if counter.version != version or counter.total != version:
            raise RuntimeError(f"{stream} as of v{version} loaded v{counter.version} total {counter.total}")
    return spent / loads


def _measure(
    label: str, stores: tuple[EventStore, SnapshotStore], lengths: tuple[int, ...], rounds: int
) -> list[dict[str, Any]]:
    events, snapshots = stores
    repo = Repository(
        Counter,
        events,
        EventCodec([Incremented]),
        snapshots=snapshots,
        snapshot_policy=SnapshotPolicy(every=SNAPSHOT_EVERY),
    )
    prefix = f"tt-{uuid.uuid4().hex[:8]}"
    for length in lengths:
        progress(f"{label}: building a stream of {length:,} events")
        _build(repo, f"{prefix}-{length}", length)
    rng = random.Random(7)
    samples: dict[int, list[float]] = {n: [] for n in lengths}
    latest: dict[int, list[float]] = {n: [] for n in lengths}
    for r in range(rounds):
        order = lengths[r % len(lengths) :] + lengths[: r % len(lengths)]
        for length in order:
            samples[length].append(_time_as_of(repo, f"{prefix}-{length}", length, rng))
            t0 = time.perf_counter()
            repo.load(f"{prefix}-{length}")
            latest[length].append(time.perf_counter() - t0)
        progress(f"{label}: round {r + 1}/{rounds} done")
    base = median(samples[lengths[0]])
    return [
        {
            "store": label,
            "events in stream": length,
            "median as_of ms": median(samples[length]) * 1000,
            "median latest-version load ms": median(latest[length]) * 1000,
            f"x {lengths[0]}-event as_of": median(samples[length]) / base,
        }
        for length in lengths
    ]


def _with_cassandra(work: Callable[[tuple[EventStore, SnapshotStore]], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    from eskit import open_stores
    from tools.cassandra_cluster import LocalCassandraCluster

    cluster = LocalCassandraCluster(1)
    progress("1-node cluster: starting")
    cluster.start()
    try:
        url = f"cassandra://{cluster.contact_points[0]}/bench_{uuid.uuid4().hex[:8]}?dc=dc1&replication=1"
        stores = open_stores(url + "&create_schema=true")
        try:
            return work((stores.events, stores.snapshots))
        finally:
            stores.close()
    finally:
        cluster.stop(wipe=True)


def run(quick: bool) -> dict[str, Any]:
    from eskit.stores.sqlite import SQLiteConnection, SQLiteEventStore, SQLiteSnapshotStore

    lengths = (100, 10_000) if quick else (100, 10_000, 100_000)
    rounds = 2 if quick else 5
    rows: list[dict[str, Any]] = []
    with scratch_dir() as workdir:
        db = SQLiteConnection(workdir / "tt.db")
        rows += _measure("SQLite", (SQLiteEventStore(db), SQLiteSnapshotStore(db)), lengths, rounds)
        db.close()
    cassandra_note = ""
    try:
        import cassandra  # noqa: F401

        has_driver = True
    except ImportError:
        has_driver = False
    if has_driver and (shutil.which("mvn") is not None or Path(".cache/cassandra").exists()):
        rows += _with_cassandra(lambda stores: _measure("Cassandra, 1 node", stores, lengths, rounds))
    else:
        cassandra_note = "Cassandra skipped: no driver or no Maven to fetch the server with."
    goals = [
        goal_at_most(
            f"{row['store']}: as_of on {lengths[-1]:,} events within {TARGET}x of as_of on {lengths[0]}",
            row[f"x {lengths[0]}-event as_of"],
            TARGET,
        )
        for row in rows
        if row["events in stream"] == lengths[-1]
    ]
    method = (
        f"One stream per length ({', '.join(f'{n:,}' for n in lengths)} events, recorded 1 ms apart) of the "
        f"counter aggregate of the load benchmark, saved 100 events at a time with a snapshot every "
        f"{SNAPSHOT_EVERY}. A sample is the mean of `Repository.load(stream, as_of=T)` calls at random points "
        f"T of the stream, as many as fill 100 ms: the store's `version_at` (the shared search over "
        f"recorded times: 64 probes a round, strided probes over long ranges, which Cassandra reads from its "
        f"time index), then the snapshot below that version and the events after it. {rounds} "
        f"rounds rotate the order of the lengths; medians. The latest-version load is shown for comparison."
    )
    return {
        "title": TITLE,
        "method": method,
        "rows": rows,
        "goals": goals,
        "notes": [cassandra_note] if cassandra_note else [],
    }
