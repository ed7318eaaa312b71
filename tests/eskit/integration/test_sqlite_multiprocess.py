"""SQLite under real concurrency: several processes append to one stream in one file.

The writers run in separate processes started with the "spawn" method, so nothing
is shared but the database file. Each writer records every append the store
acknowledged (position and payload) in its own file, flushed as soon as
``append`` returns; the tests then hold the file to those acknowledgements.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from multiprocessing.context import SpawnProcess
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest

from eskit import ConcurrencyError, NewEvent
from eskit.stores.sqlite import SQLiteConnection, SQLiteEventFeed, SQLiteEventStore
from eskit.testing.contract import read_whole_feed

SPAWN = multiprocessing.get_context("spawn")
STREAM = "race-1"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
#: every wait in this module gives up after this long, so a hang fails instead of blocking CI
DEADLINE_SECONDS = 120.0


# -- what runs in the writer processes ----------------------------------------------


def payload(writer: int, n: int, *, pad: int = 0) -> str:
    return json.dumps({"writer": writer, "n": n, "pad": "x" * pad}, separators=(",", ":"))


def encoded(data: str) -> NewEvent:
    return NewEvent("test.Appended", 1, data.encode(), b"{}", T0)


def append_with_retry(store: SQLiteEventStore, events: list[NewEvent]) -> int:
    """Append after the current version, re-reading it after each conflict; return the new version."""
    for _ in range(100_000):
        expected = store.version(STREAM)
        try:
            return store.append(STREAM, events, expected_version=expected)
        except ConcurrencyError:
            continue
    raise RuntimeError("never won a race")


def write(path: str, writer: int, acks_path: str, start: Event, stop: Event | None, rounds: int, batch: int) -> None:
    """Append ``rounds`` batches (or until ``stop`` is set), logging each acknowledged event."""
    store = SQLiteEventStore(path)
    if not start.wait(timeout=DEADLINE_SECONDS):
        raise RuntimeError("never told to start")
    with open(acks_path, "w", encoding="utf-8") as acks:
        n = 0
        while n < rounds and not (stop is not None and stop.is_set()):
            data = [payload(writer, n + i, pad=2000 if stop is not None else 0) for i in range(batch)]
            version = append_with_retry(store, [encoded(d) for d in data])
            first = version - batch + 1
            for offset, d in enumerate(data):
                acks.write(json.dumps({"position": first + offset, "data": d}) + "\n")
            acks.flush()  # in the kernel now: a SIGKILL of this process cannot lose it
            n += batch
    store.close()


# -- helpers for the test process ---------------------------------------------------


def read_acks(path: Path) -> list[tuple[int, str]]:
    """The complete lines of an acks file (a killed writer may leave half a line)."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").split("\n")[:-1]
    return [(ack["position"], ack["data"]) for ack in map(json.loads, lines)]


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.01)


def join_all(processes: list[SpawnProcess]) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    for process in processes:
        process.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not [p.name for p in processes if p.is_alive()], "writers still running at the deadline"


def stop_leftovers(processes: list[SpawnProcess]) -> None:
    for process in processes:
        if process.is_alive():
            process.terminate()
            process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join(timeout=10)


def stored(path: Path) -> list[tuple[int, str]]:
    """What a fresh store on the file reads back: (position, payload) in stream order."""
    store = SQLiteEventStore(path)
    try:
        return [(e.position, e.data.decode()) for e in store.read(STREAM)]
    finally:
        store.close()


def fed(path: Path) -> list[tuple[int, int, str]]:
    """What a follower of the file's feed reads: (sequence, position, payload)."""
    db = SQLiteConnection(path)
    try:
        return [(e.sequence, e.event.position, e.event.data.decode()) for e in read_whole_feed(SQLiteEventFeed(db))]
    finally:
        db.close()


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        (result,) = conn.execute("PRAGMA integrity_check").fetchone()
    conn.close()
    return str(result)


def created(path: Path) -> SQLiteEventStore:
    """A store on ``path`` with its file and schema created, kept open by the test process."""
    store = SQLiteEventStore(path)
    store.version(STREAM)
    return store


# -- the tests ----------------------------------------------------------------------


