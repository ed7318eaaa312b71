"""Persistence ports: an event store and a snapshot store.

Both are small abstract classes; each backend provides ``<Tech>EventStore`` and
``<Tech>SnapshotStore`` adapters that pass the contract suite in
:mod:`eskit.testing.contract`.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from datetime import datetime

from eskit.events import NewEvent, Snapshot, StoredEvent

__all__ = ["EventStore", "SnapshotStore"]


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
        of that order. An unknown stream reads as empty.
        """

    def version(self, stream_id: str) -> int:
        """Return the stream's current version (0 when it has no events)."""
        last = self.read(stream_id, desc=True, limit=1)
        return last[0].position if last else 0

    def version_at(self, stream_id: str, when: datetime) -> int:
        """Return the position of the last event recorded at or before ``when`` (0 if none).

        Events are recorded in time order within a stream, so this is the
        stream's version as it stood at ``when``.
        """
        found = 0
        for event in self.read(stream_id):
            if event.recorded_at > when:
                break
            found = event.position
        return found

    def ping(self) -> None:
        """Check that the backend is reachable; raise ``StoreUnavailable`` if not."""
        self.version("__eskit_ping__")

    def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing
        """Release connections; the store must not be used afterwards."""


class SnapshotStore(abc.ABC):
    """Port: snapshots of aggregate state at a stream version."""

    @abc.abstractmethod
    def save(self, snapshot: Snapshot) -> None:
        """Store ``snapshot``; saving the same stream and version again replaces it."""

    @abc.abstractmethod
    def load(self, stream_id: str, *, lte: int | None = None) -> Snapshot | None:
        """Return the newest snapshot at or below version ``lte`` (any if None), or None."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the store must not be used afterwards."""
