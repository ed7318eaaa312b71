"""How the library's stored events become eskit events in streams, and back.

Ids: an aggregate's events go to the eskit stream named ``str(originator_id)`` (a UUID in
its canonical form); a stream id reads back as a UUID when ``ORIGINATOR_ID_TYPE`` is
``uuid`` (the default, as in the library's own SQLite module) and as text when ``text``.

Versions: the library numbers an aggregate's events from the version of its first event
(1 for its ``Aggregate``, 0 for some), eskit from position 1. Each event's metadata keeps
its originator version (``{"originator_version": v}``), and a stream's versions run on
from its first one without gaps, so position ``p`` holds version ``first + p - 1``. An
insert must therefore continue its aggregate's stream: a version already taken, one below
the stream's first, or one past a gap is refused with the library's ``IntegrityError``
(its own SQLite module would store the last two; its aggregates never write them).
An event written by eskit itself (no such metadata) reads as the version of its position.

Each stream's first version is remembered (it never changes) for a bounded number of
streams, least recently used first out, so that an insert or a ranged select costs no
extra read; a stream not remembered is read once, or, for an insert, tried as a new
stream first (the common case: the first save of a new aggregate).
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import orjson
from eventsourcing import persistence as es

from eskit.events import NewEvent, StoredEvent
from eskit.ports import EventStore

__all__ = ["FIRST_VERSIONS_KEPT", "VERSION_KEY", "OriginatorIds", "Plan", "StreamMap", "to_new", "version_of"]

#: how many streams' first versions a recorder remembers (an entry is a stream id and an int)
FIRST_VERSIONS_KEPT = 10_000
VERSION_KEY = "originator_version"


def version_of(event: StoredEvent) -> int:
    """The originator version an event was written with (its position when written by eskit itself)."""
    if event.metadata.startswith(b'{"' + VERSION_KEY.encode()):  # skip parsing eskit's own metadata
        try:
            found = orjson.loads(event.metadata).get(VERSION_KEY)
        except orjson.JSONDecodeError:
            found = None
        if isinstance(found, int):
            return found
    return event.position


class OriginatorIds:
    """Originator ids to stream ids and back, as ``ORIGINATOR_ID_TYPE`` says (``uuid`` or ``text``)."""

    def __init__(self, kind: Literal["uuid", "text"] = "uuid") -> None:
        self.kind = kind

    @staticmethod
    def stream(originator_id: uuid.UUID | str) -> str:
        return str(originator_id)

    def originator(self, stream_id: str) -> uuid.UUID | str:
        if self.kind == "text":
            return stream_id
        try:
            return uuid.UUID(stream_id)
        except ValueError:
            raise es.DataError(f"stream {stream_id!r} is not named by a UUID (set ORIGINATOR_ID_TYPE=text)") from None

    def to_library(self, event: StoredEvent) -> es.StoredEvent:
        return es.StoredEvent(
            originator_id=self.originator(event.stream_id),
            originator_version=version_of(event),
            topic=event.type_name,
            state=event.data,
        )


def to_new(stored: es.StoredEvent, when: datetime) -> NewEvent:
    """The eskit event that keeps a library event: its topic as the type, its state as the data."""
    return NewEvent(
        type_name=stored.topic,
        schema_version=1,
        data=stored.state,
        metadata=orjson.dumps({VERSION_KEY: stored.originator_version}),
        recorded_at=when,
    )


@dataclass
class Plan:
    """The appends an insert makes: one per stream, in the order the streams first appear.

    ``indices[i]`` are the places, in the caller's list, of the events of ``appends[i]``;
    ``guessed`` the streams whose first version was not known, appended as new streams.
    """

    appends: list[tuple[str, list[NewEvent], int]] = field(default_factory=list)
    indices: list[list[int]] = field(default_factory=list)
    firsts: list[int] = field(default_factory=list)
    guessed: set[str] = field(default_factory=set)


class StreamMap:
    """Plans inserts onto an event store and remembers each stream's first version (thread-safe)."""

    def __init__(self, store: EventStore, ids: OriginatorIds, *, kept: int = FIRST_VERSIONS_KEPT) -> None:
        self.store = store
        self.ids = ids
        self.kept = kept
        self._firsts: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def remembered(self, stream_id: str) -> int | None:
        with self._lock:
            first = self._firsts.get(stream_id)
            if first is not None:
                self._firsts.move_to_end(stream_id)
            return first

    def learn(self, stream_id: str, first: int) -> None:
        with self._lock:
            self._firsts[stream_id] = first
            self._firsts.move_to_end(stream_id)
            while len(self._firsts) > self.kept:
                self._firsts.popitem(last=False)

    def learn_from(self, events: Sequence[StoredEvent]) -> None:
        """Remember a stream's first version from any of its events (a read costs nothing more)."""
        if events:
            event = events[0]
            self.learn(event.stream_id, version_of(event) - event.position + 1)

    def first(self, stream_id: str) -> int | None:
        """The stream's first version (read once if not remembered), or None for a stream without events."""
        first = self.remembered(stream_id)
        if first is None:
            found = self.store.read(stream_id, lte=1)
            self.learn_from(found)
            first = version_of(found[0]) if found else None
        return first

    def plan(self, stored_events: Sequence[es.StoredEvent], *, read_unknown: bool = False) -> Plan:
        """The appends that store ``stored_events``; raises the library's ``IntegrityError`` when they cannot.

        A stream whose first version is not remembered is read when ``read_unknown``, and
        otherwise planned as a new stream (and named in ``guessed``).
        """
        by_stream: dict[str, list[int]] = {}
        for index, stored in enumerate(stored_events):
            by_stream.setdefault(self.ids.stream(stored.originator_id), []).append(index)
        plan = Plan()
        when = datetime.now(UTC)
        for stream_id, indices in by_stream.items():
            versions = [stored_events[i].originator_version for i in indices]
            if versions != list(range(versions[0], versions[0] + len(versions))):
                raise es.IntegrityError(f"the versions of {stream_id} in one insert must run on by one: {versions}")
            first = self.remembered(stream_id)
            if first is None and read_unknown:
                first = self.first(stream_id)
            if first is None:
                if not read_unknown:
                    plan.guessed.add(stream_id)
                first = versions[0]
            expected = versions[0] - first
            if expected < 0:
                raise es.IntegrityError(f"version {versions[0]} of {stream_id} is below its first version {first}")
            plan.appends.append((stream_id, [to_new(stored_events[i], when) for i in indices], expected))
            plan.indices.append(indices)
            plan.firsts.append(first)
        return plan

    def stored(self, plan: Plan, *, only: Sequence[int] | None = None) -> None:
        """Remember the first versions of the streams a plan's appends (or those at ``only``) just began."""
        for i in range(len(plan.appends)) if only is None else only:
            stream_id, _, expected = plan.appends[i]
            if expected == 0:
                self.learn(stream_id, plan.firsts[i])
