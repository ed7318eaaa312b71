"""Following a feed with one commit order (SQLite, memory): a loop that turns it into a read model, each event once.

A :class:`ProjectionTarget` keeps the read model and its checkpoint (the feed
sequence it has applied up to) and applies a batch *and* moves the checkpoint
in one atomic step, refusing with :class:`CheckpointMoved` when the checkpoint
is no longer where the batch starts. A :class:`Projector` reads the feed after
the target's checkpoint, applies batches, and on an error records it, backs
off (doubling, bounded) and tries again: it never stops silently. A killed
projector's half-applied batch was never committed; two projectors on one
target cannot both apply a batch, because only one moves the checkpoint.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from eskit.exceptions import EskitError
from eskit.ports import EventFeed, FeedEvent

__all__ = ["CheckpointMoved", "ProjectionStatus", "ProjectionTarget", "Projector"]

log = logging.getLogger(__name__)


class CheckpointMoved(EskitError):
    """The target's checkpoint is not where the batch starts: another runner applied it (nothing was applied)."""


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
        """


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
        events = self.feed.read(shard=self.shard, after=after, limit=self.batch)
        if not events:
            return 0
        try:
            self.target.apply(events, after=after)
        except CheckpointMoved:
            return 0
        self.updated_at = self.clock()
        self.applied += len(events)
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
            pending = self.feed.read(shard=self.shard, after=position, limit=1)
            if pending:
                lag_seconds = max(0.0, (self.clock() - pending[0].event.recorded_at).total_seconds())
        if self.error is not None:
            state = "failing"
        elif head > position:
            state = "running" if self.running else "stopped"
        else:
            state = "caught_up"
        return ProjectionStatus(
            self.target.name, state, position, max(0, head - position), lag_seconds, self.updated_at, self.error
        )
