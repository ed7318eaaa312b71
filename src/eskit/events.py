"""Domain events, their metadata, and the records stores keep.

A domain event is a frozen dataclass that subclasses :class:`DomainEvent` and
declares a stable ``type_name`` (never a module path, so code can move) and a
schema ``version`` (bumped whenever its fields change, with an upcaster from the
previous version registered in the :class:`~eskit.codec.EventCodec`).

Stores never see domain events: they keep :class:`NewEvent` / :class:`StoredEvent`
records whose payload and metadata are already encoded bytes.

Personal data: an event class names its *personal* fields (``personal``), which
the codec seals with the stream's own key where the application asks for it
(:mod:`eskit.privacy`). Once that key is erased they read back as :data:`ERASED`.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar

__all__ = [
    "ERASED",
    "DomainEvent",
    "Erased",
    "EventMetadata",
    "NewEvent",
    "Snapshot",
    "StoredEvent",
    "is_erased",
]


class Erased(str):
    """What a personal field reads as once its stream's key was erased: text that says so.

    A ``str`` so that code written for the field's value goes on working (it shows
    ``[erased]``); :func:`is_erased` tells it apart from any value a member sent.
    """

    __slots__ = ()


#: the value of every personal field whose key was erased
ERASED = Erased("[erased]")


def is_erased(value: object) -> bool:
    """Whether ``value`` is the marker of a personal field whose key was erased."""
    return isinstance(value, Erased)


@dataclass(frozen=True)
class DomainEvent:
    """Base class of domain events: immutable, past tense, named and versioned.

    Subclasses set ``type_name`` and, when their schema changes, ``version``.
    Field values must be JSON-compatible after :meth:`to_dict` (strings,
    numbers, booleans, None, lists and dicts); datetimes are stored as ISO
    strings by the serializer and must be converted back in ``from_dict``
    overrides when an event holds them.
    """

    type_name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    #: the fields that hold personal data: sealed with the stream's key where the codec is told to
    personal: ClassVar[frozenset[str]] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        """Return the event's fields as a plain dict (the stored payload)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DomainEvent:
        """Build the event from a payload already upcast to ``cls.version``.

        Unknown keys are ignored, so an event written by newer code with an
        extra field can still be read by older code.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class EventMetadata:
    """What is known about the decision that produced an event, kept beside it.

    ``recorded_at`` is the time the command was decided (from the injected
    clock); ``request_id`` identifies the command for idempotency;
    ``causation_id`` the message that caused it; ``extra`` holds anything an
    application wants to keep with the event (for example the answer it gave).
    ``erased`` says that the parts the codec seals were erased with the stream's
    key: they read as :data:`ERASED` (or empty, for ``extra``).
    """

    recorded_at: datetime
    request_id: str | None = None
    command: str | None = None
    causation_id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    erased: bool = False


@dataclass(frozen=True)
class NewEvent:
    """An encoded event about to be appended to a stream.

    ``event_id`` is unique per event and lets a store recognise its own write
    when the outcome of an append was unknown.
    """

    type_name: str
    schema_version: int
    data: bytes
    metadata: bytes
    recorded_at: datetime
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass(frozen=True)
class StoredEvent:
    """An encoded event as a store returns it: at ``position`` in its stream (1-based)."""

    stream_id: str
    position: int
    type_name: str
    schema_version: int
    data: bytes
    metadata: bytes
    recorded_at: datetime
    event_id: uuid.UUID

    def to_new(self) -> NewEvent:
        """The same event, ready to append elsewhere (same id, bytes and time): for copies and restores."""
        return NewEvent(
            type_name=self.type_name,
            schema_version=self.schema_version,
            data=self.data,
            metadata=self.metadata,
            recorded_at=self.recorded_at,
            event_id=self.event_id,
        )


@dataclass(frozen=True)
class Snapshot:
    """An encoded aggregate state as of ``version`` (the last event folded into it).

    ``type_name`` and ``schema_version`` name the state's schema, so a snapshot
    written by older code is upcast on read, or ignored when it cannot be.
    """

    stream_id: str
    version: int
    type_name: str
    schema_version: int
    state: bytes
    recorded_at: datetime
