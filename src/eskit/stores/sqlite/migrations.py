"""Bringing a SQLite file made by an older eskit up to today's schema, in place.

The feed (``events.seq``) arrived after the first files were written: such a
file gets the column, a number for every event it holds and the unique index,
in one write transaction, so a crash part-way leaves the file as it was and the
next open starts again. Old events are numbered stream by stream, in position
order: each stream's events keep their order, which is all a follower relies on
(their commit order across streams is not known any more). Progress is logged.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time

from eskit.stores.sqlite.schema import FEED_INDEX

__all__ = ["add_feed_sequence"]

log = logging.getLogger("eskit.stores.sqlite")

_CHUNK = 10_000


def _has_feed(conn: sqlite3.Connection) -> bool:
    columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    indexes = {row[1] for row in conn.execute("PRAGMA index_list(events)")}
    return "seq" in columns and "events_by_seq" in indexes


def add_feed_sequence(conn: sqlite3.Connection, *, path: str) -> int:
    """Give every event of an older file its feed sequence number; return how many were numbered."""
    if _has_feed(conn):
        return 0
    conn.execute("BEGIN IMMEDIATE")  # one migrator at a time, across processes
    try:
        if _has_feed(conn):  # another process did it while this one waited for the lock
            conn.execute("ROLLBACK")
            return 0
        if "seq" not in {row[1] for row in conn.execute("PRAGMA table_info(events)")}:
            conn.execute("ALTER TABLE events ADD COLUMN seq INTEGER")
        (total,) = conn.execute("SELECT count(*) FROM events WHERE seq IS NULL").fetchone()
        if total:
            log.warning("numbering the %d events of %s for the feed (a one-off migration)", total, path)
        (last,) = conn.execute("SELECT max(seq) FROM events").fetchone()
        seq, done, started, reported = last or 0, 0, time.monotonic(), time.monotonic()
        after: tuple[str, int] = ("", 0)
        while True:
            keys = conn.execute(
                "SELECT stream_id, position, seq FROM events WHERE (stream_id, position) > (?, ?)"
                " ORDER BY stream_id, position LIMIT ?",
                (*after, _CHUNK),
            ).fetchall()
            if not keys:
                break
            after = (keys[-1][0], keys[-1][1])
            updates = []
            for stream_id, position, current in keys:
                if current is None:
                    seq += 1
                    updates.append((seq, stream_id, position))
            conn.executemany("UPDATE events SET seq = ? WHERE stream_id = ? AND position = ?", updates)
            done += len(updates)
            if time.monotonic() - reported >= 2:
                rate = done / max(time.monotonic() - started, 1e-9)
                left = (total - done) / rate if rate else 0
                log.warning("numbered %d of %d events (%.0f/s, about %.0f s left)", done, total, rate, left)
                reported = time.monotonic()
        conn.execute(FEED_INDEX)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    if total:
        log.warning("numbered %d events of %s in %.1f s", done, path, time.monotonic() - started)
    return done
