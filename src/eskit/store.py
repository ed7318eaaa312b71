"""Persistence ports: an event store and a snapshot store.

Both are small abstract classes; each backend provides ``<Tech>EventStore`` and
``<Tech>SnapshotStore`` adapters that pass the contract suite in
:mod:`eskit.testing.contract`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from eskit.events import NewEvent, Snapshot, StoredEvent
from eskit.exceptions import OperationalError

__all__ = ["TIME_STRIDE", "EventStore", "SnapshotStore", "search_version_at", "time_probes"]

#: positions probed per round of the time-travel search; the schedule is the same on every store,
#: so that stores agree even on a history whose recorded times go backwards
TIME_PROBES = 64
#: over a range of TIME_PROBES * TIME_STRIDE positions or more, a round probes the positions
#: 1 + k * stride instead (stride a power-of-two multiple of this, at most 256 probes), which a
#: store can keep an index of (Cassandra does, so that round reads one partition)
TIME_STRIDE = 1024


def time_probes(low: int, high: int) -> list[int]:
    """The positions one round of the time-travel search probes in ``(low, high]``, ascending."""
    span = high - low
    if span <= TIME_PROBES:
        return list(range(low + 1, high + 1))
    if span >= TIME_PROBES * TIME_STRIDE:
        stride = TIME_STRIDE
        while span // stride > 256:
            stride *= 2
        first = low + 1 + (-low % stride)  # the first position 1 + k * stride above low
        return list(range(first, high + 1, stride))
    return sorted({low + -(-span * i // TIME_PROBES) for i in range(1, TIME_PROBES + 1)})


def search_version_at(head: int, when: datetime, recorded: Callable[[Sequence[int]], Mapping[int, datetime]]) -> int:
    """The position of the last event recorded at or before ``when``, found by a k-ary search.

    ``recorded`` maps positions to their recorded times, one round trip for a
    round of :func:`time_probes`; a search over 100,000 events takes 3 rounds,
    over 100 events 2. Exact when recorded times never decrease along the
    stream (the service's decision time keeps them so); for an older stream
    whose times go backwards, every store runs this same search over the same
    times, so they all give the same answer.
    """
    low, high = 0, head  # the answer lies in [low, high]
    while low < high:
        chosen = time_probes(low, high)
        times = recorded(chosen)
        for position in chosen:
            at = times.get(position)
            if at is None:
                raise OperationalError(f"event {position} of the stream could not be read for time travel")
            if at > when:
                high = position - 1
                break
            low = position
    return low


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
