"""A SQLite file written before the feed existed gets its feed in place, once, and survives a kill part-way."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from eskit import open_stores
from eskit.testing.contract import new_event, read_whole_feed

#: the events table as eskit made it before the feed (no seq column, no index)
OLD_EVENTS = """CREATE TABLE events (
    stream_id TEXT NOT NULL, position INTEGER NOT NULL, event_id BLOB NOT NULL, type_name TEXT NOT NULL,
    schema_version INTEGER NOT NULL, data BLOB NOT NULL, metadata BLOB NOT NULL, recorded_at INTEGER NOT NULL,
    PRIMARY KEY (stream_id, position)
) WITHOUT ROWID"""


def old_file(path: Path, streams: dict[str, int]) -> None:
    """An old-format file holding ``count`` events in each named stream (written in a shuffled order)."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(OLD_EVENTS)
        rows = [
            (stream, n, uuid.uuid4().bytes, "Tested", 1, b'{"n":%d}' % n, b"{}", 1_700_000_000_000_000 + n)
            for stream, count in streams.items()
            for n in range(1, count + 1)
        ]
        rows.sort(key=lambda row: (row[1] % 7, row[0]))  # not the order the migration numbers them in
        conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    conn.close()


def test_an_old_file_gets_every_event_numbered_each_stream_in_order(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old_file(path, {"b": 3, "a": 2, "c": 1})

    stores = open_stores(f"sqlite:///{path}")
    try:
        assert stores.feed is not None
        seen = [(e.sequence, e.event.stream_id, e.event.position) for e in read_whole_feed(stores.feed)]
        assert [s for s, _, _ in seen] == [1, 2, 3, 4, 5, 6]
        assert sorted((stream, position) for _, stream, position in seen) == [
            ("a", 1),
            ("a", 2),
            ("b", 1),
            ("b", 2),
            ("b", 3),
            ("c", 1),
        ]
        for stream in "abc":
            positions = [p for _, s, p in seen if s == stream]
            assert positions == sorted(positions)

        stores.events.append("a", [new_event(9)], expected_version=2)
        assert stores.feed.head() == 7
        assert stores.feed.read(after=6)[0].event.stream_id == "a"
    finally:
        stores.close()

    again = open_stores(f"sqlite:///{path}")  # a second open renumbers nothing
    try:
        assert again.feed is not None
        assert [(e.sequence, e.event.stream_id, e.event.position) for e in read_whole_feed(again.feed)] == [
            *seen,
            (7, "a", 3),
        ]
    finally:
        again.close()


def _open_and_migrate(path: str) -> None:
    open_stores(f"sqlite:///{path}").close()


@pytest.mark.slow
def test_a_migration_killed_part_way_leaves_the_old_file_and_completes_on_the_next_open(tmp_path: Path) -> None:
    path = tmp_path / "big.db"
    old_file(path, {f"s{n}": 20 for n in range(10_000)})  # 200,000 events
    migrator = multiprocessing.get_context("spawn").Process(target=_open_and_migrate, args=(str(path),))
    migrator.start()
    try:
        deadline = time.monotonic() + 60
        wal = Path(f"{path}-wal")
        while time.monotonic() < deadline and (not wal.exists() or wal.stat().st_size < 1_000_000):
            time.sleep(0.01)  # until the migration is writing
        assert migrator.pid is not None and migrator.is_alive(), "the migration ended before it could be killed"
        os.kill(migrator.pid, signal.SIGKILL)
        migrator.join(timeout=30)
    finally:
        if migrator.is_alive():
            migrator.kill()
            migrator.join(timeout=30)

    with sqlite3.connect(path) as conn:  # nothing of the half-done migration is visible
        columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        numbered = (
            conn.execute("SELECT count(*) FROM events WHERE seq IS NOT NULL").fetchone()[0] if "seq" in columns else 0
        )
    conn.close()
    assert numbered == 0

    stores = open_stores(f"sqlite:///{path}")
    try:
        assert stores.feed is not None
        assert stores.feed.head() == 200_000
        sequences = [e.sequence for e in stores.feed.read(after=0, limit=200_000)]
        assert sequences == list(range(1, 200_001))
    finally:
        stores.close()


def test_old_events_are_numbered_by_time_across_streams_without_breaking_any_stream_order(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(OLD_EVENTS)
        times = {
            ("title-x", 1): 5,
            ("acct", 1): 10,
            ("title-x", 2): 15,
            ("acct", 2): 20,
            ("skewed", 1): 30,
            ("skewed", 2): 25,
        }
        conn.executemany(
            "INSERT INTO events VALUES (?, ?, ?, 'Tested', 1, x'7b7d', x'7b7d', ?)",
            [(s, p, uuid.uuid4().bytes, t) for (s, p), t in times.items()],
        )
    conn.close()

    stores = open_stores(f"sqlite:///{path}")
    try:
        assert stores.feed is not None
        order = [(e.event.stream_id, e.event.position) for e in read_whole_feed(stores.feed)]
    finally:
        stores.close()
    # The catalog's event recorded first comes first (a projection needs it before the licenses),
    # and a stream whose times go backwards keeps its own order.
    assert order == [("title-x", 1), ("acct", 1), ("title-x", 2), ("acct", 2), ("skewed", 1), ("skewed", 2)]


def test_a_writer_that_leaves_out_the_feed_sequence_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    open_stores(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn, pytest.raises(sqlite3.IntegrityError, match="feed sequence"):
        # what code from before the feed would do: an insert without seq, which no follower would see
        conn.execute("INSERT INTO events VALUES ('s', 1, x'00', 'T', 1, x'7b7d', x'7b7d', 1, NULL)")
    conn.close()
