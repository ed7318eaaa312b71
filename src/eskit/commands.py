"""Running a command on an aggregate: per-aggregate turns, a cache of loaded aggregates, retry on conflict.

A command is a function of the aggregate that checks, records events and
returns a value. :class:`CommandRunner` loads the aggregate (from its cache
when it can), runs the command, saves what it recorded and, when another
writer got there first, reloads and runs it again.

A cached aggregate is trusted without reading the store first: when another
process appended since, the command's conditional append fails and the runner
reloads, so no decision on stale state is ever stored. An answer that stores
nothing (a refusal, a question) cannot be checked that way, so before it is
given the runner reads what was appended after the cached state (one read,
usually of nothing) and, when there is something, decides again.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Generic, TypeVar

from eskit.aggregate import Aggregate
from eskit.budget import command_budget, remaining
from eskit.events import EventMetadata
from eskit.exceptions import AggregateNotFound, ConcurrencyError, StoreError
from eskit.repository import Repository

__all__ = ["CommandRunner"]

log = logging.getLogger(__name__)

A = TypeVar("A", bound=Aggregate)
R = TypeVar("R")

_TURN_LOCKS = 256


class CommandRunner(Generic[A]):
    """Runs commands on the aggregates of one repository.

    With ``cache_size`` > 0, aggregates that commands left in their stored
    state are kept in memory (least recently used dropped first) and the next
    command reads only the events appended after them, by any process. The
    cache hands each aggregate to one command at a time, so no two commands
    ever mutate the same object. Commands on one aggregate within this process
    take turns (striped locks), so they queue instead of conflicting;
    optimistic concurrency still guards against other processes.
    """

    def __init__(self, repository: Repository[A], *, cache_size: int = 0) -> None:
        self.repository = repository
        self.cache_size = cache_size
        self._cache: OrderedDict[str, A] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._turns = [threading.Lock() for _ in range(_TURN_LOCKS)]

    def run(
        self,
        aggregate_id: str,
        command: Callable[[A], R],
        *,
        metadata: EventMetadata | Callable[[A, R], EventMetadata | Sequence[EventMetadata]],
        create: bool = False,
        new: bool = False,
        max_attempts: int = 10,
        on_conflict: Callable[[int], None] | None = None,
    ) -> R:
        """Run ``command`` on the latest state and save what it recorded; retry on conflict.

        ``command`` receives the loaded aggregate (a new, empty one when
        ``create`` is true and the stream has no events) and returns any value,
        which ``run`` returns after saving. ``metadata`` is the metadata to save
        the events with, or a function of the aggregate and the result that
        builds it (so it can record the answer). On :class:`ConcurrencyError`
        the aggregate is reloaded and the command run again, up to
        ``max_attempts`` times in all, with a short random backoff, and only
        while the store's :attr:`~eskit.ports.EventStore.command_budget` (from
        the command's arrival, see :mod:`eskit.budget`) is not spent; the last
        conflict is re-raised. Raises :class:`AggregateNotFound` for a missing
        aggregate unless ``create``; exceptions raised by ``command`` propagate
        and nothing is saved, once the state they were decided on is shown
        current: a cached aggregate is caught up first, and on a store whose
        reads may miss another region's appends (:meth:`EventStore.read_latest`)
        the stream's head is read at the level that sees them, and the command
        decided again on the latest state when it moved. ``new`` (with ``create``) says the stream is
        expected not to exist: the first attempt starts from an empty aggregate
        without reading the store (its append, conditional on an empty stream,
        shows whether it was).
        """
        # The budget runs from the command's arrival: its wait for the aggregate's turn spends it too.
        with command_budget(self.repository.events.command_budget), self._turn(aggregate_id):
            aggregate: A | None = None
            verified = False  # whether ``aggregate`` was read from the store for this command
            confirmed = False  # whether a refusal was checked against every region's appends
            reload_at: int | None = None  # after a conflict: the version the store reported
            attempt = 1
            while True:
                if aggregate is None:
                    aggregate = self._take_cached(aggregate_id) if reload_at is None else None
                    verified = False
                    if aggregate is None and new and create and attempt == 1 and reload_at is None:
                        aggregate = self.repository.aggregate_cls(aggregate_id)
                    elif aggregate is None:
                        aggregate = self._load(aggregate_id, create=create, version=reload_at)
                        verified = True
                try:
                    result = command(aggregate)
                except Exception:
                    if not verified:
                        # Decided on state nobody read for this command: the refusal stands only if that
                        # state was current. Half-changed (or assumed new), it is read afresh.
                        if aggregate.pending_events or aggregate.version == 0:
                            aggregate, verified = self._load(aggregate_id, create=create), True
                            continue
                        if self._catch_up(aggregate):
                            verified = True
                            continue
                    if not confirmed and self._missed_appends(aggregate):
                        # The read behind the refusal missed another region's append: decide again
                        # on the stream as every region left it.
                        confirmed = True
                        self.repository.events.read_latest(self.repository.stream_id(aggregate_id))
                        aggregate, verified = self._load(aggregate_id, create=create), True
                        continue
                    self._keep_unchanged(aggregate)
                    raise
                if aggregate.pending_events:
                    meta = metadata if isinstance(metadata, EventMetadata) else metadata(aggregate, result)
                    try:
                        self.repository.save(aggregate, meta)
                    except ConcurrencyError as exc:
                        if on_conflict is not None:
                            on_conflict(attempt)
                        left = remaining()
                        if attempt == max_attempts or (left is not None and left <= 0):
                            raise
                        attempt += 1
                        # Jittered, growing backoff: writers in other processes get out of step.
                        time.sleep(random.uniform(0, min(0.05, 0.001 * 2**attempt)))
                        # Reload exactly up to the version the refusal reported (one bounded read).
                        moved = exc.actual is not None and exc.actual > exc.expected
                        aggregate, reload_at = None, (exc.actual if moved else None)
                        continue
                elif not verified:
                    # An answer that stores nothing, decided on state nobody read for this command:
                    # it stands only if that state was current; otherwise decide again on what is.
                    if aggregate.version == 0:
                        aggregate, verified = self._load(aggregate_id, create=create), True
                        continue
                    if self._catch_up(aggregate):
                        verified = True
                        continue
                if aggregate.version > 0:
                    self._keep(aggregate)
                return result

    @contextmanager
    def _turn(self, aggregate_id: str) -> Iterator[None]:
        """The aggregate's turn, waited for at most what is left of the command's budget."""
        lock = self._turns[hash(aggregate_id) % _TURN_LOCKS]
        left = remaining()
        if not lock.acquire(timeout=-1 if left is None else max(0.0, left)):
            # Commands ahead of this one on the aggregate spent its budget: as busy as a conflict.
            raise ConcurrencyError(self.repository.stream_id(aggregate_id), -1, None)
        try:
            yield
        finally:
            lock.release()

    def evict(self, aggregate_id: str) -> None:
        """Drop the aggregate from the cache (the next command loads it, and its stream's key, afresh)."""
        with self._cache_lock:
            self._cache.pop(aggregate_id, None)

    def _missed_appends(self, aggregate: A) -> bool:
        """Whether the stream holds appends the reads behind ``aggregate`` missed, on a store whose
        plain reads may miss some (:meth:`EventStore.read_latest`): one read at the level that sees
        them all. False at once on a store whose reads miss nothing."""
        events, stream_id = self.repository.events, self.repository.stream_id(aggregate.id)
        if not events.read_latest(stream_id):
            return False
        try:
            return events.version(stream_id) != aggregate.stored_version
        except StoreError as exc:
            # No quorum to ask (the store's gate has learned it): the refusal stands on what this
            # region holds, as reads do while it is cut off.
            log.info("refusal on %s not checked against every region: %s", stream_id, exc)
            return False

    def _catch_up(self, aggregate: A) -> bool:
        """Fold in what was appended after ``aggregate`` (which holds no pending events); True if anything was."""
        found = self.repository.events_after(aggregate)
        for recorded in found:
            aggregate.replay(recorded.event, recorded.metadata)
        return bool(found)

    def _keep_unchanged(self, aggregate: A) -> None:
        """Cache an aggregate a failed command left as the store holds it (it recorded nothing)."""
        if not aggregate.pending_events and aggregate.version > 0:
            self._keep(aggregate)

    def _load(self, aggregate_id: str, *, create: bool, version: int | None = None) -> A:
        try:
            return self.repository.load(aggregate_id, version=version)
        except AggregateNotFound:
            if not create:
                raise
            return self.repository.aggregate_cls(aggregate_id)

    def _take_cached(self, aggregate_id: str) -> A | None:
        """Take (not copy) a cached aggregate, as it was when cached: nothing is read (see the module docstring)."""
        if self.cache_size <= 0:
            return None
        with self._cache_lock:
            return self._cache.pop(aggregate_id, None)

    def _keep(self, aggregate: A) -> None:
        """Cache an aggregate whose state is exactly what the store holds (no pending events)."""
        if self.cache_size <= 0 or aggregate.pending_events:
            return
        with self._cache_lock:
            self._cache[aggregate.id] = aggregate
            self._cache.move_to_end(aggregate.id)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
