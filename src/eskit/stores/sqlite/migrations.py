"""Bringing a SQLite file made by an older eskit up to today's schema, in place.

The feed (``events.seq``) arrived after the first files were written: such a
file gets the column, a number for every event it holds and the unique index,
in one write transaction, so a crash part-way leaves the file as it was and the
next open starts again. Old events are numbered by their recorded time, the best
guess of their commit order (so, for instance, a title put in the catalog before
its licenses were issued comes first), except that an event never goes before an
earlier event of its own stream: within a stream, each event counts as recorded
at the latest time of the events before it. Progress is logged. Once numbered,
the file refuses an event without a number (code from before the feed), which no
follower would ever see.

Snapshots were kept in a ``WITHOUT ROWID`` table, where finding one compared
the wanted key with neighbouring rows read whole, states included: a lookup
cost grew with the size of the neighbours' states. Such a file gets today's
rowid table and its unique index, every snapshot copied over, in one write
transaction (a crash part-way leaves the old table, and the next open starts again).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time

from eskit.stores.sqlite.schema import FEED_INDEX, FEED_TRIGGER, SNAPSHOTS_INDEX, SNAPSHOTS_TABLE

__all__ = ["add_feed_sequence", "snapshots_in_rowid_table"]

log = logging.getLogger("eskit.stores.sqlite")

_CHUNK = 10_000


def _has_feed(conn: sqlite3.Connection) -> bool:
    columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
    indexes = {row[1] for row in conn.execute("PRAGMA index_list(events)")}
    triggers = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    return "seq" in columns and "events_by_seq" in indexes and "events_need_seq" in triggers


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
        first, done, started, reported = last or 0, 0, time.monotonic(), time.monotonic()
        # The order to number in: recorded time, never before an earlier event of the same stream.
        conn.execute("DROP TABLE IF EXISTS temp.eskit_numbering")
        conn.execute(
            "CREATE TEMP TABLE eskit_numbering AS SELECT stream_id, position FROM ("
            " SELECT stream_id, position, max(recorded_at) OVER (PARTITION BY stream_id ORDER BY position"
            " ROWS UNBOUNDED PRECEDING) AS at FROM events WHERE seq IS NULL)"
            " ORDER BY at, stream_id, position"
        )
        while done < total:
            conn.execute(
                "UPDATE events SET seq = ? + n.rowid FROM temp.eskit_numbering AS n"
                " WHERE n.rowid > ? AND n.rowid <= ? AND events.stream_id = n.stream_id"
                " AND events.position = n.position",
                (first, done, done + _CHUNK),
            )
            done = min(total, done + _CHUNK)
            if time.monotonic() - reported >= 2:
                rate = done / max(time.monotonic() - started, 1e-9)
                left = (total - done) / rate if rate else 0
                log.warning("numbered %d of %d events (%.0f/s, about %.0f s left)", done, total, rate, left)
                reported = time.monotonic()
        conn.execute("DROP TABLE temp.eskit_numbering")
        conn.execute(FEED_INDEX)
        conn.execute(FEED_TRIGGER)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    if total:
        log.warning("numbered %d events of %s in %.1f s", done, path, time.monotonic() - started)
    return done


def _snapshots_by_rowid(conn: sqlite3.Connection) -> bool:
    columns = {row[1] for row in conn.execute("PRAGMA table_info(snapshots)")}
    indexes = {row[1] for row in conn.execute("PRAGMA index_list(snapshots)")}
    return "id" in columns and "snapshots_by_stream" in indexes


def snapshots_in_rowid_table(conn: sqlite3.Connection, *, path: str) -> int:
    """Move the snapshots of an older file into today's rowid table; return how many were moved."""
    if _snapshots_by_rowid(conn):
        return 0
    conn.execute("BEGIN IMMEDIATE")  # one migrator at a time, across processes
    try:
        if _snapshots_by_rowid(conn):  # another process did it while this one waited for the lock
            conn.execute("ROLLBACK")
            return 0
        started = time.monotonic()
        columns = {row[1] for row in conn.execute("PRAGMA table_info(snapshots)")}
        moved = 0
        if "id" not in columns:
            (moved,) = conn.execute("SELECT count(*) FROM snapshots").fetchone()
            if moved:
                log.warning("moving the %d snapshots of %s to a rowid table (a one-off migration)", moved, path)
            conn.execute("ALTER TABLE snapshots RENAME TO eskit_snapshots_before")
            conn.execute(SNAPSHOTS_TABLE)
            conn.execute(
                "INSERT INTO snapshots (stream_id, version, type_name, schema_version, recorded_at, state)"
                " SELECT stream_id, version, type_name, schema_version, recorded_at, state"
                " FROM eskit_snapshots_before ORDER BY stream_id, version"
            )
            conn.execute("DROP TABLE eskit_snapshots_before")
        conn.execute(SNAPSHOTS_INDEX)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    if moved:
        log.warning("moved %d snapshots of %s in %.1f s", moved, path, time.monotonic() - started)
    return int(moved)
