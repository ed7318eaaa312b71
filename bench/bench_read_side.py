"""The read side on SQLite: what the feed costs an append, projection speed, feed lag, a title's withdrawal."""

from __future__ import annotations

import sqlite3
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.harness import goal_at_least, goal_at_most, median, progress, scratch_dir
from downloads.application import AcquireLicense, OpenAccount, RegisterDevice, ReleaseLicense, SetTitle
from downloads.bootstrap import Runtime, bootstrap, open_read_side
from downloads.readmodels.readside import ReadSide
from downloads.settings import Settings
from eskit.projection import ProjectionTarget, Projector
from eskit.readmodel import ProjectionRunner
from eskit.stores.sqlite import SQLiteReadModels
from eskit.stores.sqlite.schema import INSERT_EVENT, PRAGMAS, SCHEMA, SELECT_LAST_SEQ, SELECT_VERSION

NAME = "read_side"
TITLE = "Read side on SQLite: feed cost per append, projection throughput, feed lag, title withdrawal"

#: the old events table, before the feed: the baseline for what the feed's sequence costs
NO_FEED_EVENTS = SCHEMA[0].replace("        seq INTEGER,\n", "")
NO_FEED_INSERT = INSERT_EVENT.replace(", seq)", ")").replace(", ?)", ")", 1)


def _raw_appender(path: Path, *, feed: bool) -> tuple[Any, sqlite3.Connection]:
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    for pragma in PRAGMAS:
        conn.execute(pragma)
    conn.execute(SCHEMA[0] if feed else NO_FEED_EVENTS)
    if feed:
        conn.execute("CREATE UNIQUE INDEX IF NOT EXISTS events_by_seq ON events (seq)")
    payload, meta = b'{"license_id":"' + b"x" * 36 + b'"}', b'{"request_id":"bench"}'

    def append(i: int) -> None:
        stream = f"s{i % 100}"
        conn.execute("BEGIN IMMEDIATE")
        (current,) = conn.execute(SELECT_VERSION, (stream,)).fetchone()
        row: tuple[Any, ...] = (stream, (current or 0) + 1, uuid.uuid4().bytes, "Bench", 1, payload, meta, i)
        if feed:
            (last,) = conn.execute(SELECT_LAST_SEQ).fetchone()
            conn.execute(INSERT_EVENT, (*row, (last or 0) + 1))
        else:
            conn.execute(NO_FEED_INSERT, row)
        conn.execute("COMMIT")

    return append, conn


def _feed_cost(workdir: Path, appends: int, rounds: int) -> tuple[dict[str, Any], float]:
    ratios: list[float] = []
    rates: dict[bool, list[float]] = {True: [], False: []}
    for r in range(rounds):
        with_feed, c1 = _raw_appender(workdir / f"feed-{r}.db", feed=True)
        without, c2 = _raw_appender(workdir / f"plain-{r}.db", feed=False)
        times: dict[bool, list[float]] = {True: [], False: []}
        for i in range(appends):
            for feed in (True, False) if i % 2 == 0 else (False, True):
                started = time.perf_counter()
                (with_feed if feed else without)(i)
                times[feed].append(time.perf_counter() - started)
        c1.close()
        c2.close()
        ratios.extend(b / a for a, b in zip(times[True], times[False], strict=True))
        for feed in (True, False):
            rates[feed].append(appends / sum(times[feed]))
    ratio = median(ratios)
    progress(f"feed cost: append time without / with the feed = {ratio:.3f}")
    row = {
        "case": "append, 1 event (raw sqlite3, same transaction)",
        "with feed /s": round(median(rates[True])),
        "without feed /s": round(median(rates[False])),
        "ratio": round(ratio, 3),
    }
    return row, ratio


def _fill(runtime: Runtime, accounts: int, pairs: int) -> None:
    service = runtime.service
    for a in range(accounts):
        service.handle(OpenAccount(f"acct-{a}", "standard"))
        service.handle(RegisterDevice(f"acct-{a}", "d1", "phone"))
    for n in range(pairs):
        account = f"acct-{n % accounts}"
        license_id = str(service.handle(AcquireLicense(account, "d1", "demo-title-1")).body["license_id"])
        service.handle(ReleaseLicense(account, license_id))


