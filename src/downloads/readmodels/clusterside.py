"""Running the read side of a Cassandra deployment: the feed's rounds, sweeps of new versions, withdrawals.

:class:`ClusterReadSide` has the same face as
:class:`~downloads.readmodels.readside.ReadSide` (the routes, the CLI and
``serve`` use either), over the cluster's read models
(:mod:`downloads.readmodels.cluster`). One round of :meth:`ClusterReadSide.step`:

1. take (or renew) the runner lease, a conditional write in the keyspace; a
   process without it waits; read which streams each version skips (one partition);
2. register version 1 of a projection that has none (as ``building``);
3. follow the feed: every hinted stream is brought up, in every registered
   version, and settled (:class:`~eskit.projection.StreamFollower`);
4. sweep one page of streams into each ``building`` version; a version whose
   sweep is through becomes ``active`` and the older one is dropped;
5. let the withdrawal manager revoke what its marks ask for.

The lease is for economy, not for correctness: every effect is idempotent in
position, so a runner paused past its lease that wakes up changes nothing that
another runner has moved past.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from downloads.application import DownloadsService
from downloads.domain import Policy
from downloads.readmodels.cluster import (
    ClusterDownloadReports,
    ClusterLicensesByTitle,
    ClusterLookup,
    ClusterProjection,
    ClusterTitleWithdrawal,
)
from eskit import EventCodec, Stores
from eskit.projection import FollowerStats, ProjectionStatus, StreamFollower, describe_skipped
from eskit.stores.cassandra.readmodel import CassandraReadModels, Version
from eskit.stores.timestamps import from_micros, to_micros

__all__ = ["ClusterReadSide"]

log = logging.getLogger(__name__)

LEASE = "read-side"
NAMES = (ClusterLicensesByTitle.name, ClusterLookup.name, ClusterDownloadReports.name, ClusterTitleWithdrawal.name)


class ClusterReadSide:
    """The read models of one Cassandra deployment and the loop that keeps them (see the module docstring)."""

    def __init__(
        self,
        stores: Stores,
        codec: EventCodec,
        policy: Policy,
        service: DownloadsService,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        lease_ttl: float = 10.0,
        sweep_page: int = 500,
    ) -> None:
        assert stores.stream_feed is not None
        self.stores, self.codec, self.policy, self.service, self.clock = stores, codec, policy, service, clock
        self.feed = stores.stream_feed
        self.models = CassandraReadModels(stores.events.db)  # type: ignore[attr-defined]
        self.lease_ttl, self.sweep_page = lease_ttl, sweep_page
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.token: int | None = None
        self.follower = StreamFollower(stores.events, self.feed, self._following, clock=clock)
        self._targets: dict[tuple[str, int], ClusterProjection] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.error: str | None = None
        self.manager_error: str | None = None
        self._renew_at = 0.0
        self._ends_at = 0.0  # the next time the manager looks for titles whose availability ended
        self._reported: dict[str, tuple[int, str | None]] = {}
        self._live: set[tuple[str, int]] = set()  # the versions the last registry read listed
        self._failures = 0
        self._retry_at = 0.0

    # -- versions ----------------------------------------------------------------------

    def _demo_studio(self, title_id: str) -> str:
        listed = self.policy.titles.get(title_id)
        return listed.studio if listed else "default"

    def target(self, name: str, version: int) -> ClusterProjection:
        found = self._targets.get((name, version))
        if found is None:
            if name == ClusterLicensesByTitle.name:
                found = ClusterLicensesByTitle(self.models, self.codec, version=version)
            elif name == ClusterLookup.name:
                found = ClusterLookup(self.models, self.codec, version=version)
            elif name == ClusterDownloadReports.name:
                found = ClusterDownloadReports(self.models, self.codec, version=version, demo_studio=self._demo_studio)
            elif name == ClusterTitleWithdrawal.name:
                found = ClusterTitleWithdrawal(self.models, self.codec, version=version, clock=self.service.clock)
            else:
                raise KeyError(name)
            self._targets[(name, version)] = found
        return found

    def _registered(self) -> dict[str, list[Version]]:
        """The registered versions, without rows a late progress report wrote after their version was dropped."""
        found = self.models.versions_of(NAMES)
        return {name: [v for v in versions if v.state in ("building", "active")] for name, versions in found.items()}

    def _following(self) -> Sequence[ClusterProjection]:
        """Every registered version (active and building): what a round brings up. Read after the heads."""
        registered = self._registered()
        self._live = {(v.name, v.version) for versions in registered.values() for v in versions}
        return [self.target(v.name, v.version) for versions in registered.values() for v in versions]

    def _reading(self, name: str) -> ClusterProjection:
        """The version that answers reads: the newest active one, else the one being built."""
        versions = self.models.versions(name)
        active = [v.version for v in versions if v.state == "active"]
        chosen = max(active) if active else max((v.version for v in versions), default=1)
        return self.target(name, chosen)

    def targets(self) -> list[ClusterProjection]:
        return [self._reading(name) for name in NAMES]

    @property
    def licenses(self) -> ClusterLicensesByTitle:
        found = self._reading(ClusterLicensesByTitle.name)
        assert isinstance(found, ClusterLicensesByTitle)
        return found

    @property
    def lookup(self) -> ClusterLookup:
        found = self._reading(ClusterLookup.name)
        assert isinstance(found, ClusterLookup)
        return found

    @property
    def reports(self) -> ClusterDownloadReports:
        found = self._reading(ClusterDownloadReports.name)
        assert isinstance(found, ClusterDownloadReports)
        return found

    @property
    def withdrawal(self) -> ClusterTitleWithdrawal:
        found = self._reading(ClusterTitleWithdrawal.name)
        assert isinstance(found, ClusterTitleWithdrawal)
        return found

    def _begin(self, name: str, version: int) -> ClusterProjection:
        """Create a version's tables and register it as building (tables first: a runner may write at once)."""
        target = self.target(name, version)
        target.create_tables()
        self.models.register(name, version, "building")
        return target

    def _sweep(self, version: Version) -> int:
        """Sweep one page of streams into a building version (switching it once through); 1 when it did work.

        A failure is kept as the version's error and tried again next round; the round goes on.
        """
        target = self.target(version.name, version.version)
        try:
            self._sweep_page(version, target)
            return 1
        except Exception as exc:
            self.follower.stats.setdefault(target.key, FollowerStats()).error = f"{type(exc).__name__}: {exc}"
            log.warning("sweep of %s failed: %s", target.key, exc)
            return 0

    def _sweep_page(self, version: Version, target: ClusterProjection) -> bool:
        _applied, cursor = self.follower.sweep([target], after=version.cursor, limit=self.sweep_page)
        if cursor is not None:
            self.models.set_cursor(version.name, version.version, cursor)
            return False
        self._switch(version.name, version.version)
        return True

    def _switch(self, name: str, version: int) -> None:
        self.models.register(name, version, "active")
        for old in self.models.versions(name):
            if old.version < version:
                self.models.forget(name, old.version)
                self.target(name, old.version).drop()
                dropped = self._targets.pop((name, old.version), None)
                if dropped is not None:
                    self.follower.stats.pop(dropped.key, None)
                    self._reported.pop(dropped.key, None)

    # -- running -----------------------------------------------------------------------

    def step(self) -> int:
        """One round, if this runner holds the lease (see the module docstring); returns the work done."""
        if self.token is None or time.monotonic() >= self._renew_at:  # renewed at half its time, not every round
            token = self.models.acquire_lease(LEASE, self.holder, ttl=self.lease_ttl)
            if token is None:
                self.token = None
                return 0
            self.token, self._renew_at = token, time.monotonic() + self.lease_ttl / 2
        self.models.read_skips()  # streams another runner skipped are skipped here too
        missing = [name for name, versions in self._registered().items() if not versions]
        if missing:  # the first round of a deployment: every table at once (schema changes are slow)
            first = [self.target(name, 1) for name in missing]
            self.models.create([statement for target in first for statement in target.ddl()])
            for target in first:
                self.models.register(target.name, 1, "building")
        try:
            work = self.follower.round()
            registered = self._registered()
            self._live = {(v.name, v.version) for versions in registered.values() for v in versions}
        finally:
            self._report()  # even when the round failed: other processes read the error there
        for versions in registered.values():
            for version in versions:
                if version.state == "building":
                    work += self._sweep(version)
        work += self._manage()
        self._report()
        return work

    def _report(self) -> None:
        """Write what changed in this runner's progress into the registry, where every process reads it."""
        progress = []
        for (name, version), target in list(self._targets.items()):
            if (name, version) not in self._live:
                continue  # dropped by a rebuild (maybe in another process): its registry row stays gone
            stats = self.follower.stats.get(target.key)
            if stats is None:
                continue
            error = self.manager_error if name == ClusterTitleWithdrawal.name and self.manager_error else stats.error
            reported = self._reported.get(target.key)
            if reported == (stats.applied, error):
                continue
            updated = to_micros(stats.updated_at) if stats.updated_at is not None else None
            progress.append((name, version, stats.applied - (reported[0] if reported else 0), updated, error))
            self._reported[target.key] = (stats.applied, error)
        if progress:
            self.models.report(progress)

    def _manage(self) -> int:
        withdrawal = self.withdrawal
        if time.monotonic() < self._retry_at:
            return 0
        ends = time.monotonic() >= self._ends_at
        if ends:
            self._ends_at = time.monotonic() + 1.0
        try:
            sent = withdrawal.manage(self.service, self.service.clock(), ends=ends)
        except Exception as exc:  # reported, retried later
            self._failures += 1
            self.manager_error = f"{type(exc).__name__}: {exc}"
            delay = min(30.0, 0.1 * 2 ** min(self._failures, 20))
            self._retry_at = time.monotonic() + delay
            log.warning("title withdrawal failed (%s); retrying in %.1f s", self.manager_error, delay)
            return 0
        self._failures, self.manager_error = 0, None
        return sent

    def run(self, stop: threading.Event, *, idle: float = 0.2) -> None:
        failures = 0
        while not stop.is_set():
            try:
                busy = self.step()
                self.error, failures = None, 0
            except Exception as exc:  # the lease or the cluster failed: say so, try again after a pause
                failures += 1
                self.error = f"{type(exc).__name__}: {exc}"
                log.warning("read side: %s", self.error)
                stop.wait(min(10.0, 0.2 * 2 ** min(failures, 10)))
                continue
            if not busy:
                stop.wait(idle)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, args=(self._stop,), name="read-side", daemon=True)
        self._thread.start()

    def stop(self, *, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        try:
            self.models.release_lease(LEASE, self.holder)
        except Exception as exc:  # the cluster is gone: the lease runs out by itself
            log.info("read-side lease not released: %s", exc)

    def rebuild(self, name: str, *, progress: Callable[[int, int], None] | None = None) -> int:
        """Fill a new version of ``name`` from every stream while the old one serves, then switch; its number."""
        if name not in NAMES:
            raise KeyError(name)
        self.models.ensure()
        self.models.read_skips()
        current = max((v.version for v in self.models.versions(name)), default=0)
        version = current + 1
        target = self._begin(name, version)
        cursor, swept = None, 0
        while True:
            _applied, cursor = self.follower.sweep([target], after=cursor, limit=self.sweep_page)
            swept += self.sweep_page if cursor is not None else 0
            if progress is not None:
                progress(swept, -1)
            if cursor is None:
                break
            self.models.set_cursor(name, version, cursor)
        self._switch(name, version)
        return version

    # -- reporting ---------------------------------------------------------------------

    def status(self) -> list[ProjectionStatus]:
        """Each projection's status as the runner of the deployment (in whichever process) reported it.

        ``position`` is the events applied to the version answering reads, by every runner (there is no
        single feed position on Cassandra); lag is the feed's hints not yet settled and the oldest's age.
        """
        running = self._thread is not None and self._thread.is_alive()
        backlog, oldest = self.feed.backlog()
        lag_seconds = max(0.0, (self.clock() - oldest).total_seconds()) if oldest is not None else 0.0
        found = []
        registered = self._registered()
        skips = self.models.read_skips()
        for target in self.targets():
            current = next((v for v in registered[target.name] if v.version == target.version), None)
            building = current is not None and current.state == "building"
            skipped = skips.get((target.name, target.version), [])
            error = (current.error if current else None) or self.follower.error or self.error
            if target.name == ClusterTitleWithdrawal.name and self.manager_error is not None:
                error = self.manager_error
            error = error or describe_skipped(skipped)
            if error is not None:
                state = "failing"
            elif backlog or building:
                last = current.updated_at if current is not None else None
                recent = last is not None and time.time() - last / 1e6 < 30  # the runner applied lately
                state = "running" if running or recent else "stopped"
            else:
                state = "caught_up"
            updated = from_micros(current.updated_at) if current and current.updated_at else None
            found.append(
                ProjectionStatus(
                    target.name,
                    state,
                    self.models.applied(target.name, target.version),
                    backlog,
                    lag_seconds if backlog else 0.0,
                    updated,
                    error,
                    len(skipped),
                    sum(s.events for s in skipped),
                )
            )
        return found

    def belongs(self) -> bool:
        """Always: the read models live in the store's own keyspace, and go with it."""
        return True

    def pending_revocations(self) -> int:
        return self.withdrawal.pending()

    def close(self) -> None:
        self.stop()
        self.follower.close()
