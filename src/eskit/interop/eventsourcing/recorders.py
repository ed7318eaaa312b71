"""The library's aggregate and application recorders on eskit's event store, feed and snapshot store.

What each store gives when one insert holds events of several aggregates (``Application.save``
of several aggregates, a process's policy):

* SQLite: all or nothing. The appends go to the store in one ``append_all`` unit, checked and
  written in one transaction, so a refused one leaves every other unwritten.
* Cassandra: each aggregate's events on their own. Cassandra has no transaction across
  partitions; each stream's append is linearizable, and a refused one raises the library's
  ``IntegrityError`` naming it while the other aggregates' events of the call stay stored.

Notifications (the library's application sequence) are the feed's: on SQLite its store-wide
sequence, contiguous, in commit order; on Cassandra there is no such sequence (see
``docs/eventsourcing.md``) and its application recorder raises ``NotSupportedError`` for them.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing import persistence as es

from eskit.events import Snapshot, StoredEvent
from eskit.exceptions import ConcurrencyError, EskitError
from eskit.interop.eventsourcing.errors import translated
from eskit.interop.eventsourcing.streams import OriginatorIds, Plan, StreamMap
from eskit.interop.eventsourcing.subscription import FeedSubscription
from eskit.ports import EventFeed, EventStore, SnapshotStore
from eskit.stores.registry import Stores

if TYPE_CHECKING:
    from eskit.stores.sqlite import SQLiteEventStore

__all__ = [
    "CassandraAggregateRecorder",
    "CassandraApplicationRecorder",
    "SQLiteAggregateRecorder",
    "SQLiteApplicationRecorder",
    "SnapshotRecorder",
    "sqlite_event_store",
]

#: why a Cassandra store numbers no notifications (the message of its NotSupportedError)
NO_NOTIFICATIONS = (
    "a Cassandra store has no order across streams, so it cannot number notifications: "
    "follow it with eskit's projection runner (see docs/eventsourcing.md)"
)


def sqlite_event_store(stores: Stores) -> SQLiteEventStore:
    """The stores' event store if it is eskit's SQLite store, else the library's ``InterfaceError``."""
    from eskit.stores.sqlite import SQLiteEventStore  # here, so that importing this module loads no adapter

    if not isinstance(stores.events, SQLiteEventStore):
        raise es.InterfaceError(f"this recorder needs eskit's SQLite store, not {stores.url!r}")
    return stores.events


