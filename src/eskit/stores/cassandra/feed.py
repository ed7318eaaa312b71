"""The Cassandra feed: "hint, then append", followed per shard.

Cassandra has no commit order across partitions, so the feed is not one
sequence. Instead every append first writes a *hint* (an ordinary quorum write,
no Paxos) naming its stream and the head it intends to create, into the
``feed_hints`` table, one partition per shard (``crc32(stream) mod shards``)::

    feed_hints  PRIMARY KEY ((shard), stream_id, head, writer)   at

Only then is the unchanged conditional append proposed. A follower lists a
shard's hinted streams, reads each one's head ``h``, brings its projections up
to ``h`` from their own per-stream checkpoints, and then *settles* the stream:
it deletes the stream's hints at or below ``h``. Hints above ``h`` (an append in
flight, refused or unresolved) stay.

Why no accepted event is missed: its hint was written before its append was
proposed, and it is deleted only by a settle at some ``h`` at or above its head,
which happens after the events up to ``h`` were applied. Appends to one stream
commit in strictly increasing head order through Paxos on its partition, so an
append that commits after the follower read ``h`` has a head above ``h``, and
its hint survives the settle. No clock is involved. A writer whose append was
definitely refused deletes its own hint (the ``writer`` column, the append's
first event id, tells it from another writer's hint for the same head); an
append whose outcome stayed unknown keeps its hint until the stream passes it.
"""

from __future__ import annotations

import zlib
from datetime import datetime
from uuid import UUID

from eskit.ports import StreamFeed
from eskit.stores.cassandra.session import CassandraSession
from eskit.stores.timestamps import from_micros

__all__ = ["CassandraStreamFeed", "FeedStatements", "shard_of"]


def shard_of(stream_id: str, shards: int) -> int:
    """The hint partition of a stream: stable across processes and versions (crc32, not ``hash``)."""
    return zlib.crc32(stream_id.encode("utf-8")) % shards


class FeedStatements:
    """The feed's prepared statements on one session's keyspace."""

    def __init__(self, session: CassandraSession) -> None:
        ks, p = session.settings.keyspace, session.session.prepare
        self.insert_hint = p(f"INSERT INTO {ks}.feed_hints (shard, stream_id, head, writer, at) VALUES (?, ?, ?, ?, ?)")
        self.delete_own = p(
            f"DELETE FROM {ks}.feed_hints WHERE shard = ? AND stream_id = ? AND head = ? AND writer = ?"
        )
        self.settle = p(f"DELETE FROM {ks}.feed_hints WHERE shard = ? AND stream_id = ? AND head <= ?")
        self.pending = p(
            f"SELECT stream_id, max(head) AS head FROM {ks}.feed_hints WHERE shard = ? GROUP BY stream_id LIMIT ?"
        )
        self.pending_after = p(
            f"SELECT stream_id, max(head) AS head FROM {ks}.feed_hints WHERE shard = ? AND stream_id > ?"
            " GROUP BY stream_id LIMIT ?"
        )
        self.count = p(f"SELECT stream_id, head, at FROM {ks}.feed_hints WHERE shard = ? LIMIT ?")


class CassandraStreamFeed(StreamFeed):
    """The hints of one keyspace; see the module docstring."""

    def __init__(self, connection: CassandraSession, shards: int) -> None:
        self.db = connection
        self._shards = shards
        self.sql = FeedStatements(connection)

    @property
    def shards(self) -> int:
        return self._shards

    def shard(self, stream_id: str) -> int:
        return shard_of(stream_id, self._shards)

    # -- the write path (called by the event store) -----------------------------------

    def hint(self, stream_id: str, head: int, writer: UUID, at_micros: int) -> None:
        """Record that an append intends to make ``head``; raises when it cannot (then nothing may be appended)."""
        statement = self.sql.insert_hint.bind((self.shard(stream_id), stream_id, head, writer, at_micros))
        statement.consistency_level = self.db.write_cl
        self.db.query(statement)

    def withdraw(self, stream_id: str, head: int, writer: UUID) -> None:
        """Delete the hint of an append that was definitely refused (best effort: a stale hint costs a read)."""
        statement = self.sql.delete_own.bind((self.shard(stream_id), stream_id, head, writer))
        statement.consistency_level = self.db.write_cl
        self.db.query(statement)

    # -- the follower's side ------------------------------------------------------------

    def pending(self, *, shard: int, limit: int = 1000, after: str | None = None) -> dict[str, int]:
        if after is None:
            rows = self.db.query(self.sql.pending, (shard, limit))
        else:
            rows = self.db.query(self.sql.pending_after, (shard, after, limit))
        return {row.stream_id: row.head for row in rows}

    def settle(self, *, shard: int, stream_id: str, upto: int) -> None:
        statement = self.sql.settle.bind((shard, stream_id, upto))
        statement.consistency_level = self.db.write_cl
        self.db.query(statement)

    def backlog(self, *, limit: int = 10_000) -> tuple[int, datetime | None]:
        """How many hints stand (appends not yet settled, counted up to ``limit`` per shard) and the oldest's time."""
        count, oldest = 0, None
        results = self.db.query_all([(self.sql.count, (shard, limit)) for shard in range(self._shards)])
        for rows in results:
            for row in rows:
                count += 1
                if row.at is not None and (oldest is None or row.at < oldest):
                    oldest = row.at
        return count, (from_micros(oldest) if oldest is not None else None)
