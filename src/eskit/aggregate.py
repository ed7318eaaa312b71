"""The aggregate base class, in the explicit style.

A command method checks its rules against the current state, then calls
:meth:`Aggregate.trigger` with the event that records the decision; ``trigger``
applies the event (the only place state changes) and keeps it as pending until
the repository saves it.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self

from eskit.events import DomainEvent, EventMetadata
from eskit.privacy.keys import ErasedKey, StreamKey

__all__ = ["Aggregate", "metadata_for"]


def metadata_for(
    events: Sequence[DomainEvent], metadata: EventMetadata | Sequence[EventMetadata]
) -> list[EventMetadata]:
    """One metadata per event: ``metadata`` repeated, or checked to be one per event."""
    if isinstance(metadata, EventMetadata):
        return [metadata] * len(events)
    if len(metadata) != len(events):
        raise ValueError(f"{len(metadata)} metadata for {len(events)} events")
    return list(metadata)


class Aggregate(abc.ABC):
    """Base class of aggregates: state folded from events, with pending events.

    ``version`` is the position of the last event applied, pending ones
    included. Aggregates that support snapshots set ``snapshot_type`` (a
    stable name) and ``snapshot_version`` (bumped when the state schema
    changes) and implement :meth:`to_snapshot` and :meth:`from_snapshot`.
    """

    snapshot_type: ClassVar[str] = ""
    snapshot_version: ClassVar[int] = 1

    def __init__(self, aggregate_id: str) -> None:
        self.id = aggregate_id
        self.version = 0
        self._pending: list[DomainEvent] = []
        #: (version, bytes) of the newest snapshot this object was loaded from or stored as, None when
        #: none is known; the repository spaces the snapshots of a big state by it
        self.snapshot_taken: tuple[int, int] | None = None
        #: the key of the aggregate's stream as its repository found it (where the codec seals the
        #: stream's personal fields): kept here, so a cached aggregate's next command needs no lookup
        self.stream_key: StreamKey = None

    @property
    def key_erased(self) -> bool:
        """Whether the stream's key was erased (its personal fields read as ``ERASED``)."""
        return isinstance(self.stream_key, ErasedKey)

    @abc.abstractmethod
    def apply(self, event: DomainEvent) -> None:
        """Change the state as ``event`` says. Must not check rules or fail."""

    def observe(self, event: DomainEvent, metadata: EventMetadata, position: int) -> None:  # noqa: B027
        """Hook called with each event's metadata and position once it is stored (default: nothing).

        Aggregates that must remember something about the command (such as its
        request id, for idempotency, or the time it was decided) do it here; it
        runs on load and after save, in stream order.
        """

    def trigger(self, event: DomainEvent) -> None:
        """Apply ``event`` and keep it as pending, to be saved by the repository."""
        self.apply(event)
        self.version += 1
        self._pending.append(event)

    def replay(self, event: DomainEvent, metadata: EventMetadata) -> None:
        """Fold one stored event into the state (used by the repository when loading)."""
        self.apply(event)
        self.version += 1
        self.observe(event, metadata, self.version)

    @property
    def pending_events(self) -> tuple[DomainEvent, ...]:
        """Events triggered since the last load or save, oldest first."""
        return tuple(self._pending)

    @property
    def stored_version(self) -> int:
        """The stream version the pending events must be appended after."""
        return self.version - len(self._pending)

    def mark_saved(self, metadata: EventMetadata | Sequence[EventMetadata]) -> None:
        """Forget pending events after the repository stored them with ``metadata``.

        ``metadata`` is one value for every pending event, or one per event.
        """
        each = metadata_for(self._pending, metadata)
        start = self.stored_version
        for offset, (event, meta) in enumerate(zip(self._pending, each, strict=True), start=1):
            self.observe(event, meta, start + offset)
        self._pending.clear()

    def to_snapshot(self) -> Mapping[str, Any]:
        """Return the state as a JSON-like dict (override to support snapshots)."""
        raise NotImplementedError(f"{type(self).__name__} does not support snapshots")

    @classmethod
    def from_snapshot(cls, aggregate_id: str, version: int, state: Mapping[str, Any]) -> Self:
        """Rebuild an aggregate from :meth:`to_snapshot` output at ``version``."""
        raise NotImplementedError(f"{cls.__name__} does not support snapshots")
