"""Following a store without one commit order (Cassandra, and memory's stream feed): stream by stream.

A :class:`~eskit.ports.StreamFeed` tells a follower *which streams* may hold
events it has not applied (every append leaves a hint before it is proposed);
each :class:`StreamTarget` keeps a checkpoint per stream and makes its effects
idempotent in position. A :class:`StreamFollower` round:

1. lists each shard's hinted streams (resuming where the shard's last listing
   stopped, so streams that keep failing cannot hide the ones after them);
2. reads each listed stream's head ``h``;
3. asks which targets exist *after* reading the heads (a target registered
   later is filled by its own sweep, from heads read after its registration);
4. brings every target up to ``h`` on each stream, reading the stream's events
   once for all targets;
5. settles each stream every target reached, which removes its hints at or
   below ``h``.

Why nothing is missed: an append's hint stands before the append can commit,
and is removed only by a settle at or above its head, after every target
applied the stream up to there; appends to one stream commit in increasing
head order, so one that commits after ``h`` was read has a hint above ``h``
that survives. A stream that fails keeps its hints and is tried again in a
later round; the others go on.
"""

from __future__ import annotations

import abc
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

from eskit.events import StoredEvent
from eskit.exceptions import DamagedEvent, OperationalError
from eskit.ports import EventStore, StreamFeed
from eskit.projection.sequence import SkippedStream
from eskit.tracing import tracer

__all__ = ["FollowerStats", "StreamFollower", "StreamTarget"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


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

        A target that skips streams it cannot apply records the skip here, then moves the checkpoint
        (see :mod:`eskit.projection.sequence` for what is skipped and why).
        """

    def skip_unreadable(self, stream_id: str, position: int, reason: str, *, upto: int) -> None:
        """Skip the stream from ``position`` (an event there cannot be read back), moving its checkpoint to ``upto``.

        This default cannot skip: it raises, and the stream is tried again in the next round.
        """
        raise DamagedEvent(stream_id, position, reason)

    def skipped(self) -> Sequence[SkippedStream]:
        """The streams this target skips (none, unless it can skip)."""
        return []

    def hold(self) -> None:
        """Its runner took the lease anew: from now on, and until :meth:`forget`, no other runner moves
        this target's checkpoints, so a target may keep in memory those it read or wrote (after dropping
        what it kept before: another runner may have moved them meanwhile). This default keeps nothing."""
        return None

    def forget(self) -> None:
        """Its runner holds the lease no longer (or stops): drop what :meth:`hold` let it keep, and read
        every checkpoint from the store again. This default keeps nothing."""
        return None


@dataclass
class FollowerStats:
    """What a follower knows of one target: events applied since it started, the last error, when it last applied."""

    applied: int = 0
    error: str | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class _Hinted:
    """A stream a shard's listing named: its shard, its highest hint, and the head read for it (None: unreadable)."""

    shard: int
    stream_id: str
    hint: int
    head: int | None = None


