"""Projections: a loop that turns the feed into a read model, each event with exactly one effect.

A :class:`ProjectionTarget` keeps the read model and its checkpoint (the feed
sequence it has applied up to) and applies a batch *and* moves the checkpoint
in one atomic step, refusing with :class:`CheckpointMoved` when the checkpoint
is no longer where the batch starts. A :class:`Projector` reads the feed after
the target's checkpoint, applies batches, and on an error records it, backs
off (doubling, bounded) and tries again: it never stops silently. A killed
projector's half-applied batch was never committed; two projectors on one
target cannot both apply a batch, because only one moves the checkpoint.

A stream the target cannot apply (an event that does not decode, that the
projection's code cannot take, or that cannot even be read back) is *skipped*
rather than retried forever, which would hold up every other stream: the target
records, with the checkpoint, the stream, the first event not applied, why, and
how many of its events were skipped since (:class:`SkippedStream`); later events
of that stream are skipped too, so its rows never show a later event without an
earlier one. The status reports skipped streams as an error until a rebuild
(a new version, which reads every event again) applies them. Only errors an
event's content causes are skipped (:func:`cannot_apply`); a failing store or
disk is retried as before.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from eskit.events import StoredEvent
from eskit.exceptions import DamagedEvent, EskitError, OperationalError, SerializationError
from eskit.ports import EventFeed, EventStore, FeedEvent, StreamFeed

__all__ = [
    "CANNOT_APPLY",
    "MAX_SKIPPED_STREAMS",
    "CheckpointMoved",
    "FollowerStats",
    "ProjectionStatus",
    "ProjectionTarget",
    "Projector",
    "SkippedStream",
    "StreamFollower",
    "StreamTarget",
    "TooManySkipped",
    "cannot_apply",
    "describe_skipped",
]

log = logging.getLogger(__name__)


class CheckpointMoved(EskitError):
    """The target's checkpoint is not where the batch starts: another runner applied it (nothing was applied)."""


class TooManySkipped(EskitError):
    """More streams fail than damage explains: the projection's code is at fault, so nothing more is skipped."""


#: the most streams one projection version skips; past it the projection stops and reports (a fault of its
#: code, failing on every stream, must not skip the whole store silently)
MAX_SKIPPED_STREAMS = 100

#: errors an event's own content causes: it does not decode, cannot be read back, or holds values the
#: projection cannot take. Trying again gives the same answer, so the stream is skipped; any other error
#: (the store, the disk, the network, a lost lease) is retried.
CANNOT_APPLY: tuple[type[Exception], ...] = (
    SerializationError,
    DamagedEvent,
    LookupError,
    ValueError,
    TypeError,
    AttributeError,
    ArithmeticError,
)


def cannot_apply(exc: BaseException, more: tuple[type[Exception], ...] = ()) -> bool:
    """Whether ``exc``, raised while applying one event, is that event's own fault (see :data:`CANNOT_APPLY`).

    ``more`` adds a backend's own data errors (a constraint the event's values break).
    """
    return isinstance(exc, CANNOT_APPLY + more) and not isinstance(exc, OperationalError)


@dataclass(frozen=True)
class SkippedStream:
    """A stream a projection skips: from ``position`` (``sequence`` in the feed, where there is one) on,
    ``events`` of its events were not applied, because of ``error``."""

    stream_id: str
    position: int
    events: int
    error: str
    sequence: int | None = None


def describe_skipped(skipped: Sequence[SkippedStream], *, shown: int = 3) -> str | None:
    """The error a status shows for skipped streams (the first ``shown`` named), None when there are none."""
    if not skipped:
        return None
    events = sum(s.events for s in skipped)
    named = "; ".join(f"{s.stream_id}@{s.position}: {s.error}" for s in skipped[:shown])
    more = f"; and {len(skipped) - shown} more" if len(skipped) > shown else ""
    return (
        f"skipped {len(skipped)} stream(s) it cannot apply ({events} event(s); a rebuild applies them again once "
        f"fixed): {named}{more}"
    )


