"""The aggregate repository: load from snapshot + events, save with optimistic concurrency.

Loading takes the newest usable snapshot at or below the wanted version and
folds the events after it. Saving appends the aggregate's pending events at the
version it was loaded at, so a concurrent writer makes the save fail with
:class:`~eskit.exceptions.ConcurrencyError` instead of overwriting history.
:meth:`Repository.execute` turns that into a bounded reload-and-retry loop.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from eskit.aggregate import Aggregate, metadata_for
from eskit.events import DomainEvent, EventMetadata, Snapshot, StoredEvent
from eskit.exceptions import AggregateNotFound, ConcurrencyError, SerializationError
from eskit.serialization import EventCodec, Upcasters
from eskit.store import EventStore, SnapshotStore

__all__ = ["RecordedEvent", "Repository", "SnapshotPolicy"]

A = TypeVar("A", bound=Aggregate)
R = TypeVar("R")

log = logging.getLogger(__name__)

_PAGE = 1000
_COMMAND_LOCKS = 256


@dataclass(frozen=True)
class RecordedEvent:
    """A decoded stored event: where it stands in its stream, what it says, its metadata."""

    position: int
    type_name: str
    event: DomainEvent
    metadata: EventMetadata


@dataclass(frozen=True)
class SnapshotPolicy:
    """When to snapshot: after a save that crosses a multiple of ``every`` events.

    ``every=0`` turns snapshots off.
    """

    every: int = 100

    def due(self, before: int, after: int) -> bool:
        """Tell whether a save moving the stream from ``before`` to ``after`` should snapshot."""
        return self.every > 0 and after // self.every > before // self.every


class Repository(Generic[A]):
    """Loads and saves aggregates of one class, with snapshots and time travel."""

    def __init__(
        self,
        aggregate_cls: type[A],
        events: EventStore,
        codec: EventCodec,
        *,
        snapshots: SnapshotStore | None = None,
        snapshot_policy: SnapshotPolicy | None = None,
        snapshot_upcasters: Upcasters | None = None,
        stream_prefix: str = "",
        cache_size: int = 0,
    ) -> None:
        self.aggregate_cls = aggregate_cls
        self.events = events
        self.codec = codec
        self.snapshots = snapshots
        self.snapshot_policy = snapshot_policy or SnapshotPolicy()
        self.snapshot_upcasters = snapshot_upcasters or Upcasters()
        self.stream_prefix = stream_prefix
        self.cache_size = cache_size
        self._cache: OrderedDict[str, A] = OrderedDict()
        self._cache_lock = threading.Lock()
        # Commands on one aggregate in this process take turns instead of racing to conflict:
        # optimistic concurrency still guards against other processes.
        self._command_locks = [threading.Lock() for _ in range(_COMMAND_LOCKS)]

    def stream_id(self, aggregate_id: str) -> str:
        """The stream that holds the aggregate's events."""
        return self.stream_prefix + aggregate_id

    # -- loading ---------------------------------------------------------------

    def load(self, aggregate_id: str, *, version: int | None = None, as_of: datetime | None = None) -> A:
        """Return the aggregate as of ``version`` or time ``as_of`` (latest when neither).

        Raises :class:`AggregateNotFound` when the stream has no event at or
        before that point, and :class:`SerializationError` subclasses when a
        stored event cannot be decoded.
        """
        stream_id = self.stream_id(aggregate_id)
        if as_of is not None:
            at_time = self.events.version_at(stream_id, as_of)
            version = at_time if version is None else min(version, at_time)
        if version is not None and version <= 0:
            raise AggregateNotFound(aggregate_id)
        aggregate = self._from_snapshot(aggregate_id, stream_id, version)
        if aggregate is None:
            aggregate = self.aggregate_cls(aggregate_id)
        for recorded in self._iter_events(stream_id, gt=aggregate.version, lte=version):
            aggregate.replay(recorded.event, recorded.metadata)
        if aggregate.version == 0:
            raise AggregateNotFound(aggregate_id)
        return aggregate

    def history(
        self, aggregate_id: str, *, gt: int = 0, lte: int | None = None, limit: int | None = None
    ) -> list[RecordedEvent]:
        """Return the aggregate's decoded events with ``gt < position <= lte``, oldest first."""
        stored = self.events.read(self.stream_id(aggregate_id), gt=gt, lte=lte, limit=limit)
        return [self._decode(s) for s in stored]

    def _iter_events(self, stream_id: str, *, gt: int, lte: int | None) -> list[RecordedEvent]:
        decoded: list[RecordedEvent] = []
        while True:
            page = self.events.read(stream_id, gt=gt, lte=lte, limit=_PAGE)
            decoded.extend(self._decode(s) for s in page)
            if len(page) < _PAGE:
                return decoded
            gt = page[-1].position

    def _decode(self, stored: StoredEvent) -> RecordedEvent:
        event, metadata = self.codec.decode(stored)
        return RecordedEvent(stored.position, stored.type_name, event, metadata)

    def _from_snapshot(self, aggregate_id: str, stream_id: str, version: int | None) -> A | None:
        cls = self.aggregate_cls
        if self.snapshots is None or not cls.snapshot_type:
            return None
        snapshot = self.snapshots.load(stream_id, lte=version)
        if snapshot is None:
            return None
        if snapshot.type_name != cls.snapshot_type:
            log.warning("ignoring snapshot of %s: type %r", stream_id, snapshot.type_name)
            return None
        try:
            state = self.codec.serializer.loads(snapshot.state)
            if snapshot.schema_version != cls.snapshot_version:
                if not self.snapshot_upcasters.can_upcast(
                    cls.snapshot_type, snapshot.schema_version, cls.snapshot_version
                ):
                    log.info(
                        "snapshot of %s is v%d, no upcaster to v%d: rebuilding from events",
                        stream_id,
                        snapshot.schema_version,
                        cls.snapshot_version,
                    )
                    return None
                state = self.snapshot_upcasters.upcast(
                    cls.snapshot_type, state, snapshot.schema_version, cls.snapshot_version
                )
            return cls.from_snapshot(aggregate_id, snapshot.version, state)
        except (SerializationError, KeyError, TypeError, ValueError) as exc:
            # A snapshot is a cache: when it cannot be trusted the events still can.
            log.warning("ignoring unreadable snapshot of %s v%d: %s", stream_id, snapshot.version, exc)
            return None

    # -- saving ----------------------------------------------------------------

    def save(self, aggregate: A, metadata: EventMetadata | Sequence[EventMetadata]) -> int:
        """Append the aggregate's pending events with ``metadata``; return the new version.

        ``metadata`` is one value for every event, or one per pending event (so
        that what is said once about a command is stored once, with its first event).

        Raises :class:`ConcurrencyError` when the stream moved since the
        aggregate was loaded (nothing is written then). Takes a snapshot when
        the policy says so; a failed snapshot is logged, never fatal.
        """
        pending = aggregate.pending_events
        if not pending:
            return aggregate.version
        before = aggregate.stored_version
        records = [
            self.codec.encode(event, meta) for event, meta in zip(pending, metadata_for(pending, metadata), strict=True)
        ]
        new_version = self.events.append(self.stream_id(aggregate.id), records, expected_version=before)
        aggregate.mark_saved(metadata)
        if self.snapshot_policy.due(before, new_version):
            self.take_snapshot(aggregate)
        return new_version

    def take_snapshot(self, aggregate: A) -> bool:
        """Store a snapshot of ``aggregate`` at its version; return whether one was stored."""
        cls = type(aggregate)
        if self.snapshots is None or not cls.snapshot_type or aggregate.pending_events:
            return False
        try:
            state = self.codec.serializer.dumps(aggregate.to_snapshot())
            self.snapshots.save(
                Snapshot(
                    stream_id=self.stream_id(aggregate.id),
                    version=aggregate.version,
                    type_name=cls.snapshot_type,
                    schema_version=cls.snapshot_version,
                    state=state,
                    recorded_at=datetime.now().astimezone(),
                )
            )
        except Exception:  # a snapshot is an optimisation: never fail the command for it
            log.exception("snapshot of %s v%d failed", aggregate.id, aggregate.version)
            return False
        return True

    # -- the command cache -----------------------------------------------------

    def _take_cached(self, aggregate_id: str) -> A | None:
        """Take (not copy) a cached aggregate, brought up to date with the events after it.

        The cache hands each aggregate to one command at a time: a command in
        another thread finds nothing and loads from the store, so no two
        commands ever mutate the same object.
        """
        if self.cache_size <= 0:
            return None
        with self._cache_lock:
            aggregate = self._cache.pop(aggregate_id, None)
        if aggregate is not None:
            for recorded in self._iter_events(self.stream_id(aggregate_id), gt=aggregate.version, lte=None):
                aggregate.replay(recorded.event, recorded.metadata)
        return aggregate

    def _keep(self, aggregate: A) -> None:
        """Cache an aggregate whose state is exactly what the store holds (no pending events)."""
        if self.cache_size <= 0 or aggregate.pending_events:
            return
        with self._cache_lock:
            self._cache[aggregate.id] = aggregate
            self._cache.move_to_end(aggregate.id)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    # -- commands --------------------------------------------------------------

    def execute(
        self,
        aggregate_id: str,
        command: Callable[[A], R],
        *,
        metadata: EventMetadata | Callable[[A, R], EventMetadata | Sequence[EventMetadata]],
        create: bool = False,
        max_attempts: int = 10,
        on_conflict: Callable[[int], None] | None = None,
    ) -> R:
        """Run ``command`` on the latest state and save what it triggered; retry on conflict.

        ``command`` receives the loaded aggregate (a new, empty one when
        ``create`` is true and the stream has no events) and returns any value,
        which ``execute`` returns after saving. ``metadata`` is the metadata to
        save the events with, or a function of the aggregate and the result that
        builds it (so it can record the answer). On
        :class:`ConcurrencyError` the aggregate is reloaded and the command run
        again, up to ``max_attempts`` times in all, with a short random backoff;
        the last conflict is re-raised. Exceptions raised by ``command`` propagate
        and nothing is saved.

        With ``cache_size`` > 0, aggregates that commands left in their stored
        state are kept in memory (least recently used dropped first) and the
        next command reads only the events appended after them, by any process.
        Commands on one aggregate within this process run one at a time (striped
        locks), so they queue instead of conflicting; conflicts with other
        processes are retried as above.
        """
        with self._command_locks[hash(aggregate_id) % _COMMAND_LOCKS]:
            return self._execute(aggregate_id, command, metadata, create, max_attempts, on_conflict)

    def _execute(
        self,
        aggregate_id: str,
        command: Callable[[A], R],
        metadata: EventMetadata | Callable[[A, R], EventMetadata | Sequence[EventMetadata]],
        create: bool,
        max_attempts: int,
        on_conflict: Callable[[int], None] | None,
    ) -> R:
        for attempt in range(1, max_attempts + 1):
            aggregate = self._take_cached(aggregate_id)
            if aggregate is None:
                try:
                    aggregate = self.load(aggregate_id)
                except AggregateNotFound:
                    if not create:
                        raise
                    aggregate = self.aggregate_cls(aggregate_id)
            # An exception from the command leaves the aggregate half-changed: it is not cached again.
            result = command(aggregate)
            if aggregate.pending_events:
                meta = metadata if isinstance(metadata, EventMetadata) else metadata(aggregate, result)
                try:
                    self.save(aggregate, meta)
                except ConcurrencyError:
                    if on_conflict is not None:
                        on_conflict(attempt)
                    if attempt == max_attempts:
                        raise
                    # Jittered, growing backoff: writers in other processes get out of step.
                    time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
                    continue
            if aggregate.version > 0:
                self._keep(aggregate)
            return result
        raise AssertionError("unreachable")  # pragma: no cover
