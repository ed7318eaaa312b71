"""Persistence ports: an event store, a snapshot store, and the feed a read side follows.

Small abstract classes; each backend provides ``<Tech>EventStore``,
``<Tech>SnapshotStore`` (and, where it has one, ``<Tech>EventFeed``) adapters
that pass the contract suites in :mod:`eskit.testing.contract`.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from eskit.events import NewEvent, Snapshot, StoredEvent
from eskit.exceptions import EskitError
from eskit.timetravel import search_version_at

__all__ = ["EventFeed", "EventStore", "FeedEvent", "SnapshotStore", "StreamFeed"]


class EventStore(abc.ABC):
    """Port: append-only streams of events with optimistic concurrency.

    A stream's events are numbered 1, 2, 3 ... without gaps; a stream's
    *version* is the position of its last event (0 for an empty stream).
    """

    @abc.abstractmethod
    def append(self, stream_id: str, events: Sequence[NewEvent], *, expected_version: int) -> int:
        """Append ``events`` after position ``expected_version``, all or nothing.

        Returns the stream's new version. Raises
        :class:`~eskit.exceptions.ConcurrencyError` (and writes nothing) when the
        stream's version is not ``expected_version``;
        :class:`~eskit.exceptions.InterfaceError` for an empty list or a negative
        version; :class:`~eskit.exceptions.OperationalError` subclasses when the
        backend fails. Once it returns, the events are durable.
        """

    @abc.abstractmethod
    def read(
        self,
        stream_id: str,
        *,
        gt: int = 0,
        lte: int | None = None,
        limit: int | None = None,
        desc: bool = False,
    ) -> list[StoredEvent]:
        """Return the stream's events with ``gt < position <= lte``, in order.

        ``desc`` returns them newest first; ``limit`` keeps the first ``limit``
        of that order. An unknown stream reads as empty. A stored row that cannot
        be read back (damaged, or forged) raises :class:`~eskit.exceptions.DamagedEvent`
        naming it, so a reader can go on after it.
        """

    def append_many(self, appends: Sequence[tuple[str, Sequence[NewEvent], int]]) -> list[int | EskitError]:
        """Make several appends, each ``(stream_id, events, expected_version)`` as :meth:`append` would.

        For bulk loads (import, copy): a store may commit them together or run
        them at once. Each append is all or nothing on its own, and each gets
        its own answer, in order: the stream's new version, or the
        :class:`~eskit.exceptions.EskitError` that append met (a
        :class:`~eskit.exceptions.ConcurrencyError` for a stale version), in
        which case it wrote nothing.
        """
        answers: list[int | EskitError] = []
        for stream_id, events, expected in appends:
            try:
                answers.append(self.append(stream_id, events, expected_version=expected))
            except EskitError as exc:
                answers.append(exc)
        return answers

    @abc.abstractmethod
    def stream_ids(self, *, after: str | None = None, limit: int = 1000) -> list[str]:
        """Return up to ``limit`` ids of streams that hold events, in the store's scan order, after ``after``.

        The scan order is the store's own (sorted ids, or a hash order) and
        stable: walking page by page, each page starting after the previous
        page's last id, meets every stream that held events when the walk
        began exactly once. A stream created during the walk may or may not be
        met (a follower of the feed catches those).
        """

    def version(self, stream_id: str) -> int:
        """Return the stream's current version (0 when it has no events)."""
        last = self.read(stream_id, desc=True, limit=1)
        return last[0].position if last else 0

    def version_at(self, stream_id: str, when: datetime) -> int:
        """Return the stream's version as it stood at ``when``: its last event recorded by then (0 if none).

        Bounded cost: a :func:`search_version_at` over :meth:`recorded_times`,
        the same on every store. Stores override :meth:`recorded_times`, not this.
        """
        return search_version_at(self.version(stream_id), when, lambda ps: self.recorded_times(stream_id, ps))

    def recorded_times(self, stream_id: str, positions: Sequence[int]) -> dict[int, datetime]:
        """Return the recorded time of each of ``positions`` (all of which exist in the stream)."""
        found: dict[int, datetime] = {}
        for position in positions:
            for event in self.read(stream_id, gt=position - 1, lte=position):
                found[event.position] = event.recorded_at
        return found

    def ping(self) -> None:
        """Check that the backend is reachable; raise ``StoreUnavailable`` if not."""
        self.version("__eskit_ping__")

    #: whether :meth:`all_or_nothing` commits its block whole (a capability, like ``concurrent_appends``)
    atomic_loads: bool = False

    def all_or_nothing(self) -> contextlib.AbstractContextManager[bool]:
        """A block whose writes by this thread commit together when it ends, or not at all if it raises.

        Yields :attr:`atomic_loads`: a store that cannot (Cassandra has no transaction across
        streams) yields False, and each append commits on its own as usual. Meant for a bulk
        load into a store nothing else writes to meanwhile: on SQLite the block holds the
        store's one write lock until it ends.
        """
        return contextlib.nullcontext(False)

    #: seconds one command may spend on this store in all, its conflict retries and its wait for its
    #: aggregate's turn included (see :mod:`eskit.budget`); None: no bound beyond each request's own
    command_budget: float | None = None

    def read_latest(self, stream_id: str) -> bool:
        """Make the next read of ``stream_id`` see every append acknowledged anywhere; False when every
        read does already.

        A store whose plain reads may miss an append just acknowledged elsewhere (on Cassandra with
        several regions, a local read before the write's commit reached this region) reads that
        stream at the serial level next, and says True. A command refused on what a read showed asks
        for it before the refusal stands (see :class:`~eskit.CommandRunner`). SQLite and memory
        return False: their reads miss nothing.
        """
        return False

    def announce(self, stream_id: str, version: int) -> None:  # noqa: B027 - optional hook
        """Make sure the store's feed tells followers of ``stream_id`` up to ``version``, durably.

        Called before a command found already done (a retry under its key) is answered again: its
        first attempt may have stored its events and failed before the feed's record of them was
        durable. Stores whose feed is their commit order (SQLite, memory) have nothing to do.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing
        """Release connections; the store must not be used afterwards."""


class SnapshotStore(abc.ABC):
    """Port: snapshots of aggregate state at a stream version."""

    #: a write costs a network round trip: repositories write snapshots after the command's answer,
    #: in the background, rather than on its path (a snapshot is only a cache of the events)
    deferred_writes: bool = False

    @abc.abstractmethod
    def save(self, snapshot: Snapshot) -> None:
        """Store ``snapshot``; saving the same stream and version again replaces it."""

    @abc.abstractmethod
    def load(self, stream_id: str, *, lte: int | None = None) -> Snapshot | None:
        """Return the newest snapshot at or below version ``lte`` (any if None), or None."""

    @abc.abstractmethod
    def versions(self, stream_id: str) -> list[int]:
        """Return the versions of the stream's stored snapshots, oldest first."""

    @abc.abstractmethod
    def delete(self, stream_id: str, versions: Sequence[int]) -> None:
        """Remove the stream's snapshots at ``versions`` (a version with none is ignored)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the store must not be used afterwards."""


