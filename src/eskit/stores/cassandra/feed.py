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
definitely refused deletes its own hint (the ``writer`` column, a fresh id per
attempt, tells it from another writer's hint for the same head); an append whose
outcome stayed unknown keeps its hint until the stream passes it.

Several regions: a hint at the durable level (``QUORUM``) would cost a round
trip to another region before every proposal. So the hint before the proposal
is written at a local level (it survives the writer's crash), and the same hint
at the durable level goes alongside the Paxos round; the append is acknowledged
only once both are done, so an acknowledged append's hint survives the loss of
its region. A command found already done (a retry under its key) writes the
stream's hint at the durable level again before it answers (:meth:`announce`).
Followers list hints at the durable level, so they see every such hint wherever
they run. ``docs/read-side.md`` has the whole argument.
"""

from __future__ import annotations

import logging
import uuid
import zlib
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eskit.exceptions import EskitError, UnknownOutcome
from eskit.ports import StreamFeed
from eskit.stores.cassandra.session import CassandraSession, Deadline, translate
from eskit.stores.timestamps import from_micros, to_micros

__all__ = ["CassandraStreamFeed", "FeedStatements", "shard_of"]

log = logging.getLogger(__name__)


def shard_of(stream_id: str, shards: int) -> int:
    """The hint partition of a stream: stable across processes and versions (crc32, not ``hash``)."""
    return zlib.crc32(stream_id.encode("utf-8")) % shards


class FeedStatements:
    """The feed's prepared statements on one session's keyspace."""

    def __init__(self, session: CassandraSession) -> None:
        ks, p = session.settings.keyspace, session.prepare
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

    @property
    def two_phase(self) -> bool:
        """Whether the durable hint goes alongside the proposal (after a local one) rather than before it."""
        return self.db.local_hint_cl is not None

    def _bound(self, stream_id: str, head: int, writer: UUID, at_micros: int, level: Any) -> Any:
        statement = self.sql.insert_hint.bind((self.shard(stream_id), stream_id, head, writer, at_micros))
        statement.consistency_level = level
        return statement

    def hint(
        self, stream_id: str, head: int, writer: UUID, at_micros: int, *, deadline: Deadline | None = None
    ) -> None:
        """Record that an append intends to make ``head``; raises when it cannot (then nothing may be appended).

        At the local level when :attr:`two_phase` (the durable hint follows, see :meth:`hint_durably`).
        """
        level = self.db.local_hint_cl if self.two_phase else self.db.write_cl
        self.db.query(self._bound(stream_id, head, writer, at_micros, level), deadline=deadline)

    def hint_durably(self, stream_id: str, head: int, writer: UUID, at_micros: int) -> Any:
        """Start writing the same hint at the durable level; returns the request to :meth:`confirm` (or None)."""
        if not self.two_phase:
            return None
        statement = self._bound(stream_id, head, writer, at_micros, self.db.write_cl)
        return (statement, self.db.session.execute_async(statement, timeout=self.db.settings.command_timeout))

    def confirm(self, started: Any, stream_id: str, head: int, deadline: Deadline) -> None:
        """Wait for :meth:`hint_durably`'s write (sent again until ``deadline`` if it failed).

        Raises :class:`UnknownOutcome` when the hint could not be made durable: the append stands,
        but it must not be acknowledged; the client's retry under its key announces it again.
        """
        if started is None:
            return
        statement, future = started
        try:
            future.result()
            return
        except Exception as exc:
            first: Exception = exc
        try:
            self.db.query(statement, deadline=deadline)
        except EskitError as exc:
            raise UnknownOutcome(
                f"append to {stream_id!r} up to {head} is stored, but its feed hint could not reach a quorum of "
                f"replicas ({translate(first, 'hint')}; {exc}); retry the command with the same request id"
            ) from exc

    def announce(self, stream_id: str, head: int, *, deadline: Deadline | None = None) -> None:
        """Write a durable hint for the stream at ``head`` (for a command answered again under its key)."""
        statement = self._bound(stream_id, head, uuid.uuid4(), to_micros(datetime.now(UTC)), self.db.write_cl)
        self.db.query(statement, deadline=deadline)

    def withdraw(self, stream_id: str, head: int, writer: UUID) -> None:
        """Delete the hint of an append that was definitely refused, without waiting.

        Best effort: a hint left behind only costs followers a look, so the command that was refused
        goes on to decide again at once (one attempt, its failure logged).
        """
        statement = self.sql.delete_own.bind((self.shard(stream_id), stream_id, head, writer))
        statement.consistency_level = self.db.write_cl

        def left(exc: Exception) -> None:
            log.info("stale hint of %s@%d left: %s", stream_id, head, exc)

        try:
            future = self.db.session.execute_async(statement, timeout=self.db.settings.command_timeout)
            future.add_errback(left)
        except Exception as exc:  # the session is closing
            left(exc)

    # -- the follower's side ------------------------------------------------------------

    def pending(self, *, shard: int, limit: int = 1000, after: str | None = None) -> dict[str, int]:
        if after is None:
            statement = self.sql.pending.bind((shard, limit))
        else:
            statement = self.sql.pending_after.bind((shard, after, limit))
        # At the durable level: a hint on a quorum of replicas is seen wherever the follower runs,
        # even when the region that wrote it is gone.
        statement.consistency_level = self.db.write_cl
        return {row.stream_id: row.head for row in self.db.query(statement)}

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