class ProjectionTarget(abc.ABC):
    """Port: a read model and its checkpoint, changed together."""

    #: the projection's name, unique in its store
    name: str

    @abc.abstractmethod
    def checkpoint(self) -> int:
        """The feed sequence the read model has applied up to (0 for none)."""

    @abc.abstractmethod
    def apply(self, events: Sequence[FeedEvent], *, after: int) -> None:
        """Apply ``events`` (which follow sequence ``after``) and move the checkpoint to the last, atomically.

        Raises :class:`CheckpointMoved` (having applied nothing) when the checkpoint is not ``after``.
        A target that skips streams it cannot apply does so here, recording them with the checkpoint.
        """

    def skip_unreadable(self, damaged: DamagedEvent, *, after: int) -> None:
        """Skip the event at sequence ``after + 1``, which cannot be read back, and its stream from there on.

        Records the skip and moves the checkpoint past it, atomically. This default cannot
        skip: it raises ``damaged``, and the projector retries (and stays behind) as before.
        """
        raise damaged

    def skipped(self) -> Sequence[SkippedStream]:
        """The streams this target skips (none, unless it can skip)."""
        return []


@dataclass(frozen=True)
class ProjectionStatus:
    """What a projection reports: where it stands, how far behind, and its last error."""

    name: str
    status: str  # "running", "caught_up", "failing" or "stopped"
    position: int
    lag_events: int
    lag_seconds: float
    updated_at: datetime | None
    error: str | None
    #: streams skipped because they cannot be applied, and their events not applied
    skipped_streams: int = 0
    skipped_events: int = 0


