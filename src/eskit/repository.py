"""The aggregate repository: load from snapshot + events, save with optimistic concurrency.

Loading takes the newest usable snapshot at or below the wanted version and
folds the events after it. Saving appends the aggregate's pending events at the
version it was loaded at, so a concurrent writer makes the save fail with
:class:`~eskit.exceptions.ConcurrencyError` instead of overwriting history;
:class:`~eskit.commands.CommandRunner` turns that into a bounded
reload-and-retry loop.

Where the codec seals a stream's personal fields (:mod:`eskit.privacy`), the
repository finds the stream's key in its key ring when it loads (one read of
the key store), keeps it with the aggregate (``Aggregate.stream_key``), so
that the commands a cached aggregate runs next read and write with it at no
cost, makes it when the stream first has something personal to write, and
seals snapshots whole with it. :meth:`Repository.forget` erases the key and the
snapshots: the events stay, their personal fields unreadable for good.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from eskit.aggregate import Aggregate, metadata_for
from eskit.codec import EventCodec, Upcasters
from eskit.events import DomainEvent, EventMetadata, Snapshot, StoredEvent
from eskit.exceptions import AggregateNotFound, ConcurrencyError, PrivacyError, SerializationError
from eskit.ports import EventStore, SnapshotStore
from eskit.privacy.keys import ErasedKey, KeyRecord, StreamKey
from eskit.privacy.ring import KeyRing
from eskit.privacy.sealing import is_sealed_state, open_state, seal_state

__all__ = ["RecordedEvent", "Repository", "SnapshotPolicy"]

A = TypeVar("A", bound=Aggregate)

log = logging.getLogger(__name__)

_PAGE = 1000
_DEFERRED_LIMIT = 64  # snapshots waiting for the background writer at most


@dataclass(frozen=True)
class RecordedEvent:
    """A decoded stored event: where it stands in its stream, what it says, its metadata."""

    position: int
    type_name: str
    event: DomainEvent
    metadata: EventMetadata
    schema_version: int = 0  # the schema the event was stored in (before upcasting)


@dataclass(frozen=True)
class SnapshotPolicy:
    """When to snapshot, and which snapshots to keep.

    A snapshot is taken after a save that crosses a multiple of ``every``
    events (``every=0`` turns snapshots off). After each one, older snapshots
    are removed except the newest ``keep_latest`` and the oldest one in each
    span of ``keep_every`` versions: loading the latest state needs only the
    newest, and time travel to any version still starts from a snapshot at
    most about ``keep_every + every`` events before it, so its cost stays flat
    in history length while a stream keeps about one snapshot per
    ``keep_every`` events instead of one per ``every`` (``keep_every=0`` keeps
    only the newest ``keep_latest``).

    A snapshot costs its size to encode and write. A state that grows with its
    history (an account keeps every license it ever had) would make that cost
    grow with every command; so a snapshot of S bytes is followed by the next
    only after ``S / max_bytes_per_event`` events (and a multiple of ``every``),
    which bounds what snapshots cost per event whatever the state's size. A
    load then folds at most that many events after the snapshot: at the
    default of 2 KiB per event, at most about 0.7x what decoding the snapshot
    costs (measured on the downloads account).
    """

    every: int = 100
    keep_latest: int = 2
    keep_every: int = 1000
    max_bytes_per_event: int = 2048

    def due(self, before: int, after: int, *, last: tuple[int, int] | None = None) -> bool:
        """Tell whether a save moving the stream from ``before`` to ``after`` should snapshot.

        ``last`` is the ``(version, bytes)`` of the stream's newest snapshot, when known: a state
        too big to be written every ``every`` events within ``max_bytes_per_event`` bytes per event
        waits until that many events have passed since it (0 turns this off).
        """
        if not (self.every > 0 and after // self.every > before // self.every):
            return False
        if last is None or self.max_bytes_per_event <= 0:
            return True
        version, size = last
        return (after - version) * self.max_bytes_per_event >= size

    def expendable(self, versions: Sequence[int]) -> list[int]:
        """Which of a stream's snapshot ``versions`` (oldest first) the policy no longer keeps."""
        newest = set(versions[-self.keep_latest :]) if self.keep_latest > 0 else set()
        spans: set[int] = set()
        dropped: list[int] = []
        for version in versions:
            if version in newest:
                continue
            span = version // self.keep_every if self.keep_every > 0 else None
            if span is not None and span not in spans:
                spans.add(span)
                continue
            dropped.append(version)
        return dropped


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
        keys: KeyRing | None = None,
    ) -> None:
        self.aggregate_cls = aggregate_cls
        self.events = events
        self.codec = codec
        self.snapshots = snapshots
        self.snapshot_policy = snapshot_policy or SnapshotPolicy()
        self.snapshot_upcasters = snapshot_upcasters or Upcasters()
        self.stream_prefix = stream_prefix
        #: where the keys of the streams the codec seals are found (None: nothing is sealed)
        self.keys = keys
        # Snapshots written after the answer (stores with deferred_writes): one writer thread.
        self._writer: ThreadPoolExecutor | None = None
        self._deferred = 0
        self._deferred_lock = threading.Lock()

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
        key = self.stream_key(stream_id)
        aggregate = self._from_snapshot(aggregate_id, stream_id, version, key)
        if aggregate is None:
            aggregate = self.aggregate_cls(aggregate_id)
        aggregate.stream_key = key
        for recorded in self._iter_events(stream_id, gt=aggregate.version, lte=version, key=key):
            aggregate.replay(recorded.event, recorded.metadata)
        if aggregate.version == 0:
            raise AggregateNotFound(aggregate_id)
        return aggregate

    def stream_key(self, stream_id: str, *, create: bool = False) -> StreamKey:
        """The key of a stream the codec seals (read from the key ring), None for any other stream."""
        if self.keys is None or not self.codec.seals(stream_id):
            return None
        return self.keys.key(stream_id, create=create)

    def decode(self, stored: StoredEvent, *, key: StreamKey = None) -> RecordedEvent:
        """Decode one stored event of any stream, with its stream's key (looked up unless given)."""
        if key is None:
            key = self.stream_key(stored.stream_id)
        return self._decode(stored, key)

    def history(
        self, aggregate_id: str, *, gt: int = 0, lte: int | None = None, limit: int | None = None
    ) -> list[RecordedEvent]:
        """Return the aggregate's decoded events with ``gt < position <= lte``, oldest first."""
        stream_id = self.stream_id(aggregate_id)
        stored = self.events.read(stream_id, gt=gt, lte=lte, limit=limit)
        key = self.stream_key(stream_id) if stored else None
        return [self._decode(s, key) for s in stored]

    def events_after(self, aggregate: A) -> list[RecordedEvent]:
        """The decoded events appended to the aggregate's stream after its version, by any process.

        Decoded with the key kept with the aggregate; a stream that had none when the aggregate
        was loaded may have one now (another process made it), so then it is looked up.
        """
        stream_id = self.stream_id(aggregate.id)
        stored = self._read_all(stream_id, gt=aggregate.version, lte=None)
        if stored and aggregate.stream_key is None:
            aggregate.stream_key = self.stream_key(stream_id)
        return [self._decode(s, aggregate.stream_key) for s in stored]

    def _iter_events(self, stream_id: str, *, gt: int, lte: int | None, key: StreamKey) -> list[RecordedEvent]:
        return [self._decode(s, key) for s in self._read_all(stream_id, gt=gt, lte=lte)]

    def _read_all(self, stream_id: str, *, gt: int, lte: int | None) -> list[StoredEvent]:
        found: list[StoredEvent] = []
        while True:
            page = self.events.read(stream_id, gt=gt, lte=lte, limit=_PAGE)
            found.extend(page)
            if len(page) < _PAGE:
                return found
            gt = page[-1].position

    def _decode(self, stored: StoredEvent, key: StreamKey) -> RecordedEvent:
        event, metadata = self.codec.decode(stored, key=key)
        return RecordedEvent(stored.position, stored.type_name, event, metadata, stored.schema_version)

    def open_snapshot(self, snapshot: Snapshot, key: StreamKey) -> bytes:
        """A snapshot's state as serialized: opened with ``key`` when it is sealed (``ValueError`` when it
        does not open: no live key, or altered)."""
        if is_sealed_state(snapshot.state):
            return open_state(snapshot.state, key, _state_aad(snapshot.stream_id, snapshot.version))
        return snapshot.state

    def _from_snapshot(self, aggregate_id: str, stream_id: str, version: int | None, key: StreamKey) -> A | None:
        cls = self.aggregate_cls
        if self.snapshots is None or not cls.snapshot_type:
            return None
        snapshot = self.snapshots.load(stream_id, lte=version)
        if snapshot is None:
            return None
        if snapshot.type_name != cls.snapshot_type:
            log.warning("ignoring snapshot of %s: type %r", stream_id, snapshot.type_name)
            return None
        if not is_sealed_state(snapshot.state) and self.codec.seals(stream_id) and isinstance(key, ErasedKey):
            return None  # a state written in clear (before sealing) of a stream now erased: never used
        try:
            state = self.codec.serializer.loads(self.open_snapshot(snapshot, key))
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
            aggregate = cls.from_snapshot(aggregate_id, snapshot.version, state)
        except (SerializationError, KeyError, TypeError, ValueError) as exc:
            # A snapshot is a cache: when it cannot be trusted the events still can.
            log.warning("ignoring unreadable snapshot of %s v%d: %s", stream_id, snapshot.version, exc)
            return None
        aggregate.snapshot_taken = (snapshot.version, len(snapshot.state))
        return aggregate

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
        stream_id = self.stream_id(aggregate.id)
        if aggregate.stream_key is None and self.keys is not None and self.codec.seals(stream_id):
            aggregate.stream_key = self.keys.key(stream_id, create=True)
        key = aggregate.stream_key
        if before == 0 and isinstance(key, ErasedKey):
            # An erased stream is never empty: the append would be refused, so refuse it as the store would
            # (the caller reads the stream and decides again), before anything is sealed with a dead key.
            raise ConcurrencyError(stream_id, expected=0)
        records = [
            self.codec.encode(event, meta, stream_id=stream_id, key=key)
            for event, meta in zip(pending, metadata_for(pending, metadata), strict=True)
        ]
        new_version = self.events.append(stream_id, records, expected_version=before)
        aggregate.mark_saved(metadata)
        if self.snapshot_policy.due(before, new_version, last=aggregate.snapshot_taken):
            self.take_snapshot(aggregate)
        return new_version

    def take_snapshot(self, aggregate: A) -> bool:
        """Store a snapshot of ``aggregate`` at its version; return whether one was stored (or queued).

        The state is taken now; a store with ``deferred_writes`` writes it (and prunes older
        snapshots) in the background, after the command's answer. At most
        :data:`_DEFERRED_LIMIT` wait at once; past that a snapshot is skipped (the next one
        due is taken as usual).
        """
        cls = type(aggregate)
        if self.snapshots is None or not cls.snapshot_type or aggregate.pending_events:
            return False
        stream_id = self.stream_id(aggregate.id)
        try:
            state = self.codec.serializer.dumps(aggregate.to_snapshot())
            if self.codec.seals(stream_id):
                sealed = seal_state(state, aggregate.stream_key, _state_aad(stream_id, aggregate.version))
                if sealed is None:  # no live key to seal it with: a snapshot is a cache, go without
                    return False
                state = sealed
            snapshot = Snapshot(
                stream_id=stream_id,
                version=aggregate.version,
                type_name=cls.snapshot_type,
                schema_version=cls.snapshot_version,
                state=state,
                recorded_at=datetime.now().astimezone(),
            )
            aggregate.snapshot_taken = (aggregate.version, len(state))
        except Exception:  # a snapshot is an optimisation: never fail the command for it
            log.exception("snapshot of %s v%d failed", aggregate.id, aggregate.version)
            return False
        if not self.snapshots.deferred_writes:
            return self._store_snapshot(snapshot)
        with self._deferred_lock:
            if self._deferred >= _DEFERRED_LIMIT:
                log.info(
                    "snapshot of %s v%d skipped: %d snapshots waiting", aggregate.id, snapshot.version, _DEFERRED_LIMIT
                )
                return False
            self._deferred += 1
            if self._writer is None:
                self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eskit-snapshots")
        self._writer.submit(self._store_deferred, snapshot)
        return True

    def forget(self, aggregate_id: str, *, at: datetime) -> KeyRecord:
        """Erase the aggregate's key and remove its snapshots: its events stay, their personal fields
        unreadable for good. Idempotent (the key record keeps the first erasure's time); a store
        failure part-way leaves what is done, and calling it again finishes.

        Raises :class:`~eskit.exceptions.PrivacyError` for a repository with no key ring.
        """
        stream_id = self.stream_id(aggregate_id)
        if self.keys is None:
            raise PrivacyError(f"{stream_id!r} has no key to erase: this repository seals nothing")
        record = self.keys.erase(stream_id, at=at)
        self.flush_snapshots()  # one this process writes in the background lands before they are removed
        if self.snapshots is not None:
            versions = self.snapshots.versions(stream_id)
            if versions:
                self.snapshots.delete(stream_id, versions)
        return record

    def _store_deferred(self, snapshot: Snapshot) -> None:
        try:
            self._store_snapshot(snapshot)
        finally:
            with self._deferred_lock:
                self._deferred -= 1

    def _store_snapshot(self, snapshot: Snapshot) -> bool:
        assert self.snapshots is not None
        try:
            self.snapshots.save(snapshot)
        except Exception:  # a snapshot is an optimisation: never fail the command for it
            log.exception("snapshot of %s v%d failed", snapshot.stream_id, snapshot.version)
            return False
        self._prune(snapshot.stream_id)
        return True

    def flush_snapshots(self, timeout: float = 30.0) -> None:
        """Wait (at most ``timeout`` seconds) until every snapshot written in the background is stored."""
        deadline = time.monotonic() + timeout
        while self._deferred and time.monotonic() < deadline:
            time.sleep(0.01)

    def _prune(self, stream_id: str) -> None:
        """Remove the stream's snapshots the policy no longer keeps (a failure only leaves them a while longer)."""
        assert self.snapshots is not None
        try:
            dropped = self.snapshot_policy.expendable(self.snapshots.versions(stream_id))
            if dropped:
                self.snapshots.delete(stream_id, dropped)
        except Exception:
            log.exception("pruning the snapshots of %s failed", stream_id)


def _state_aad(stream_id: str, version: int) -> bytes:
    return b"s" + stream_id.encode("utf-8") + b"\x00" + str(version).encode("ascii")
