"""Running a command on an aggregate: per-aggregate turns, a cache of loaded aggregates, retry on conflict.

A command is a function of the aggregate that checks, records events and
returns a value. :class:`CommandRunner` loads the aggregate (from its cache
when it can), runs the command, saves what it recorded and, when another
writer got there first, reloads and runs it again.
"""

from __future__ import annotations

import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from eskit.aggregate import Aggregate
from eskit.events import EventMetadata
from eskit.exceptions import AggregateNotFound, ConcurrencyError
from eskit.repository import Repository

__all__ = ["CommandRunner"]

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
        ``max_attempts`` times in all, with a short random backoff; the last
        conflict is re-raised. Raises :class:`AggregateNotFound` for a missing
        aggregate unless ``create``; exceptions raised by ``command`` propagate
        and nothing is saved.
        """
        with self._turns[hash(aggregate_id) % _TURN_LOCKS]:
            for attempt in range(1, max_attempts + 1):
                aggregate = self._take_cached(aggregate_id)
                if aggregate is None:
                    aggregate = self._load(aggregate_id, create=create)
                # An exception from the command leaves the aggregate half-changed: it is not cached again.
                result = command(aggregate)
                if aggregate.pending_events:
                    meta = metadata if isinstance(metadata, EventMetadata) else metadata(aggregate, result)
                    try:
                        self.repository.save(aggregate, meta)
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

    def evict(self, aggregate_id: str) -> None:
        """Drop the aggregate from the cache (the next command loads it, and its stream's key, afresh)."""
        with self._cache_lock:
            self._cache.pop(aggregate_id, None)

    def _load(self, aggregate_id: str, *, create: bool) -> A:
        try:
            return self.repository.load(aggregate_id)
        except AggregateNotFound:
            if not create:
                raise
            return self.repository.aggregate_cls(aggregate_id)

    def _take_cached(self, aggregate_id: str) -> A | None:
        """Take (not copy) a cached aggregate, brought up to date with the events after it."""
        if self.cache_size <= 0:
            return None
        with self._cache_lock:
            aggregate = self._cache.pop(aggregate_id, None)
        if aggregate is not None:
            for recorded in self.repository.events_after(aggregate):
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