class Projector:
    """Follows one shard of a feed into one target; see the module docstring."""

    def __init__(
        self,
        feed: EventFeed,
        target: ProjectionTarget,
        *,
        batch: int = 500,
        shard: int = 0,
        max_backoff: float = 30.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.feed, self.target, self.batch, self.shard = feed, target, batch, shard
        self.max_backoff = max_backoff
        self.clock = clock
        self.error: str | None = None
        self.updated_at: datetime | None = None
        self.running = False
        self._failures = 0
        self._retry_at = 0.0

    def step(self) -> int:
        """Apply the next batch, if any; return how many events it held (0 when caught up).

        Raises what the feed or the target raised; a :class:`CheckpointMoved` is not an error
        (another runner got there first) and counts as a step of 0.
        """
        after = self.target.checkpoint()
        try:
            events = self.feed.read(shard=self.shard, after=after, limit=self.batch)
        except DamagedEvent as damaged:  # one of them cannot be read back: the ones before it, or it alone
            if damaged.sequence is None or damaged.sequence <= after:
                raise
            if damaged.sequence == after + 1:
                try:
                    self.target.skip_unreadable(damaged, after=after)
                except CheckpointMoved:
                    return 0
                self.updated_at = self.clock()
                return 1
            events = self.feed.read(shard=self.shard, after=after, limit=damaged.sequence - after - 1)
        if not events:
            return 0
        try:
            self.target.apply(events, after=after)
        except CheckpointMoved:
            return 0
        self.updated_at = self.clock()
        return len(events)

    def catch_up(self, *, max_events: int | None = None) -> int:
        """Apply batches until the feed has nothing more (or ``max_events`` are applied); return the count."""
        applied = 0
        while max_events is None or applied < max_events:
            n = self.step()
            if n == 0:
                return applied
            applied += n
        return applied

    def tick(self, *, max_events: int | None = 5000) -> int:
        """Catch up (up to ``max_events``) without raising: an error is recorded, logged and retried later.

        After a failure the projection waits (0.2 s, doubling, at most ``max_backoff``) before it
        tries again; a success clears the error. Returns how many events were applied.
        """
        if time.monotonic() < self._retry_at:
            return 0
        try:
            applied = self.catch_up(max_events=max_events)
        except Exception as exc:  # reported and retried: a projection never stops silently
            self._failures += 1
            self.error = f"{type(exc).__name__}: {exc}"
            delay = min(self.max_backoff, 0.1 * 2 ** min(self._failures, 20))
            self._retry_at = time.monotonic() + delay
            log.warning("projection %s failed (%s); retrying in %.1f s", self.target.name, self.error, delay)
            return 0
        if self._failures:
            log.warning("projection %s recovered after %d failure(s)", self.target.name, self._failures)
        self._failures, self.error = 0, None
        return applied

    def run(self, stop: threading.Event, *, idle: float = 0.2) -> None:
        """Follow the feed until ``stop`` is set; errors are recorded and retried with bounded backoff."""
        self.running = True
        try:
            while not stop.is_set():
                if self.tick() == 0:
                    stop.wait(idle)
        finally:
            self.running = False

    def status(self) -> ProjectionStatus:
        """Position, lag in events and seconds (the age of the oldest event not applied), last error."""
        position = self.target.checkpoint()
        head = self.feed.head(shard=self.shard)
        lag_seconds = 0.0
        if head > position:
            try:
                pending = self.feed.read(shard=self.shard, after=position, limit=1)
            except DamagedEvent:  # the next event cannot be read back: its age is unknown
                pending = []
            if pending:
                lag_seconds = max(0.0, (self.clock() - pending[0].event.recorded_at).total_seconds())
        skipped = list(self.target.skipped())
        error = self.error or describe_skipped(skipped)
        if error is not None:
            state = "failing"
        elif head > position:
            state = "running" if self.running else "stopped"
        else:
            state = "caught_up"
        return ProjectionStatus(
            self.target.name,
            state,
            position,
            max(0, head - position),
            lag_seconds,
            self.updated_at,
            error,
            len(skipped),
            sum(s.events for s in skipped),
        )


# -- following each stream (a store without one commit order: Cassandra) -------------------


class StreamTarget(abc.ABC):
    """Port: a read model that follows every stream from a checkpoint of its own.

    Its effects must be *idempotent in position*: applying a stream's event again
    (after a crash before the checkpoint moved, or by a second runner at the same
    time) changes nothing more, and applying an older event after a newer one
    cannot undo the newer one. Then each event has exactly one effect without a
    transaction across the read model's partitions.
    """

    #: the projection's name
    name: str

    @property
    @abc.abstractmethod
    def key(self) -> str:
        """The projection's name and version (``name@version``): what its checkpoints belong to."""

    @abc.abstractmethod
    def checkpoints(self, stream_ids: Sequence[str]) -> dict[str, int]:
        """Each stream's checkpoint: the position its events are applied up to (0 for none)."""

    @abc.abstractmethod
    def apply(self, stream_id: str, events: Sequence[StoredEvent]) -> None:
        """Apply the stream's events (which follow its checkpoint, in order), then move the checkpoint to the last.

        A target that skips streams it cannot apply records the skip here, then moves the checkpoint.
        """

    def skip_unreadable(self, stream_id: str, position: int, reason: str, *, upto: int) -> None:
        """Skip the stream from ``position`` (an event there cannot be read back), moving its checkpoint to ``upto``.

        This default cannot skip: it raises, and the stream is tried again in the next round.
        """
        raise DamagedEvent(stream_id, position, reason)

    def skipped(self) -> Sequence[SkippedStream]:
        """The streams this target skips (none, unless it can skip)."""
        return []


@dataclass
class FollowerStats:
    """What a follower knows of one target: events applied since it started, the last error, when it last applied."""

    applied: int = 0
    error: str | None = None
    updated_at: datetime | None = None


class StreamFollower:
    """Follows a :class:`~eskit.ports.StreamFeed` into a set of :class:`StreamTarget`.

    One *round* lists each shard's hinted streams, reads their heads, then reads
    which targets exist (``targets()``, e.g. from a registry of versions: read
    *after* the heads, so a target registered later is filled by its own sweep
    from a head read after its registration), brings every target up to each
    head, and settles each stream that every target reached. A stream that fails
    keeps its hints and is tried in a later round; the error is kept per target.
    :meth:`sweep` brings targets up on every stream of the store, hinted or not:
    a new version of a projection is filled that way.
    """

    def __init__(
        self,
        store: EventStore,
        feed: StreamFeed,
        targets: Callable[[], Sequence[StreamTarget]],
        *,
        streams: int = 200,
        page: int = 1000,
        workers: int = 8,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store, self.feed, self.targets = store, feed, targets
        self.streams, self.page, self.workers, self.clock = streams, page, workers, clock
        self.stats: dict[str, FollowerStats] = {}
        self.error: str | None = None  # the feed's own (listing, reading heads)
        self._failed = False
        self._pool: Any = None
        self._target_pool: Any = None
        self._lock = threading.Lock()
        self._cursors: dict[int, str] = {}  # per shard: the last stream listed, when the listing was cut
        self._failed_targets: set[str] = set()

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        from concurrent.futures import ThreadPoolExecutor

        if len(items) <= 1:
            return [fn(item) for item in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="eskit-follow")
        return list(self._pool.map(fn, items))

    def _stats(self, target: StreamTarget) -> FollowerStats:
        return self.stats.setdefault(target.key, FollowerStats())

    def _each_target(self, fn: Callable[[StreamTarget], Any], targets: Sequence[StreamTarget]) -> list[Any]:
        """``fn`` on every target at once: targets are independent of each other."""
        from concurrent.futures import ThreadPoolExecutor

        if len(targets) <= 1:
            return [fn(t) for t in targets]
        if self._target_pool is None:
            self._target_pool = ThreadPoolExecutor(max_workers=4 * self.workers, thread_name_prefix="eskit-target")
        return list(self._target_pool.map(fn, targets))

    def bring_up(self, stream_id: str, head: int, targets: Sequence[StreamTarget]) -> bool:
        """Apply the stream's events up to ``head`` to every target; True when all of them got there."""
        found = self._each_target(lambda t: t.checkpoints([stream_id]).get(stream_id, 0), targets)
        checkpoints = {t.key: cp for t, cp in zip(targets, found, strict=True)}
        low = min(checkpoints.values(), default=head)
        failed: set[str] = set()
        while low < head:
            events, damaged = self._read(stream_id, low, head)
            if damaged is not None and not events:
                self._skip_unreadable(stream_id, damaged, head, targets, checkpoints, failed)
                low = head
                continue
            if not events or events[0].position != low + 1:
                raise OperationalError(f"stream {stream_id!r} returned no events after {low} though its head is {head}")

            def apply(target: StreamTarget, events: Sequence[StoredEvent] = events) -> None:
                if target.key in failed:
                    return
                mine = [e for e in events if e.position > checkpoints[target.key]]
                if not mine:
                    return
                stats = self._stats(target)
                try:
                    target.apply(stream_id, mine)
                except Exception as exc:  # kept per target; the stream is tried again next round
                    failed.add(target.key)
                    self._failed_targets.add(target.key)
                    stats.error = f"{type(exc).__name__}: {exc}"
                    log.warning("projection %s failed on %s: %s", target.key, stream_id, stats.error)
                    return
                checkpoints[target.key] = mine[-1].position
                with self._lock:
                    stats.applied += len(mine)
                stats.updated_at = self.clock()

            self._each_target(apply, targets)
            low = events[-1].position
        return not failed

    def _read(self, stream_id: str, low: int, head: int) -> tuple[list[StoredEvent], DamagedEvent | None]:
        """The stream's next page after ``low``; one that meets an event that cannot be read back ends before it."""
        try:
            return self.store.read(stream_id, gt=low, lte=min(head, low + self.page)), None
        except DamagedEvent as damaged:
            if not low < damaged.position <= head:
                raise
            before = self.store.read(stream_id, gt=low, lte=damaged.position - 1) if damaged.position > low + 1 else []
            return before, damaged

    def _skip_unreadable(
        self,
        stream_id: str,
        damaged: DamagedEvent,
        head: int,
        targets: Sequence[StreamTarget],
        checkpoints: dict[str, int],
        failed: set[str],
    ) -> None:
        """Every target not past ``head`` skips the stream from the event that cannot be read back."""

        def skip(target: StreamTarget) -> None:
            if target.key in failed or checkpoints[target.key] >= head:
                return
            position = max(damaged.position, checkpoints[target.key] + 1)
            try:
                target.skip_unreadable(stream_id, position, damaged.reason, upto=head)
            except Exception as exc:  # kept per target, as a failed apply is
                failed.add(target.key)
                self._failed_targets.add(target.key)
                self._stats(target).error = f"{type(exc).__name__}: {exc}"
                return
            checkpoints[target.key] = head

        self._each_target(skip, targets)

    def step(self, shard: int, listed: dict[str, int] | None = None) -> int:
        """One shard's round (on its hinted streams, ``listed`` if given); returns how many were settled.

        A stream counts only when its head reached its highest hint: a hint above the head (an append
        in flight, or one whose outcome stayed unknown) is not work done, so an idle runner rests.
        """
        hinted = self.feed.pending(shard=shard, limit=self.streams) if listed is None else listed
        pending = list(hinted)
        if not pending:
            return 0

        def head(stream_id: str) -> int | None:
            try:
                return self.store.version(stream_id)
            except Exception as exc:  # this stream waits for the next round; the others go on
                self._failed = True
                self.error = f"{type(exc).__name__}: {exc}"
                return None

        heads = dict(zip(pending, self._map(head, pending), strict=True))
        targets = list(self.targets())  # after the heads: see the class docstring
        if not targets:
            return 0  # never settle what nothing applied

        def one(stream_id: str) -> bool:
            found = heads[stream_id]
            if found is None:
                return False
            try:
                done = self.bring_up(stream_id, found, targets)
            except Exception as exc:  # reading the stream failed: kept, tried next round
                self._failed = True
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("feed: cannot bring %s up: %s", stream_id, self.error)
                return False
            if done:
                self.feed.settle(shard=shard, stream_id=stream_id, upto=found)
            return done and found >= hinted[stream_id]

        return sum(1 for done in self._map(one, pending) if done)

    def round(self) -> int:
        """Every shard once; returns how many streams were settled. Raises what listing the feed raised.

        Each shard is listed from where its last listing stopped, so streams that keep failing (or
        keep a hint above their head) cannot hide the ones after them.
        """
        self._failed = False
        self._failed_targets.clear()

        def listing(shard: int) -> dict[str, int]:
            found = self.feed.pending(shard=shard, limit=self.streams, after=self._cursors.get(shard))
            if len(found) < self.streams:
                self._cursors.pop(shard, None)  # the end of the shard: start over next time
            else:
                self._cursors[shard] = max(found)
            return found

        listed = self._map(listing, range(self.feed.shards))
        settled = sum(self.step(shard, found) for shard, found in enumerate(listed) if found)
        if not self._failed:
            self.error = None
        for key, stats in self.stats.items():
            if key not in self._failed_targets:
                stats.error = None
        return settled

    def sweep(
        self, targets: Sequence[StreamTarget], *, after: str | None = None, limit: int = 500
    ) -> tuple[int, str | None]:
        """Bring ``targets`` up on one page of the store's streams after ``after``; returns (events applied, cursor).

        The cursor is None once the last stream was swept. Nothing is settled: hints are the rounds' business.
        """
        streams = self.store.stream_ids(after=after, limit=limit)
        before = sum(self._stats(t).applied for t in targets)
        heads = dict(zip(streams, self._map(self.store.version, streams), strict=True))
        results = self._map(lambda s: self.bring_up(s, heads[s], targets), streams)
        if not all(results):
            failed = [t.key for t in targets if self._stats(t).error]
            raise OperationalError(f"sweep: some streams could not be applied ({', '.join(failed)})")
        applied = sum(self._stats(t).applied for t in targets) - before
        return applied, (streams[-1] if len(streams) == limit else None)

    def close(self) -> None:
        for pool in (self._pool, self._target_pool):
            if pool is not None:
                pool.shutdown(wait=True)
        self._pool = self._target_pool = None
