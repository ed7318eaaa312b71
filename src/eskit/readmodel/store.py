"""The read-model store port: tables, checkpoints, a registry of versions and the runner's lease.

One adapter per backend (SQLite beside a SQLite store, Cassandra in the
store's keyspace, memory) keeps, for a deployment:

* each projection version's tables (:class:`~eskit.readmodel.tables.TableSet`)
  and checkpoints, and the target that applies the feed to them
  (:meth:`ReadModelStore.target`): a :class:`~eskit.projection.ProjectionTarget`
  where the store's feed is one sequence, a :class:`~eskit.projection.StreamTarget`
  where it is a stream feed (:attr:`ReadModelStore.follows` says which);
* the checkpoints of followers whose effect is not a table but events
  published to a :class:`~eskit.readmodel.sink.Sink` (a relay), and their
  targets (:meth:`ReadModelStore.sink_target`);
* the registry: which versions of each projection exist, which one answers
  reads (``active``) and which are being filled (``building``), and what the
  runner last reported about each (events applied, when, its error), so every
  process reads the same status;
* the runner lease, so that one runner of a deployment works at a time. The
  lease is for economy, never for correctness: every backend applies each event
  once whatever the number of runners (a checkpoint moved in the batch's own
  transaction on SQLite, effects idempotent in position elsewhere).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from eskit.events import StoredEvent
from eskit.projection import ProjectionTarget, StreamTarget
from eskit.readmodel.sink import Sink
from eskit.readmodel.tables import Table, TableSet, Writer

__all__ = ["ACTIVE", "BUILDING", "Handler", "Progress", "ReadModelStore", "Version", "table_prefix"]

#: a projection's effect function: one stored event of a stream, and the writer of its effects
Handler = Callable[[str, StoredEvent, Writer], None]

BUILDING = "building"
ACTIVE = "active"


@dataclass(frozen=True)
class Version:
    """A projection version in the registry.

    ``state`` is ``building`` (being filled from the start) or ``active`` (answers reads);
    ``layout`` is the projection's table layout it was built with; ``cursor`` where the fill of a
    building version stands (a stream id, on stores that fill by sweeping streams); ``applied``,
    ``updated_at`` and ``error`` are what the runner last reported.
    """

    name: str
    version: int
    state: str
    layout: int = 1
    cursor: str | None = None
    applied: int = 0
    updated_at: datetime | None = None
    error: str | None = None

    @property
    def prefix(self) -> str:
        """The version's tables start with this."""
        return table_prefix(self.name, self.version)


def table_prefix(name: str, version: int) -> str:
    return f"rm_{name}_v{version}_"


@dataclass(frozen=True)
class Progress:
    """What a runner reports of one version: events applied since its last report, when, its error."""

    name: str
    version: int
    applied: int
    updated_at: datetime | None
    error: str | None


class ReadModelStore(abc.ABC):
    """Port: where a deployment's read models live (see the module docstring)."""

    #: how its targets follow the feed: ``sequence`` (an EventFeed) or ``streams`` (a StreamFeed)
    follows: Literal["sequence", "streams"]

    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether read models were ever kept here (opening the store creates nothing until a runner writes)."""

    def belongs(self, store_id: str | None, head: int) -> bool:
        """Whether these read models follow the store with ``store_id`` (its feed at ``head``), or may adopt it.

        False when they were built from another store (read models kept apart from their store, as
        a SQLite read-model file is, can be left behind while the store is made anew). This default,
        for read models that live in their store (a keyspace) or its process, says True.
        """
        return True

    def begin_round(self) -> None:  # noqa: B027 - optional hook
        """Called by a runner before each round (e.g. to learn what other runners recorded)."""

    def follow(self, store_id: str | None, head: int) -> bool:
        """Make these read models follow the store ``store_id``; True when that emptied them (another store's).

        A runner calls it before it applies anything. This default does nothing.
        """
        return False

    # -- tables and targets ------------------------------------------------------------

    @abc.abstractmethod
    def tables(self, name: str, version: int, tables: Sequence[Table]) -> TableSet:
        """The tables of projection ``name`` at ``version`` (made or not)."""

    @abc.abstractmethod
    def target(self, name: str, version: int, tables: TableSet, handle: Handler) -> ProjectionTarget | StreamTarget:
        """The target that applies the feed to ``tables`` through ``handle``, with its own checkpoints."""

    @abc.abstractmethod
    def sink_target(self, name: str, version: int, tables: TableSet, sink: Sink) -> ProjectionTarget | StreamTarget:
        """The target that publishes the feed to ``sink``, with checkpoints kept here (``tables`` has none).

        Its checkpoint moves only after :meth:`Sink.publish` returned (see :mod:`eskit.readmodel.sink`):
        where the feed is one sequence, a batch is published, then the checkpoint is moved with the
        same compare-and-set as a table projection's (a batch another runner moved past meanwhile was
        published twice, and is refused); where it is per stream, a stream's events are published,
        then its checkpoint is written. It never skips a stream.
        """

    # -- the registry -------------------------------------------------------------------

    @abc.abstractmethod
    def versions(self, names: Sequence[str]) -> dict[str, list[Version]]:
        """The registered versions of each of ``names`` (every name a key), oldest first."""

    @abc.abstractmethod
    def register(self, name: str, version: int, *, state: str, layout: int) -> None:
        """Register a version (or change its state); its progress and cursor are kept."""

    @abc.abstractmethod
    def set_cursor(self, name: str, version: int, cursor: str | None) -> None:
        """Record where the fill of a building version stands."""

    @abc.abstractmethod
    def report(self, progress: Sequence[Progress]) -> None:
        """Record what a runner did (events applied since its last report, when, its error)."""

    @abc.abstractmethod
    def forget(self, name: str, version: int) -> None:
        """Remove a version from the registry (its tables are dropped by the caller)."""

    # -- the lease ------------------------------------------------------------------------

    @abc.abstractmethod
    def acquire_lease(self, name: str, holder: str, *, ttl: float) -> int | None:
        """Take or renew lease ``name`` for ``holder``; its token (grows with each new holder), or None."""

    @abc.abstractmethod
    def release_lease(self, name: str, holder: str) -> None:
        """Let the lease go, if ``holder`` has it."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the store holds (files, connections it owns)."""