@pytest.mark.slow
def test_processes_racing_on_one_stream_get_one_winner_per_version_and_every_ack_is_kept(tmp_path: Path) -> None:
    writers, rounds = 5, 30
    path = tmp_path / "events.db"
    keeper = created(path)
    start = SPAWN.Event()
    ack_files = [tmp_path / f"acks-{w}.jsonl" for w in range(writers)]
    processes = [
        SPAWN.Process(target=write, args=(str(path), w, str(ack_files[w]), start, None, rounds, 1), name=f"writer-{w}")
        for w in range(writers)
    ]
    tailed: list[int] = []
    writing = threading.Event()
    writing.set()

    def tail() -> None:  # a follower reading the feed while the processes write
        feed, after = SQLiteEventFeed(SQLiteConnection(path)), 0
        while writing.is_set() or feed.head() > after:
            batch = feed.read(after=after, limit=4)
            tailed.extend(e.sequence for e in batch)
            after = batch[-1].sequence if batch else after

    follower = threading.Thread(target=tail)
    try:
        follower.start()
        for process in processes:
            process.start()
        start.set()
        join_all(processes)
        assert [p.exitcode for p in processes] == [0] * writers
    finally:
        writing.clear()
        follower.join(timeout=DEADLINE_SECONDS)
        stop_leftovers(processes)
        keeper.close()
    assert tailed == list(range(1, writers * rounds + 1))  # followed live: no gap, nothing twice

    acks = [ack for f in ack_files for ack in read_acks(f)]
    events = stored(path)
    total = writers * rounds
    assert len(acks) == total
    assert [position for position, _ in events] == list(range(1, total + 1))
    assert Counter(position for position, _ in acks) == Counter(range(1, total + 1))  # one winner per version
    assert sorted(acks) == events  # each acknowledged payload at its acknowledged position
    assert Counter(json.loads(data)["writer"] for _, data in events) == {w: rounds for w in range(writers)}
    assert integrity(path) == "ok"
    # The feed holds every event once, numbered 1..total in commit order, which on one stream is position order.
    assert fed(path) == [(n, position, data) for n, (position, data) in enumerate(events, start=1)]


@pytest.mark.slow
def test_a_writer_killed_mid_append_loses_no_acknowledged_event_and_leaves_a_clean_file(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    keeper = created(path)
    start, stop = SPAWN.Event(), SPAWN.Event()
    victim_acks, survivor_acks = tmp_path / "victim.jsonl", tmp_path / "survivor.jsonl"
    victim = SPAWN.Process(target=write, args=(str(path), 0, str(victim_acks), start, stop, 10**9, 3), name="victim")
    survivor = SPAWN.Process(
        target=write, args=(str(path), 1, str(survivor_acks), start, stop, 10**9, 3), name="survivor"
    )
    try:
        victim.start()
        survivor.start()
        start.set()
        wait_until(lambda: len(read_acks(victim_acks)) >= 30, "the victim has 30 acknowledged events")
        assert victim.pid is not None
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(timeout=DEADLINE_SECONDS)
        assert victim.exitcode == -signal.SIGKILL

        # The killed writer must not leave the write lock behind: the survivor keeps going.
        before = len(read_acks(survivor_acks))
        wait_until(lambda: len(read_acks(survivor_acks)) >= before + 15, "the survivor appends after the kill")
        stop.set()
        join_all([survivor])
        assert survivor.exitcode == 0
    finally:
        stop.set()
        stop_leftovers([victim, survivor])
        keeper.close()

    events = stored(path)
    acked = read_acks(victim_acks) + read_acks(survivor_acks)
    assert [position for position, _ in events] == list(range(1, len(events) + 1))
    assert set(acked) <= set(events)
    # At most the batch in flight at the kill can be stored without its acknowledgement.
    assert len(events) - len(acked) <= 3
    assert integrity(path) == "ok"
    # The killed writer's transaction took no feed numbers: the sequence has no gap.
    assert fed(path) == [(n, position, data) for n, (position, data) in enumerate(events, start=1)]

    reopened = SQLiteEventStore(path)
    try:
        assert reopened.append(STREAM, [encoded("after")], expected_version=len(events)) == len(events) + 1
        assert reopened.read(STREAM, gt=len(events))[0].data == b"after"
    finally:
        reopened.close()