def _throughput(runtime: Runtime, read_side: ReadSide) -> tuple[list[dict[str, Any]], float]:
    feed = runtime.stores.feed
    assert feed is not None
    head = feed.head()
    started, after = time.perf_counter(), 0
    while batch := feed.read(after=after, limit=500):
        after = batch[-1].sequence
    raw = head / (time.perf_counter() - started)
    rows = [{"case": "feed read (pages of 500)", "events": head, "events/s": round(raw), "x raw read": 1.0}]
    licenses_ratio = 0.0
    for spec in read_side.runner.specs.values():  # a fresh version of each: a rebuild from the start
        tables = read_side.store.tables(spec.name, 99, spec.tables)
        tables.drop()
        tables.create()
        target = read_side.store.target(spec.name, 99, tables, spec.handle)
        assert isinstance(target, ProjectionTarget)
        started = time.perf_counter()
        Projector(feed, target, batch=500).catch_up()
        rate = head / (time.perf_counter() - started)
        tables.drop()
        rows.append(
            {"case": f"projection {spec.name}", "events": head, "events/s": round(rate), "x raw read": rate / raw}
        )
        if spec.name == "licenses_by_title":
            licenses_ratio = rate / raw
        progress(f"projection {spec.name}: {rate:,.0f} events/s ({rate / raw:.2f}x the raw read)")
    # Every read model at once, as the runner keeps them: one read of the feed and one decoding per
    # event for all of them.
    scratch = SQLiteReadModels(Path(tempfile.mkdtemp(prefix="bench-rm-")) / "all.readmodels.db")
    runner = ProjectionRunner(scratch, runtime.stores, list(read_side.runner.specs.values()), managers=[])
    started = time.perf_counter()
    while runner.step(manage=False):
        pass
    rate = head / (time.perf_counter() - started)
    runner.close()
    scratch.close()
    count = len(read_side.runner.specs)
    rows.append(
        {
            "case": f"all {count} projections at once (the runner)",
            "events": head,
            "events/s": round(rate),
            "x raw read": rate / raw,
        }
    )
    progress(f"all {count} projections at once: {rate:,.0f} events/s ({rate / raw:.2f}x the raw read)")
    return rows, licenses_ratio