class StreamFollower:
    """Follows a :class:`~eskit.ports.StreamFeed` into a set of :class:`StreamTarget` (see the module docstring).

    ``targets`` is called once per round, after the heads are read. ``streams``
    bounds how many hinted streams a shard's listing takes per round, ``page`` how
    many events are read at once, ``workers`` how many streams are followed at
    once (each target's effects on a stream are written side by side too).
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
        self.error: str | None = None  # the feed's own (listing, reading heads or events)
        self._lock = threading.Lock()
        self._cursors: dict[int, str] = {}  # per shard: the last stream listed, when the listing was cut
        self._round_failed = False
        self._failed_targets: set[str] = set()
        self._stream_pool: ThreadPoolExecutor | None = None
        self._target_pool: ThreadPoolExecutor | None = None

    # -- one round ------------------------------------------------------------------------

    def round(self) -> int:
        """Every shard once; return how many streams were settled with their head at their highest hint.

        Raises what listing the feed raised. A stream whose head is above none of its hints is work
        not done (an append in flight, or one whose outcome stayed unknown), so an idle runner rests.
        """
        self._round_failed = False
        self._failed_targets.clear()
        listed = [item for found in self._map(self._list, range(self.feed.shards)) for item in found]
        settled = self._follow(listed) if listed else 0
        if not self._round_failed:
            self.error = None
        for key, stats in self.stats.items():
            if key not in self._failed_targets:
                stats.error = None
        return settled

    def step(self, shard: int, listed: dict[str, int] | None = None) -> int:
        """One shard's round (on ``listed`` hinted streams if given); return how many were settled."""
        hinted = self.feed.pending(shard=shard, limit=self.streams) if listed is None else listed
        return self._follow([_Hinted(shard, stream_id, hint) for stream_id, hint in hinted.items()])

    def _list(self, shard: int) -> list[_Hinted]:
        found = self.feed.pending(shard=shard, limit=self.streams, after=self._cursors.get(shard))
        if len(found) < self.streams:
            self._cursors.pop(shard, None)  # the end of the shard: start over next time
        else:
            self._cursors[shard] = max(found)
        return [_Hinted(shard, stream_id, hint) for stream_id, hint in found.items()]

    def _follow(self, listed: list[_Hinted]) -> int:
        with_heads = self._map(self._read_head, listed)
        targets = list(self.targets())  # after the heads: see the module docstring
        if not targets:
            return 0  # never settle what nothing applied
        done = self._map(lambda hinted: self._settle(hinted, targets), with_heads)
        return sum(1 for settled in done if settled)

    def _read_head(self, hinted: _Hinted) -> _Hinted:
        try:
            return _Hinted(hinted.shard, hinted.stream_id, hinted.hint, self.store.version(hinted.stream_id))
        except Exception as exc:  # this stream waits for the next round; the others go on
            self._feed_failed(exc, f"cannot read the head of {hinted.stream_id!r}")
            return hinted

    def _settle(self, hinted: _Hinted, targets: Sequence[StreamTarget]) -> bool:
        """Bring the stream up in every target and settle it; True when its head reached its highest hint."""
        if hinted.head is None:
            return False
        try:
            reached = self.bring_up(hinted.stream_id, hinted.head, targets)
            if reached:
                self.feed.settle(shard=hinted.shard, stream_id=hinted.stream_id, upto=hinted.head)
        except Exception as exc:  # reading or settling the stream failed: kept, tried next round
            self._feed_failed(exc, f"cannot bring {hinted.stream_id!r} up")
            return False
        return reached and hinted.head >= hinted.hint

    def _feed_failed(self, exc: Exception, context: str) -> None:
        self._round_failed = True
        self.error = f"{type(exc).__name__}: {exc}"
        log.warning("feed: %s: %s", context, self.error)

    # -- one stream -----------------------------------------------------------------------

    def bring_up(self, stream_id: str, head: int, targets: Sequence[StreamTarget]) -> bool:
        """Apply the stream's events up to ``head`` to every target; True when all of them got there.

        The events are read once for all targets, a page at a time, each target taking those after
        its own checkpoint. A target that fails keeps its error (see :attr:`stats`) and takes no more
        of this stream this round; the others go on.
        """
        found = self._each(lambda t: t.checkpoints([stream_id]).get(stream_id, 0), targets)
        checkpoints = {t.key: position for t, position in zip(targets, found, strict=True)}
        failed: set[str] = set()
        low = min(checkpoints.values(), default=head)
        while low < head:
            events, damaged = self._read(stream_id, low, head)
            if damaged is not None and not events:
                self._skip_unreadable(stream_id, damaged, head, targets, checkpoints, failed)
                low = head
                continue
            if not events or events[0].position != low + 1:
                raise OperationalError(f"stream {stream_id!r} returned no events after {low} though its head is {head}")
            behind = [t for t in targets if t.key not in failed and checkpoints[t.key] < events[-1].position]
            outcomes = self._each(partial(self._apply_page, stream_id, events, checkpoints), behind)
            for target, error in zip(behind, outcomes, strict=True):
                if error is None:
                    checkpoints[target.key] = events[-1].position
                else:
                    failed.add(target.key)
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
                with self._lock:
                    self._failed_targets.add(target.key)
                self._stats(target).error = f"{type(exc).__name__}: {exc}"
                return
            checkpoints[target.key] = head

        self._each(skip, targets)

    def _apply_page(
        self, stream_id: str, events: Sequence[StoredEvent], checkpoints: dict[str, int], target: StreamTarget
    ) -> str | None:
        return self._apply(target, stream_id, events, checkpoints[target.key])

    def _apply(self, target: StreamTarget, stream_id: str, events: Sequence[StoredEvent], after: int) -> str | None:
        """Apply the events above ``after`` to ``target``; the error it raised, or None."""
        mine = [e for e in events if e.position > after]
        stats = self._stats(target)
        current = tracer()
        try:
            if current is None:
                target.apply(stream_id, mine)
            else:
                with current.span("projection batch", {"eskit.projection": target.key, "eskit.count": len(mine)}):
                    target.apply(stream_id, mine)
        except Exception as exc:  # kept per target; the stream is tried again next round
            error = f"{type(exc).__name__}: {exc}"
            with self._lock:
                stats.error = error
                self._failed_targets.add(target.key)
            log.warning("projection %s failed on %s: %s", target.key, stream_id, error)
            return error
        with self._lock:
            stats.applied += len(mine)
            stats.updated_at = self.clock()
        return None

    def _stats(self, target: StreamTarget) -> FollowerStats:
        with self._lock:
            return self.stats.setdefault(target.key, FollowerStats())

    # -- sweeping every stream --------------------------------------------------------------

    def sweep(
        self, targets: Sequence[StreamTarget], *, after: str | None = None, limit: int = 500
    ) -> tuple[int, str | None]:
        """Bring ``targets`` up on one page of the store's streams after ``after``; return (events applied, cursor).

        A new version of a projection is filled this way, hinted or not. The cursor is None once the
        last stream was swept. Nothing is settled: hints are the rounds' business. Raises
        :class:`OperationalError` when some stream could not be applied (the page is tried again).
        """
        streams = self.store.stream_ids(after=after, limit=limit)
        before = sum(self._stats(t).applied for t in targets)
        heads = self._map(self.store.version, streams)
        reached = self._map(
            lambda pair: self.bring_up(pair[0], pair[1], targets), list(zip(streams, heads, strict=True))
        )
        if not all(reached):
            failed = sorted({f"{t.key}: {self._stats(t).error}" for t in targets if self._stats(t).error})
            raise OperationalError(f"sweep: some streams could not be applied ({'; '.join(failed)})")
        applied = sum(self._stats(t).applied for t in targets) - before
        return applied, (streams[-1] if len(streams) == limit else None)

    # -- running things side by side -------------------------------------------------------------

    def _map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """``fn`` over streams (or shards), ``workers`` at once."""
        if len(items) <= 1:
            return [fn(item) for item in items]
        if self._stream_pool is None:
            self._stream_pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="eskit-follow")
        return list(self._stream_pool.map(fn, items))

    def _each(self, fn: Callable[[StreamTarget], R], targets: Sequence[StreamTarget]) -> list[R]:
        """``fn`` on every target at once (its own pool: the streams' workers wait on it)."""
        if len(targets) <= 1:
            return [fn(t) for t in targets]
        if self._target_pool is None:
            self._target_pool = ThreadPoolExecutor(max_workers=4 * self.workers, thread_name_prefix="eskit-target")
        return list(self._target_pool.map(fn, targets))

    def close(self) -> None:
        """Stop the worker threads (after the work in flight)."""
        pools: list[Any] = [self._stream_pool, self._target_pool]
        self._stream_pool = self._target_pool = None
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=True)
