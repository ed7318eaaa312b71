"""The runner of a deployment's read models: one loop, whatever the backend.

:class:`ProjectionRunner` keeps every projection of a :class:`ProjectionSpec`
list in a :class:`~eskit.readmodel.store.ReadModelStore`. One :meth:`step`:

1. takes (or renews, at half its time) the runner lease; a process without it
   waits (several processes of a deployment may run one each);
2. registers version 1 of a projection that has none, and a new version of one
   whose table layout changed (the old one is dropped: its tables no longer fit
   the code that reads them);
3. follows the feed into every registered version: a
   :class:`~eskit.projection.Projector` per version on a store with one commit
   order, one :class:`~eskit.projection.StreamFollower` round otherwise;
4. fills building versions (a sweep of one page of streams, where the feed is
   per stream) and switches each that is through: it becomes ``active`` and the
   older versions are dropped;
5. lets the process managers act;
6. reports what changed to the registry, where every process reads the status.

:meth:`rebuild` fills a new version of one projection in the foreground while
the old one keeps answering reads, then switches. Errors never stop the loop:
each is kept (per projection version, in the registry) and tried again after a
backoff that doubles up to a bound.
"""

from __future__ import annotations

import abc
import logging
import os
import socket
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from eskit.exceptions import InterfaceError
from eskit.ports import EventFeed, FeedEvent
from eskit.projection import (
    FollowerStats,
    ProjectionStatus,
    ProjectionTarget,
    Projector,
    StreamFollower,
    StreamTarget,
    describe_skipped,
)
from eskit.readmodel.sink import Sink
from eskit.readmodel.store import ACTIVE, BUILDING, Handler, Progress, ReadModelStore, Version
from eskit.readmodel.tables import Table, TableSet
from eskit.stores.registry import Stores

__all__ = ["OTHER_STORE", "ProcessManager", "ProjectionRunner", "ProjectionSpec", "RunnerSettings"]

log = logging.getLogger(__name__)

#: what the status says of read models built from another store than the one they now stand beside
OTHER_STORE = (
    "these read models were built from another store (kept while the store was made anew, or the store was put "
    "back from an older copy): the runner empties them and builds them again from this store's first event"
)


@dataclass(frozen=True)
class ProjectionSpec:
    """A projection: its name, its tables and their layout (raise it when they change), its effect function.

    A spec with a ``sink`` (made with :meth:`publishing`) has no tables: its effect is each event
    published to the sink and acknowledged, and its store keeps only its checkpoints
    (see :mod:`eskit.readmodel.sink`).

    ``register=False``: this runner does not start the projection itself; it follows it only once
    some other process registered it. A process that knows a follower exists elsewhere (a relay
    configured in another process) declares it so: where the feed is per stream, a stream is
    settled only once *every* registered follower has it, so a runner that left it out would
    settle, and lose for it, what it has not yet published.
    """

    name: str
    tables: tuple[Table, ...]
    handle: Handler
    layout: int = 1
    sink: Sink | None = None
    register: bool = True
    #: events per batch where the feed is one sequence; None: the runner's (a sink waits for its
    #: destination's acknowledgements once per batch, so larger batches pay that wait less often)
    batch: int | None = None

    @classmethod
    def publishing(cls, name: str, sink: Sink, *, batch: int | None = None) -> ProjectionSpec:
        """A follower named ``name`` that publishes every accepted event to ``sink`` (a relay)."""
        return cls(name, (), _publishes_only, sink=sink, batch=batch)


def _publishes_only(stream_id: str, event: object, writer: object) -> None:
    raise AssertionError("a publishing spec has no table effect")  # its target calls the sink, never this


class ProcessManager(abc.ABC):
    """Work the runner does after following, while it holds the lease (e.g. sending commands a read model asks for).

    It reads the tables of :attr:`projection` (the version answering reads); its failures are
    reported in that projection's status and retried after a backoff.
    """

    #: the projection whose tables it reads and whose status carries its errors
    projection: str

    @abc.abstractmethod
    def act(self, tables: TableSet) -> int:
        """Do what is due; return how much was done (0 when nothing was)."""


