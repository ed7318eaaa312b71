"""The SQLite store's tables, and the statements the event store shares with benchmarks.

``events.seq`` is the feed's sequence: store-wide, assigned inside the write
transaction that commits the event, so the committed values are always exactly
``1 .. max(seq)`` (see :mod:`eskit.stores.sqlite.feed`).

``eskit_tracking`` holds, per upstream sequence, how far a writer that turns that
sequence's events into appends has come (written in the transaction of those appends,
by :meth:`~eskit.stores.sqlite.SQLiteEventStore.append_all`).

``eskit_store`` holds the store's identity (``store_id``): a random id written
once, when the file is first opened by code that knows it (at its creation, or
at the first open of a file made before), never changed. Read models record
the id of the store they follow, so a file made anew under the same name is
never taken for the one they were built from.

``eskit_keys`` holds each sealed stream's key, wrapped by a master key, or its
tombstone once erased (:mod:`eskit.privacy`). Older files get the table when
first opened by code that knows it (it starts empty).
"""

from __future__ import annotations

__all__ = [
    "FEED_INDEX",
    "FEED_TRIGGER",
    "INSERT_EVENT",
    "KEYS_TABLE",
    "PRAGMAS",
    "SCHEMA",
    "SELECT_LAST_SEQ",
    "SELECT_STORE_ID",
    "SELECT_TRACKED",
    "SELECT_VERSION",
    "SNAPSHOTS_INDEX",
    "SNAPSHOTS_TABLE",
    "UPSERT_TRACKED",
]

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA busy_timeout=30000",
)

#: A rowid table found through a small unique index, not a ``WITHOUT ROWID`` table: there the key's
#: b-tree holds whole rows, and a lookup that compares its key with a neighbour's reads the neighbour's
#: whole state (a megabyte for a long history) from its overflow pages. ``state`` comes last, so the
#: columns before it are read without walking its overflow chain.
SNAPSHOTS_TABLE = """CREATE TABLE IF NOT EXISTS snapshots (
        id INTEGER PRIMARY KEY,
        stream_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        type_name TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        recorded_at INTEGER NOT NULL,
        state BLOB NOT NULL
    )"""
#: created after the snapshots table is known to be today's (older files get it by migration)
SNAPSHOTS_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS snapshots_by_stream ON snapshots (stream_id, version)"

KEYS_TABLE = """CREATE TABLE IF NOT EXISTS eskit_keys (
        subject TEXT PRIMARY KEY,
        master_id TEXT,
        wrapped BLOB,
        created_at INTEGER NOT NULL,
        erased_at INTEGER
    )"""

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        stream_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        event_id BLOB NOT NULL,
        type_name TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        data BLOB NOT NULL,
        metadata BLOB NOT NULL,
        recorded_at INTEGER NOT NULL,
        seq INTEGER,
        PRIMARY KEY (stream_id, position)
    ) WITHOUT ROWID""",
    "CREATE TABLE IF NOT EXISTS eskit_health (id INTEGER PRIMARY KEY, checked_at INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS eskit_store (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # files made before tracking get the table when next opened: every statement here runs at each open
    "CREATE TABLE IF NOT EXISTS eskit_tracking (upstream TEXT PRIMARY KEY, position INTEGER NOT NULL)",
    SNAPSHOTS_TABLE,
    KEYS_TABLE,
)

#: created after the ``seq`` column is known to exist (files made before the feed get it by migration)
FEED_INDEX = "CREATE UNIQUE INDEX IF NOT EXISTS events_by_seq ON events (seq)"
#: an event without a feed sequence (written by code from before the feed) would never reach a follower
FEED_TRIGGER = (
    "CREATE TRIGGER IF NOT EXISTS events_need_seq BEFORE INSERT ON events WHEN NEW.seq IS NULL"
    " BEGIN SELECT RAISE(ABORT, 'an event without a feed sequence: this writer predates the feed'); END"
)

INSERT_EVENT = (
    "INSERT INTO events (stream_id, position, event_id, type_name, schema_version,"
    " data, metadata, recorded_at, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SELECT_VERSION = "SELECT max(position) FROM events WHERE stream_id = ?"
SELECT_LAST_SEQ = "SELECT max(seq) FROM events"
SELECT_TRACKED = "SELECT position FROM eskit_tracking WHERE upstream = ?"
UPSERT_TRACKED = (
    "INSERT INTO eskit_tracking (upstream, position) VALUES (?, ?)"
    " ON CONFLICT (upstream) DO UPDATE SET position = excluded.position"
)
SELECT_STORE_ID = "SELECT value FROM eskit_store WHERE name = 'store_id'"