@dataclass(frozen=True)
class FeedEvent:
    """An accepted event as a follower of the feed meets it.

    ``sequence`` is its place in its shard of the feed: 1, 2, 3 ... in commit
    order, so a follower that has read up to ``s`` never later meets an event
    of that shard at or below ``s``.
    """

    shard: int
    sequence: int
    event: StoredEvent


class EventFeed(abc.ABC):
    """Port: every accepted event, exactly once per shard, in an order a follower can resume from.

    A follower keeps, per shard, the sequence it has applied up to (its
    checkpoint) and asks for what comes after. The feed never shows an event
    whose append was refused or whose outcome was resolved as "did not happen",
    and within a stream its events come in position order. Stores with one
    commit order (memory, SQLite) have one shard.
    """

    @property
    def shards(self) -> int:
        """How many independent shards the feed has; followers read each from its own checkpoint."""
        return 1

    @abc.abstractmethod
    def read(self, *, shard: int = 0, after: int = 0, limit: int = 1000) -> list[FeedEvent]:
        """Return up to ``limit`` events of ``shard`` with a sequence above ``after``, in order.

        Raises :class:`~eskit.exceptions.DamagedEvent` (with its ``sequence``) when one of them
        cannot be read back; a read that stops before it returns the events ahead of it.
        """

    @abc.abstractmethod
    def head(self, *, shard: int = 0) -> int:
        """The sequence of the shard's last accepted event (0 for none): a follower's lag is ``head - checkpoint``."""

    def store_id(self) -> str | None:
        """The identity of the store this feed belongs to: made once with the store, never changed.

        A follower that keeps its checkpoint apart from the store (a read-model file) records it,
        to tell a store made anew from the one it followed. None where the store has none.
        """
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the feed must not be used afterwards."""


class StreamFeed(abc.ABC):
    """Port: the streams that may hold accepted events a follower has not applied (a store without one order).

    Where a store has no commit order across streams (Cassandra), its feed
    tells a follower *which streams* to look at instead of giving it a
    sequence: every append leaves a hint before it is proposed, and a follower
    that has applied a stream up to a head it read *settles* the stream, which
    removes its hints at or below that head. A follower that keeps listing and
    settling never misses an accepted event, and reads each stream in position
    order from its own per-stream checkpoint.
    """

    @property
    @abc.abstractmethod
    def shards(self) -> int:
        """How many shards the hints are spread over; a follower lists each."""

    @abc.abstractmethod
    def pending(self, *, shard: int, limit: int = 1000, after: str | None = None) -> dict[str, int]:
        """Up to ``limit`` hinted streams of ``shard`` in stream order after ``after``, each with its highest hint."""

    @abc.abstractmethod
    def settle(self, *, shard: int, stream_id: str, upto: int) -> None:
        """Remove the stream's hints at or below ``upto``: call only once every follower applied it up to there."""

    @abc.abstractmethod
    def backlog(self, *, limit: int = 10_000) -> tuple[int, datetime | None]:
        """How many hints stand (up to ``limit`` per shard) and the time of the oldest (None for none)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the feed must not be used afterwards."""
