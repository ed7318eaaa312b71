"""Following a feed with one commit order (SQLite, memory): a loop that turns it into a read model, each event once.

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

from eskit.exceptions import DamagedEvent, EskitError, OperationalError, SerializationError
from eskit.ports import EventFeed, FeedEvent
from eskit.tracing import Attribute, tracer

__all__ = [
    "CANNOT_APPLY",
    "MAX_SKIPPED_STREAMS",
    "CheckpointMoved",
    "ProjectionStatus",
    "ProjectionTarget",
    "Projector",
    "SkippedStream",
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
        #: events this projector applied since it was made
        self.applied = 0
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
            self._apply(events, after)
        except CheckpointMoved:
            return 0
        self.updated_at = self.clock()
        self.applied += len(events)
        return len(events)

    def _apply(self, events: Sequence[FeedEvent], after: int) -> None:
        current = tracer()
        if current is None:
            self.target.apply(events, after=after)
            return
        attributes: dict[str, Attribute] = {
            "eskit.projection": self.target.name,
            "eskit.count": len(events),
            "eskit.after": after,
        }
        with current.span("projection batch", attributes) as span:
            try:
                self.target.apply(events, after=after)
            except CheckpointMoved:
                span.event("checkpoint moved", {})
                raise
            except Exception as exc:
                span.fail(exc)
                raise

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