@dataclass(frozen=True)
class RunnerSettings:
    """The runner's tuning; every field has its default here (and in the service's settings)."""

    #: seconds a runner's lease lasts; it is renewed at half that
    lease_ttl: float = 10.0
    #: events per batch when following one sequence
    batch: int = 500
    #: events one projection takes per step before the others get their turn
    step_events: int = 5000
    #: hinted streams a shard's listing takes per round (stream feeds)
    listing: int = 200
    #: events read from a stream at once (stream feeds)
    page: int = 1000
    #: streams followed at once (stream feeds)
    workers: int = 8
    #: streams a building version sweeps per step (stream feeds)
    sweep_page: int = 500
    #: seconds an idle runner waits between steps
    idle: float = 0.2
    #: the longest wait after repeated failures, in seconds
    max_backoff: float = 30.0


def _now() -> datetime:
    return datetime.now(UTC)


class _SharedReads(EventFeed):
    """A feed that answers a read again from the last one when it asks for the same events.

    The projections of a runner are usually at the same checkpoint: they then read the feed once
    per batch, not once each. The answer is the same prefix of the feed after ``after`` either way
    (the feed only grows), so a projector handed the earlier read applies what it would have; the
    runner forgets it at the start of each step, so a read at the feed's end is made again.
    """

    def __init__(self, feed: EventFeed, *, keep: int = 16) -> None:
        self.feed, self.keep = feed, keep
        self._reads: OrderedDict[tuple[int, int, int], list[FeedEvent]] = OrderedDict()

    @property
    def shards(self) -> int:
        return self.feed.shards

    def read(self, *, shard: int = 0, after: int = 0, limit: int = 1000) -> list[FeedEvent]:
        key = (shard, after, limit)
        found = self._reads.get(key)
        if found is None:
            found = self._reads[key] = self.feed.read(shard=shard, after=after, limit=limit)
            if len(self._reads) > self.keep:
                self._reads.popitem(last=False)
        return found

    def forget(self) -> None:
        self._reads.clear()

    def head(self, *, shard: int = 0) -> int:
        return self.feed.head(shard=shard)

    def store_id(self) -> str | None:
        return self.feed.store_id()


