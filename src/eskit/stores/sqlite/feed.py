"""The SQLite feed: every committed event once, in commit order, by its store-wide sequence number.

Why a follower never misses an event: an append's sequence numbers are taken
as ``max(seq) + 1 ...`` inside the ``BEGIN IMMEDIATE`` transaction that commits
it, under the database's one write lock. The next transaction to take numbers
starts only after this one committed or rolled back, so committed numbers are
always exactly ``1 .. max(seq)``: once a follower has read up to ``s``, no event
at or below ``s`` can commit later. A refused append (a version conflict) or a
failed commit stores nothing and so takes no number. One shard.

A row that cannot be read back (damaged, or forged) makes :meth:`SQLiteEventFeed.read`
raise :class:`~eskit.exceptions.DamagedEvent` with its sequence number, so a
follower can take the events before it and then decide what to do with it.
"""

from __future__ import annotations

from eskit.ports import EventFeed, FeedEvent
from eskit.stores.sqlite.connection import SQLiteConnection, translate_errors
from eskit.stores.sqlite.events import row_to_event
from eskit.stores.sqlite.schema import SELECT_STORE_ID

__all__ = ["SQLiteEventFeed"]

_SELECT = (
    "SELECT seq, stream_id, position, event_id, type_name, schema_version, data, metadata, recorded_at"
    " FROM events WHERE seq > ? ORDER BY seq LIMIT ?"
)


class SQLiteEventFeed(EventFeed):
    """The feed of one SQLite store (the same file, read through its own connections)."""

    def __init__(self, db: SQLiteConnection) -> None:
        self.db = db

    def read(self, *, shard: int = 0, after: int = 0, limit: int = 1000) -> list[FeedEvent]:
        if shard != 0:
            raise ValueError(f"the SQLite feed has one shard (0), not {shard}")
        conn = self.db.get()
        with translate_errors():
            rows = conn.execute(_SELECT, (after, limit)).fetchall()
        return [FeedEvent(0, row[0], row_to_event(row[1], row[2:], sequence=row[0])) for row in rows]

    def store_id(self) -> str | None:
        conn = self.db.get()
        with translate_errors():
            row = conn.execute(SELECT_STORE_ID).fetchone()
        return None if row is None else str(row[0])

    def head(self, *, shard: int = 0) -> int:
        conn = self.db.get()
        with translate_errors():
            (last,) = conn.execute("SELECT max(seq) FROM events").fetchone()
        return int(last or 0)