def _lag(runtime: Runtime, read_side: ReadSide, seconds: float, rate: float) -> dict[str, Any]:
    """Commands at a steady pace while the read side runs in the background; lag = ack to applied."""
    service, feed = runtime.service, runtime.stores.feed
    assert feed is not None
    licenses = read_side.runner.target("licenses_by_title")
    assert isinstance(licenses, ProjectionTarget)
    acks: list[tuple[float, int]] = []  # (ack time, feed head right after the ack)
    applied_at: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        pending = 0
        while not done.is_set() or pending < len(acks):
            position = licenses.checkpoint()
            now = time.perf_counter()
            while pending < len(acks) and acks[pending][1] <= position:
                applied_at[pending] = now
                pending += 1
            time.sleep(0.002)
            if done.is_set() and now - acks[-1][0] > 10:
                return

    read_side.start()
    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    n = 0
    try:
        while time.perf_counter() - started < seconds:
            account = f"acct-{n % 50}"
            license_id = str(service.handle(AcquireLicense(account, "d1", "demo-title-1")).body["license_id"])
            acks.append((time.perf_counter(), feed.head()))
            service.handle(ReleaseLicense(account, license_id))
            n += 1
            pause = started + n / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
    finally:
        done.set()
        sampler.join(timeout=30)
        read_side.stop()
    lags = sorted(applied_at[i] - acks[i][0] for i in applied_at)
    p50, p99 = lags[len(lags) // 2], lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    progress(f"feed lag over {len(lags)} acquires: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    return {"commands": len(acks) * 2, "applied": len(lags), "p50 ms": p50 * 1000, "p99 ms": p99 * 1000}


def _withdrawal(workdir: Path, accounts: int) -> dict[str, Any]:
    runtime = bootstrap(Settings(store=f"sqlite:///{workdir / 'withdraw.db'}", snapshot_every=0))
    read_side = open_read_side(runtime)
    service = runtime.service
    service.set_title(SetTitle("film", "default"))
    for a in range(accounts):
        service.handle(OpenAccount(f"w-{a}", "standard"))
        service.handle(RegisterDevice(f"w-{a}", "d1", "phone"))
        service.handle(AcquireLicense(f"w-{a}", "d1", "film"))
    while read_side.step():
        pass
    service.set_title(SetTitle("film", "default", downloadable=False))
    started = time.perf_counter()
    while True:
        read_side.step()
        remaining = read_side.title_licenses("film", status="active", after=None, limit=1, now=service.clock())
        if not remaining.licenses and read_side.pending_revocations() == 0:
            break
    took = time.perf_counter() - started
    read_side.close()
    runtime.close()
    progress(f"withdrawal of a title held by {accounts:,} accounts: {took:.1f} s")
    return {"accounts": accounts, "seconds": took, "revocations/s": accounts / took}


def run(quick: bool) -> dict[str, Any]:
    appends, rounds = (300, 2) if quick else (2000, 3)
    accounts, pairs = (50, 1000) if quick else (50, 10_000)
    withdrawn = 1000 if quick else 10_000
    seconds = 3.0 if quick else 15.0
    with scratch_dir() as workdir:
        cost_row, cost = _feed_cost(workdir, appends, rounds)
        runtime = bootstrap(Settings(store=f"sqlite:///{workdir / 'downloads.db'}", snapshot_every=100))
        read_side = open_read_side(runtime)
        assert isinstance(read_side, ReadSide)
        progress(f"filling: {accounts} accounts, {pairs:,} acquire+release pairs")
        _fill(runtime, accounts, pairs)
        throughput_rows, licenses_ratio = _throughput(runtime, read_side)
        while read_side.step():
            pass
        lag = _lag(runtime, read_side, seconds, rate=100.0)
        read_side.close()
        runtime.close()
        withdrawal = _withdrawal(workdir, withdrawn)
    rows = [
        cost_row,
        *throughput_rows,
        {"case": "feed lag, 200 commands/s (100 acquire+release pairs)", **lag},
        {"case": f"withdraw a title held by {withdrawal['accounts']:,} accounts", **withdrawal},
    ]
    goals = [
        goal_at_least("an append with the feed's sequence ≥ 0.9x the speed of one without", cost, 0.9),
        goal_at_least("the licenses projection ≥ 0.1x the feed's raw read rate", licenses_ratio, 0.1),
        goal_at_most("feed lag p99 ≤ 1000 ms under steady load", lag["p99 ms"], 1000.0),
        goal_at_least("a withdrawal revokes ≥ 100 licenses/s", withdrawal["revocations/s"], 100.0),
    ]
    method = (
        "SQLite (the Cassandra read side has its own benchmark). Feed cost: two raw sqlite3 connections with eskit's "
        "pragmas, one on today's events table (the feed's seq column, its unique index, and max(seq)+1 read in "
        "the append's BEGIN IMMEDIATE transaction) and one on the table as it was before the feed; one-event "
        f"appends to 100 streams, taking turns append by append, {appends} each per round, {rounds} rounds; the "
        "ratio is the median over pairs of (time without / time with). Throughput: a store filled through "
        f"DownloadsService ({accounts} accounts, {pairs:,} acquire+release pairs); the raw rate reads the whole "
        "feed in pages of 500; each projection is rebuilt from the start into a fresh version (batches of 500, "
        "one read-model transaction per batch, synchronous=NORMAL). Feed lag: with the read side running in the "
        f"background of the same process (as in serve), acquire+release pairs at 100 pairs/s for {seconds:.0f} s; "
        "the lag of an acquire is the time from its answer to the moment the licenses projection's checkpoint "
        "reaches the feed head read right after the answer (sampled every 2 ms). Withdrawal: "
        f"{withdrawn:,} accounts each holding one license of a title, the title set not downloadable, then the "
        "read side stepped in the foreground until no active license of the title is left and no revocation "
        "is pending; every revocation is an ordinary RevokeLicense command with its own idempotency key."
    )
    return {"title": TITLE, "method": method, "rows": rows, "goals": goals}