class ProjectionRunner:
    """Keeps the read models of one deployment (see the module docstring)."""

    def __init__(
        self,
        store: ReadModelStore,
        stores: Stores,
        specs: Sequence[ProjectionSpec],
        *,
        managers: Sequence[ProcessManager] = (),
        settings: RunnerSettings | None = None,
        lease: str = "read-side",
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self.store, self.stores, self.clock = store, stores, clock
        self.specs = {spec.name: spec for spec in specs}
        self.managers = list(managers)
        self.settings = settings or RunnerSettings()
        self.lease = lease
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        if store.follows == "sequence" and stores.feed is None:
            raise InterfaceError(f"the store {stores.url.split('?', 1)[0]} has no feed to follow")
        if store.follows == "streams" and stores.stream_feed is None:
            raise InterfaceError(f"the store {stores.url.split('?', 1)[0]} has no stream feed to follow")
        s = self.settings
        self.follower = (
            StreamFollower(
                stores.events,
                stores.stream_feed,
                self._following,
                streams=s.listing,
                page=s.page,
                workers=s.workers,
                clock=clock,
            )
            if store.follows == "streams" and stores.stream_feed is not None
            else None
        )
        #: the feed as the projectors read it: versions at the same checkpoint share one read
        self._shared_feed = _SharedReads(stores.feed) if stores.feed is not None else None
        self.token: int | None = None
        self.error: str | None = None  # the runner's own (the lease, the registry)
        self._renew_at = 0.0
        self._targets: dict[tuple[str, int], ProjectionTarget | StreamTarget] = {}
        self._projectors: dict[tuple[str, int], Projector] = {}
        self._registered: dict[str, list[Version]] = {name: [] for name in self.specs}
        self._reported: dict[tuple[str, int], tuple[int, str | None]] = {}
        self._manager_errors: dict[str, str] = {}
        self._manager_failures: dict[int, int] = {}
        self._manager_retry_at: dict[int, float] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # -- versions and their tables -------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self.specs)

    def tables(self, name: str) -> TableSet:
        """The tables of the version of ``name`` that answers reads (the newest active, else the newest building)."""
        spec = self.specs.get(name)
        if spec is None:
            raise KeyError(name)
        version = self._reading(self.store.versions([name])[name])
        return self.store.tables(name, version.version if version else 1, spec.tables)

    def target(self, name: str) -> ProjectionTarget | StreamTarget:
        """The target of the version of ``name`` that answers reads (its checkpoints tell how far it is)."""
        version = self._reading(self.store.versions([name])[name])
        return self._target(name, version.version if version else 1)

    @staticmethod
    def _reading(versions: Sequence[Version]) -> Version | None:
        active = [v for v in versions if v.state == ACTIVE]
        chosen = active or [v for v in versions if v.state == BUILDING]
        return max(chosen, key=lambda v: v.version) if chosen else None

    def _target(self, name: str, version: int) -> ProjectionTarget | StreamTarget:
        found = self._targets.get((name, version))
        if found is None:
            spec = self.specs[name]
            tables = self.store.tables(name, version, spec.tables)
            if spec.sink is not None:
                found = self.store.sink_target(name, version, tables, spec.sink)
            else:
                found = self.store.target(name, version, tables, spec.handle)
            if self.token is not None and isinstance(found, StreamTarget):
                found.hold()  # made while this runner holds the lease
            self._targets[(name, version)] = found
        return found

    def _projector(self, name: str, version: int) -> Projector:
        found = self._projectors.get((name, version))
        if found is None:
            target = self._target(name, version)
            assert isinstance(target, ProjectionTarget) and self._shared_feed is not None
            found = Projector(
                self._shared_feed,
                target,
                batch=self.specs[name].batch or self.settings.batch,
                max_backoff=self.settings.max_backoff,
                clock=self.clock,
            )
            self._projectors[(name, version)] = found
        return found

    def _following(self) -> list[StreamTarget]:
        """Every registered version (active and building): what a stream round brings up. Read after the heads."""
        self._registered = self.store.versions(self.names)
        targets = [self._target(v.name, v.version) for versions in self._registered.values() for v in versions]
        return [t for t in targets if isinstance(t, StreamTarget)]

    def _begin(self, name: str, version: int) -> None:
        """Create a version's tables, then register it as building (tables first: a runner may write at once)."""
        spec = self.specs[name]
        self.store.tables(name, version, spec.tables).create()
        self.store.register(name, version, state=BUILDING, layout=spec.layout)

    def _switch(self, name: str, version: int) -> None:
        """Make ``version`` answer reads and drop every older version of ``name``."""
        spec = self.specs[name]
        self.store.register(name, version, state=ACTIVE, layout=spec.layout)
        for old in self.store.versions([name])[name]:
            if old.version < version:
                self._drop(old)

    def _drop(self, old: Version) -> None:
        self.store.forget(old.name, old.version)
        self.store.tables(old.name, old.version, self.specs[old.name].tables).drop()
        key = (old.name, old.version)
        dropped = self._targets.pop(key, None)
        self._projectors.pop(key, None)
        self._reported.pop(key, None)
        if dropped is not None and self.follower is not None and isinstance(dropped, StreamTarget):
            self.follower.stats.pop(dropped.key, None)

    def _prepare(self) -> dict[str, list[Version]]:
        """Register what is missing: version 1 of a new projection, a new version when a layout changed."""
        registered = self.store.versions(self.names)
        changed = False
        for name, spec in self.specs.items():
            versions = registered[name]
            for old in [v for v in versions if v.layout != spec.layout]:
                log.warning(
                    "projection %s v%d has layout %d, the code %d: rebuilt", name, old.version, old.layout, spec.layout
                )
                self._drop(old)
                changed = True
            if spec.register and not [v for v in versions if v.layout == spec.layout]:
                self._begin(name, max((v.version for v in versions), default=0) + 1)
                changed = True
        if changed:
            registered = self.store.versions(self.names)
        self._registered = registered
        return registered

    # -- one step --------------------------------------------------------------------------------

    def _hold_lease(self) -> bool:
        if self.token is not None and time.monotonic() < self._renew_at:
            return True
        token = self.store.acquire_lease(self.lease, self.holder, ttl=self.settings.lease_ttl)
        if token is None:
            if self.token is not None:
                self._stream_targets(lambda target: target.forget())
            self.token = None
            return False
        if token != self.token:
            # Taken anew (another runner may have held it since): stream targets drop the checkpoints
            # they kept in memory, and keep those they read or write while this lease lasts.
            self._stream_targets(lambda target: target.hold())
        self.token, self._renew_at = token, time.monotonic() + self.settings.lease_ttl / 2
        return True

    def belongs(self) -> bool:
        """Whether the read models follow this store (False while they are another store's, until emptied)."""
        feed = self.stores.feed
        return feed is None or self.store.belongs(feed.store_id(), feed.head())

    def _follow_store(self) -> None:
        """Read models of another store are emptied before anything is applied to them."""
        feed = self.stores.feed
        if feed is not None and self.store.follow(feed.store_id(), feed.head()):
            self._targets.clear()
            self._projectors.clear()
            self._reported.clear()

    def step(self, *, manage: bool = True) -> int:
        """One round, if this runner holds the lease (see the module docstring); return the work done.

        ``manage=False`` leaves the process managers out of this round.
        """
        if not self._hold_lease():
            return 0
        self._follow_store()
        self.store.begin_round()
        registered = self._prepare()
        try:
            work = self._follow(registered)
            work += self._fill()
        finally:
            self._report()  # even when a step failed: other processes read the errors there
        if manage:
            work += self._manage()
            self._report()
        return work

    def _follow(self, registered: dict[str, list[Version]]) -> int:
        if self.follower is not None:
            return self.follower.round()
        if self._shared_feed is not None:
            self._shared_feed.forget()
        return sum(
            self._projector(v.name, v.version).tick(max_events=self.settings.step_events)
            for versions in registered.values()
            for v in versions
        )

    def _fill(self) -> int:
        """Fill building versions a step further; switch each that is through. Returns the work done."""
        work = 0
        for versions in self._registered.values():
            for version in versions:
                if version.state != BUILDING:
                    continue
                if self.follower is None:
                    projector = self._projector(version.name, version.version)
                    if projector.error is None and projector.target.checkpoint() >= self._head():
                        self._switch(version.name, version.version)
                        work += 1
                    continue
                work += self._sweep(version)
        return work

    def _head(self) -> int:
        assert self.stores.feed is not None
        return self.stores.feed.head()

    def _sweep(self, version: Version) -> int:
        """One page of streams into a building version (switching it once through); 1 when it did work."""
        assert self.follower is not None
        target = self._target(version.name, version.version)
        assert isinstance(target, StreamTarget)
        try:
            _applied, cursor = self.follower.sweep([target], after=version.cursor, limit=self.settings.sweep_page)
        except Exception as exc:  # kept as the version's error, tried again next step
            self.follower.stats.setdefault(target.key, FollowerStats()).error = f"{type(exc).__name__}: {exc}"
            log.warning("sweep of %s failed: %s", target.key, exc)
            return 0
        if cursor is None:
            self._switch(version.name, version.version)
        else:
            self.store.set_cursor(version.name, version.version, cursor)
        return 1

    def _manage(self) -> int:
        """Let each process manager act (after a failure, only once its backoff has passed)."""
        done = 0
        for index, manager in enumerate(self.managers):
            if time.monotonic() < self._manager_retry_at.get(index, 0.0):
                continue
            try:
                done += manager.act(self.tables(manager.projection))
            except Exception as exc:  # reported with its projection's status, retried later
                failures = self._manager_failures[index] = self._manager_failures.get(index, 0) + 1
                self._manager_errors[manager.projection] = f"{type(exc).__name__}: {exc}"
                delay = min(self.settings.max_backoff, 0.1 * 2 ** min(failures, 20))
                self._manager_retry_at[index] = time.monotonic() + delay
                log.warning("%s failed (%s); retrying in %.1f s", type(manager).__name__, exc, delay)
                continue
            self._manager_failures.pop(index, None)
            self._manager_errors.pop(manager.projection, None)
        return done

    def _local(self, version: Version) -> tuple[int, str | None, datetime | None]:
        """What this process knows of a version: events applied since it started, its error, when it applied."""
        key = (version.name, version.version)
        if self.follower is not None:
            target = self._targets.get(key)
            stats = self.follower.stats.get(target.key) if isinstance(target, StreamTarget) else None
            if stats is None:
                return 0, None, None
            return stats.applied, stats.error, stats.updated_at
        projector = self._projectors.get(key)
        if projector is None:
            return 0, None, None
        return projector.applied, projector.error, projector.updated_at

    def _report(self) -> None:
        """Write what changed in this runner's progress into the registry, where every process reads it."""
        progress = []
        for versions in self._registered.values():
            for version in versions:
                key = (version.name, version.version)
                if key not in self._targets:
                    continue
                applied, error, updated_at = self._local(version)
                if version.name in self._manager_errors:
                    error = error or self._manager_errors[version.name]
                reported = self._reported.get(key)
                if reported == (applied, error):
                    continue
                progress.append(
                    Progress(
                        version.name, version.version, applied - (reported[0] if reported else 0), updated_at, error
                    )
                )
                self._reported[key] = (applied, error)
        if progress:
            self.store.report(progress)

    # -- running --------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Step until ``stop`` is set; a failed step is reported and tried again after a growing pause."""
        failures = 0
        while not stop.is_set():
            try:
                busy = self.step()
                self.error, failures = None, 0
            except Exception as exc:  # the lease, the registry or the store failed: say so, try again
                failures += 1
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("read side: %s", self.error)
                stop.wait(min(self.settings.max_backoff, 0.2 * 2 ** min(failures, 10)))
                continue
            if not busy:
                stop.wait(self.settings.idle)

    def start(self) -> None:
        """Run :meth:`run` in a background thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, args=(self._stop,), name="read-side", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop the background thread (bounded) and let the lease go."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        if self.token is not None:
            try:
                self.store.release_lease(self.lease, self.holder)
            except Exception as exc:  # the store is gone: the lease runs out by itself
                log.info("read-side lease not released: %s", exc)
            self.token = None
            self._stream_targets(lambda target: target.forget())

    def _stream_targets(self, call: Callable[[StreamTarget], None]) -> None:
        for target in list(self._targets.values()):  # a status page may add one meanwhile
            if isinstance(target, StreamTarget):
                call(target)

    def close(self) -> None:
        self.stop()
        if self.follower is not None:
            self.follower.close()

    # -- rebuilding ---------------------------------------------------------------------------------

    def rebuild(self, name: str, *, progress: Callable[[int, int | None], None] | None = None) -> int:
        """Fill a new version of ``name`` from the start while the old one answers reads, then switch to it.

        ``progress(done, total)`` is called as it goes: events applied of the feed's ``total`` where
        the feed is one sequence, streams swept (``total`` None) where it is not. Returns the new
        version's number. A rebuild interrupted before its switch is started again from nothing by
        the next one; a runner in another process meanwhile follows the new version too.
        """
        if name not in self.specs:
            raise KeyError(name)
        self._follow_store()
        self.store.begin_round()
        current = self.store.versions([name])[name]
        for unfinished in [v for v in current if v.state == BUILDING]:
            self._drop(unfinished)
        version = max((v.version for v in current), default=0) + 1
        self._begin(name, version)
        if self.follower is None:
            projector = self._projector(name, version)
            while True:
                applied = projector.catch_up(max_events=self.settings.step_events)
                if progress is not None:
                    progress(projector.target.checkpoint(), self._head())
                if applied == 0:
                    break
        else:
            target = self._target(name, version)
            assert isinstance(target, StreamTarget)
            cursor, swept = None, 0
            while True:
                _applied, cursor = self.follower.sweep([target], after=cursor, limit=self.settings.sweep_page)
                swept += self.settings.sweep_page if cursor is not None else 0
                if progress is not None:
                    progress(swept, None)
                if cursor is None:
                    break
                self.store.set_cursor(name, version, cursor)
        self._switch(name, version)
        return version

    # -- reporting ------------------------------------------------------------------------------------

    def status(self) -> list[ProjectionStatus]:
        """Each projection's status, the same fields with the same meaning on every store.

        * ``position``: events the version answering reads has applied (its checkpoint in the feed
          where the feed is one sequence; the events its runners reported applying where it is not,
          where an event applied twice, after a crash or by two runners at once, counts twice);
        * ``lag_events``: events accepted and not applied yet (where the feed is per stream: the
          appends not yet settled, each one event or more);
        * ``lag_seconds``: how long the oldest of those has waited;
        * ``updated_at`` / ``error``: when the runner (in whichever process) last applied, and its
          last error (the projection's, its process manager's, or the runner's own);
        * ``status``: ``failing`` with an error; else ``running`` or ``stopped`` (a runner applied in
          the last 30 s, or not) while there is lag or a version is being built; else ``caught_up``.
        """
        if not self.belongs():
            head = self.stores.feed.head() if self.stores.feed is not None else 0
            return [ProjectionStatus(name, "failing", 0, head, 0.0, None, OTHER_STORE) for name in self.names]
        registered = self.store.versions(self.names)
        backlog, oldest = self._backlog()
        found = []
        for name in self.names:
            versions = registered[name]
            version = self._reading(versions)
            building = any(v.state == BUILDING for v in versions)
            position, lag, lag_seconds = self._position(name, version, backlog, oldest)
            _applied, local_error, local_updated = self._local(version) if version else (0, None, None)
            skipped = list(self.target(name).skipped()) if version else []
            error = local_error or self._manager_errors.get(name) or (version.error if version else None) or self.error
            if self.follower is not None and self.follower.error and not error:
                error = self.follower.error
            error = error or describe_skipped(skipped)
            updated = local_updated or (version.updated_at if version else None)
            if error is not None:
                state = "failing"
            elif lag or building:
                recent = updated is not None and (self.clock() - updated).total_seconds() < 30
                state = "running" if self.running or recent else "stopped"
            else:
                state = "caught_up"
            found.append(
                ProjectionStatus(
                    name,
                    state,
                    position,
                    lag,
                    lag_seconds if lag else 0.0,
                    updated,
                    error,
                    len(skipped),
                    sum(s.events for s in skipped),
                )
            )
        return found

    def _backlog(self) -> tuple[int, datetime | None]:
        if self.follower is None or self.stores.stream_feed is None:
            return 0, None
        return self.stores.stream_feed.backlog()

    def _position(
        self, name: str, version: Version | None, backlog: int, oldest: datetime | None
    ) -> tuple[int, int, float]:
        """(position, lag in events, lag in seconds) of the version answering reads."""
        if self.follower is not None:
            position = version.applied if version else 0
            seconds = max(0.0, (self.clock() - oldest).total_seconds()) if oldest is not None else 0.0
            return position, backlog, seconds
        assert self.stores.feed is not None
        head = self.stores.feed.head()
        if version is None:
            return 0, head, 0.0
        target = self._target(name, version.version)
        assert isinstance(target, ProjectionTarget)
        position = target.checkpoint()
        seconds = 0.0
        if head > position:
            pending = self.stores.feed.read(after=position, limit=1)
            if pending:
                seconds = max(0.0, (self.clock() - pending[0].event.recorded_at).total_seconds())
        return position, max(0, head - position), seconds