class _EventsRecorder(es.AggregateRecorder):
    """An aggregate's events as an eskit stream (see :mod:`eskit.interop.eventsourcing.streams`)."""

    def __init__(self, stores: Stores, ids: OriginatorIds) -> None:
        self.stores = stores
        self.streams = StreamMap(stores.events, ids)

    @property
    def store(self) -> EventStore:
        return self.stores.events

    def insert_events(self, stored_events: Sequence[es.StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """Append the events, each aggregate's after its stream's last; ``IntegrityError`` if one moved on."""
        self._insert(stored_events, kwargs.get("tracking"))
        return None

    def _insert(self, stored_events: Sequence[es.StoredEvent], tracking: es.Tracking | None) -> list[int] | None:
        """Store the events (and the tracking record); their notification ids where the store has them."""
        raise NotImplementedError

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[es.StoredEvent]:
        stream_id = self.streams.ids.stream(originator_id)
        with translated():
            if gt is None and lte is None:
                found = self.store.read(stream_id, desc=desc, limit=limit)
            else:
                first = self.streams.first(stream_id)
                if first is None or (lte is not None and lte < first):
                    return []
                after = 0 if gt is None else max(0, gt - first + 1)
                upto = None if lte is None else lte - first + 1
                found = self.store.read(stream_id, gt=after, lte=upto, desc=desc, limit=limit)
        self.streams.learn_from(found)  # any event tells its stream's first version: free to remember
        return [self.streams.ids.to_library(event) for event in found]


class SQLiteAggregateRecorder(_EventsRecorder):
    """On eskit's SQLite store: an insert's appends (and tracking record) commit whole or not at all."""

    def __init__(self, stores: Stores, ids: OriginatorIds) -> None:
        super().__init__(stores, ids)
        self.sqlite = sqlite_event_store(stores)

    def _insert(self, stored_events: Sequence[es.StoredEvent], tracking: es.Tracking | None) -> list[int] | None:
        track = None if tracking is None else (tracking.application_name, tracking.notification_id)
        with translated():
            plan = self.streams.plan(stored_events)
            if not plan.appends and track is None:
                return None
            try:
                taken = self.sqlite.append_all(plan.appends, tracking=track)
            except ConcurrencyError as exc:
                if exc.stream_id not in plan.guessed:
                    raise
                # A stream tried as new was not: plan again from what the store holds, once.
                plan = self.streams.plan(stored_events, read_unknown=True)
                taken = self.sqlite.append_all(plan.appends, tracking=track)
        self.streams.stored(plan)
        ids = [0] * len(stored_events)
        for indices, numbers in zip(plan.indices, taken, strict=True):
            for index, number in zip(indices, numbers, strict=True):
                ids[index] = number
        return ids


class SQLiteApplicationRecorder(SQLiteAggregateRecorder, es.ApplicationRecorder):
    """Notifications are the SQLite feed: its store-wide sequence, contiguous, in commit order."""

    #: how often a subscription looks for events written by other processes (seconds)
    poll_interval = 0.1

    def __init__(self, stores: Stores, ids: OriginatorIds) -> None:
        super().__init__(stores, ids)
        if stores.feed is None:
            raise es.InterfaceError(f"the store {stores.url!r} has no feed")
        self.feed: EventFeed = stores.feed
        # weak: a subscription dropped without being stopped leaves nothing behind
        self._listeners: weakref.WeakSet[threading.Event] = weakref.WeakSet()
        self._listeners_lock = threading.Lock()

    def insert_events(self, stored_events: Sequence[es.StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        """Append the events; their notification ids (feed sequence numbers), in the order given."""
        ids = self._insert(stored_events, kwargs.get("tracking"))
        if ids:
            with self._listeners_lock:
                for listener in list(self._listeners):
                    listener.set()
        return ids

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[es.Notification]:
        after = 0 if start is None else max(0, start - 1 if inclusive_of_start else start)
        wanted = set(topics)
        found: list[es.Notification] = []
        while len(found) < limit:
            # Without topics a page is what is still wanted; with topics, a fixed page scans on.
            page = limit - len(found) if not wanted else 500
            with translated():
                batch = self.feed.read(after=after, limit=page)
            for item in batch:
                if stop is not None and item.sequence > stop:
                    return found
                if not wanted or item.event.type_name in wanted:
                    found.append(self._notification(item.sequence, item.event))
                    if len(found) == limit:
                        break
            if len(batch) < page:
                break
            after = batch[-1].sequence
        return found

    def _notification(self, sequence: int, event: StoredEvent) -> es.Notification:
        stored = self.streams.ids.to_library(event)
        return es.Notification(
            id=sequence,
            originator_id=stored.originator_id,
            originator_version=stored.originator_version,
            topic=stored.topic,
            state=stored.state,
        )

    def max_notification_id(self) -> int | None:
        with translated():
            return self.feed.head() or None

    def subscribe(self, gt: int | None = None, topics: Sequence[str] = ()) -> es.Subscription[es.ApplicationRecorder]:
        """Notifications after ``gt``, then each new one as it commits (woken by this process's inserts,
        and at least every :attr:`poll_interval` seconds for other processes')."""
        return FeedSubscription(self, gt=gt, topics=topics, poll_interval=self.poll_interval)

    def listen(self, event: threading.Event) -> None:
        with self._listeners_lock:
            self._listeners.add(event)

    def unlisten(self, event: threading.Event) -> None:
        with self._listeners_lock:
            self._listeners.discard(event)


class CassandraAggregateRecorder(_EventsRecorder):
    """On eskit's Cassandra store: each aggregate's events linearizable on their own, none across aggregates."""

    def _insert(self, stored_events: Sequence[es.StoredEvent], tracking: es.Tracking | None) -> list[int] | None:
        if tracking is not None:
            raise es.NotSupportedError("a Cassandra store cannot record tracking with events (no transaction)")
        with translated():
            plan = self.streams.plan(stored_events)
            answers = self._append(plan)
            made = [i for i, answer in enumerate(answers) if not isinstance(answer, EskitError)]
            retry = [
                i
                for i, a in enumerate(answers)
                if isinstance(a, ConcurrencyError) and plan.appends[i][0] in plan.guessed
            ]
            if retry:
                # Streams tried as new that were not: plan them again from what the store holds, once.
                again = self.streams.plan([stored_events[j] for i in retry for j in plan.indices[i]], read_unknown=True)
                for k, (i, answer) in enumerate(zip(retry, self._append(again), strict=True)):
                    answers[i] = answer
                    if not isinstance(answer, EskitError):
                        self.streams.stored(again, only=[k])
            self.streams.stored(plan, only=made)
            failed = [answer for answer in answers if isinstance(answer, EskitError)]
            if failed:
                stored = len(answers) - len(failed)
                note = f" ({stored} other aggregate(s) of this insert were stored)" if stored else ""
                if isinstance(failed[0], ConcurrencyError):
                    raise es.IntegrityError(f"{failed[0]}{note}") from failed[0]
                raise failed[0]
        return None

    def _append(self, plan: Plan) -> list[int | EskitError]:
        if len(plan.appends) == 1:
            stream_id, events, expected = plan.appends[0]
            try:
                return [self.store.append(stream_id, events, expected_version=expected)]
            except EskitError as exc:
                return [exc]
        return self.store.append_many(plan.appends)


class CassandraApplicationRecorder(CassandraAggregateRecorder, es.ApplicationRecorder):
    """Saves and gets like the aggregate recorder; numbers no notifications (``NotSupportedError``)."""

    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[es.Notification]:
        raise es.NotSupportedError(NO_NOTIFICATIONS)

    def max_notification_id(self) -> int | None:
        raise es.NotSupportedError(NO_NOTIFICATIONS)

    def subscribe(self, gt: int | None = None, topics: Sequence[str] = ()) -> es.Subscription[es.ApplicationRecorder]:
        raise es.NotSupportedError(NO_NOTIFICATIONS)


class SnapshotRecorder(es.AggregateRecorder):
    """The library's snapshots in eskit's snapshot store, at the aggregate's version (any store).

    A snapshot already stored at a version is refused with ``IntegrityError`` as the library
    does; the check and the save are two steps, so two processes racing to take the same
    snapshot may both store it (the same state: the later one replaces the earlier).
    """

    def __init__(self, stores: Stores, ids: OriginatorIds) -> None:
        self.stores = stores
        self.ids = ids

    @property
    def snapshots(self) -> SnapshotStore:
        return self.stores.snapshots

    def insert_events(self, stored_events: Sequence[es.StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        keys = [(self.ids.stream(s.originator_id), s.originator_version) for s in stored_events]
        if len(set(keys)) != len(keys):
            raise es.IntegrityError(f"one insert holds the same snapshot twice: {keys}")
        when = datetime.now(UTC)
        with translated():
            for stream_id, version in keys:
                found = self.snapshots.load(stream_id, lte=version)
                if found is not None and found.version == version:
                    raise es.IntegrityError(f"a snapshot of {stream_id} at version {version} is stored already")
            for (stream_id, version), stored in zip(keys, stored_events, strict=True):
                self.snapshots.save(Snapshot(stream_id, version, stored.topic, 1, stored.state, when))
        return None

    def select_events(
        self,
        originator_id: UUID | str,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[es.StoredEvent]:
        stream_id = self.ids.stream(originator_id)
        with translated():
            if desc and limit == 1 and gt is None:  # what the library asks: the newest, at or below lte
                newest = self.snapshots.load(stream_id, lte=lte)
                found = [] if newest is None else [newest]
            else:
                versions = [
                    v
                    for v in self.snapshots.versions(stream_id)
                    if (gt is None or v > gt) and (lte is None or v <= lte)
                ]
                if desc:
                    versions.reverse()
                found = [s for v in versions[:limit] if (s := self.snapshots.load(stream_id, lte=v)) is not None]
        return [
            es.StoredEvent(
                originator_id=self.ids.originator(stream_id),
                originator_version=s.version,
                topic=s.type_name,
                state=s.state,
            )
            for s in found
        ]
