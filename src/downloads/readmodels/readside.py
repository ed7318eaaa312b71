"""Running the read side: the projections and the withdrawal process manager, one runner at a time.

:class:`ReadSide` owns the read-model file (beside a SQLite store's file, or a
temporary one for ``memory://``), a :class:`~eskit.projection.Projector` per
read model, and the title-withdrawal manager. :meth:`ReadSide.run` loops
until stopped: it takes (or renews) the runner lease in the read-model file,
catches every projection up, withdraws titles whose time has come and sends
pending revocations. A process that does not hold the lease only waits, so of
all the server processes of a deployment one applies at a time, and the
lease's fencing token keeps a runner that was paused past its lease from
writing. Read models on Cassandra are not built yet: there the read side is
unavailable and says so.

The read-model file records which store it follows (the store's id). A file
kept while the store beside it was made anew follows another store: until the
runner empties it and projects the new store from its first event (the first
thing its next round does), readers are told so (:meth:`ReadSide.belongs`),
never shown a position or rows the new store never had.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from downloads.application import DownloadsService
from downloads.domain import Policy
from downloads.readmodels.projections import DecodingProjection, DownloadReports, LicensesByTitle, Lookup
from downloads.readmodels.withdrawal import TitleWithdrawal
from eskit import EventCodec, Stores
from eskit.projection import ProjectionStatus, Projector
from eskit.stores.sqlite import sqlite_path
from eskit.stores.sqlite.readmodel import SQLiteReadModels

__all__ = ["LEASE", "OTHER_STORE", "ReadSide", "ReadSideUnavailable", "models_path"]

log = logging.getLogger(__name__)

#: the one lease every runner of a deployment competes for
LEASE = "read-side"
#: what the status says of read models built from another store than the one beside them
OTHER_STORE = (
    "these read models were built from another store (the file was kept while the store was made anew): "
    "the runner empties them and builds them again from this store's first event"
)


class ReadSideUnavailable(Exception):
    """This deployment's store has no read side (yet): Cassandra."""


def models_path(store_url: str) -> Path | None:
    """Where a store's read models live: ``x.readmodels.db`` beside ``x.db``; a temporary file for memory."""
    if store_url.startswith("sqlite:"):
        path = Path(sqlite_path(store_url))
        return path.with_name(path.stem + ".readmodels" + (path.suffix or ".db"))
    if store_url.startswith("memory:"):
        return Path(tempfile.mkdtemp(prefix="downloads-readmodels-")) / "readmodels.db"
    return None


class ReadSide:
    """The read models of one deployment and the loop that keeps them (see the module docstring)."""

    def __init__(
        self,
        stores: Stores,
        codec: EventCodec,
        policy: Policy,
        service: DownloadsService,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        lease_ttl: float = 10.0,
    ) -> None:
        path = models_path(stores.url)
        if path is None or stores.feed is None:
            raise ReadSideUnavailable(f"read models are not built for {stores.url.split(':', 1)[0]} stores yet")
        self.stores, self.codec, self.policy, self.service, self.clock = stores, codec, policy, service, clock
        self.feed = stores.feed
        #: the identity of the store followed (None: a store without one, whose read models are not checked)
        self.store_id = stores.feed.store_id()
        self.models = SQLiteReadModels(path)
        #: a temporary folder made for a memory store's read models, removed by close
        self._scratch = path.parent if stores.url.startswith("memory:") else None
        self.lease_ttl = lease_ttl
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.token: int | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.projectors: dict[str, Projector] = {}
        #: the withdrawal process manager's own last failure (sending commands), and its backoff
        self.manager_error: str | None = None
        self._manager_failures = 0
        self._manager_retry_at = 0.0
        self.reload()

    def _demo_studio(self, title_id: str) -> str:
        listed = self.policy.titles.get(title_id)
        return listed.studio if listed else "default"

    def targets(self, *, version: int | None = None) -> list[DecodingProjection]:
        lease = (LEASE, self.token) if self.token is not None else None
        options = {"version": version, "lease": lease}
        return [
            LicensesByTitle(self.models, self.codec, **options),
            Lookup(self.models, self.codec, **options),
            DownloadReports(self.models, self.codec, demo_studio=self._demo_studio, **options),
            TitleWithdrawal(self.models, self.codec, **options),
        ]

    def reload(self) -> None:
        """(Re)build the projectors on each projection's active version and the current lease token."""
        old = self.projectors
        self.projectors = {}
        for target in self.targets():
            projector = Projector(self.feed, target, clock=self.clock)
            if target.name in old:  # keep what the running one knew
                projector.error, projector.updated_at = old[target.name].error, old[target.name].updated_at
            self.projectors[target.name] = projector

    # -- reading ---------------------------------------------------------------------

    @property
    def licenses(self) -> LicensesByTitle:
        return LicensesByTitle(self.models, self.codec)

    @property
    def lookup(self) -> Lookup:
        return Lookup(self.models, self.codec)

    @property
    def reports(self) -> DownloadReports:
        return DownloadReports(self.models, self.codec, demo_studio=self._demo_studio)

    def _switched(self) -> bool:
        """Whether a rebuild switched a projection to another version than the one followed here."""
        return any(
            p.target.version != self.models.active_version(name)  # type: ignore[attr-defined]
            for name, p in self.projectors.items()
        )

    def belongs(self) -> bool:
        """Whether the read models follow this store (or can adopt it): False for another store's."""
        return self.store_id is None or self.models.relation(self.store_id, self.feed.head()) != "other"

    def status(self) -> list[ProjectionStatus]:
        if self._switched():
            self.reload()
        if not self.belongs():
            head = self.feed.head()
            return [ProjectionStatus(name, "failing", 0, head, 0.0, None, OTHER_STORE) for name in self.projectors]
        running = self._thread is not None and self._thread.is_alive()
        found = []
        for projector in self.projectors.values():
            projector.running = running
            status = projector.status()
            if projector.target.name == TitleWithdrawal.name:
                withdrawal = projector.target
                assert isinstance(withdrawal, TitleWithdrawal)
                if self.manager_error is not None:
                    status = dataclasses.replace(status, status="failing", error=self.manager_error)
            found.append(status)
        return found

    def pending_revocations(self) -> int:
        withdrawal = self.projectors[TitleWithdrawal.name].target
        assert isinstance(withdrawal, TitleWithdrawal)
        return withdrawal.pending()

    # -- running ---------------------------------------------------------------------

    def step(self) -> int:
        """One round, if this runner holds the lease: catch up, withdraw what is due, send revocations."""
        token = self.models.acquire_lease(LEASE, self.holder, ttl=self.lease_ttl)
        if token is None:
            return 0
        # Read models of another store are emptied before anything is applied to them.
        emptied = self.store_id is not None and self.models.follow(self.store_id, self.feed.head())
        if emptied or token != self.token or self._switched():  # a new lease, or a rebuild switched a version
            self.token = token
            self.reload()
        applied = sum(projector.tick() for projector in self.projectors.values())
        applied += self._manage_withdrawals()
        return applied

    def _manage_withdrawals(self) -> int:
        """Withdraw what is due and send revocations, only from a caught-up, healthy state, while leased.

        A failure is the process manager's own: reported with the withdrawal projection's status and
        retried after a doubling delay (at most 30 s), not cleared by the projection's next success.
        """
        projector = self.projectors[TitleWithdrawal.name]
        withdrawal = projector.target
        assert isinstance(withdrawal, TitleWithdrawal)
        if time.monotonic() < self._manager_retry_at or projector.error is not None:
            return 0
        if self.feed.head() > withdrawal.checkpoint():
            return 0  # behind the feed: its jobs may already be stale
        if self.models.acquire_lease(LEASE, self.holder, ttl=self.lease_ttl) != self.token:
            return 0  # the lease moved on while this round ran
        try:
            withdrawal.due(self.service.clock())
            sent = withdrawal.send(self.service)
        except Exception as exc:  # reported, retried later
            self._manager_failures += 1
            self.manager_error = f"{type(exc).__name__}: {exc}"
            delay = min(30.0, 0.1 * 2 ** min(self._manager_failures, 20))
            self._manager_retry_at = time.monotonic() + delay
            log.warning("title withdrawal failed (%s); retrying in %.1f s", self.manager_error, delay)
            return 0
        self._manager_failures, self.manager_error = 0, None
        return sent

    def run(self, stop: threading.Event, *, idle: float = 0.2) -> None:
        while not stop.is_set():
            try:
                busy = self.step()
            except Exception as exc:  # the lease or the file failed: say so, try again
                log.warning("read side: %s: %s", type(exc).__name__, exc)
                busy = 0
            if not busy:
                stop.wait(idle)

    def start(self) -> None:
        """Run :meth:`run` in a background thread."""
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, args=(self._stop,), name="read-side", daemon=True)
        self._thread.start()

    def stop(self, *, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        self.models.release_lease(LEASE, self.holder)

    def rebuild(self, name: str, *, progress: Callable[[int, int], None] | None = None) -> int:
        """Fill a new version of projection ``name`` from the start while the old one serves, then switch.

        Returns the new version. The old version's tables are dropped after the switch.
        """
        if self.store_id is not None and self.models.follow(self.store_id, self.feed.head()):
            self.reload()  # another store's read models: emptied first, like the runner does
        current = {t.name: t for t in self.targets()}.get(name)
        if current is None:
            raise KeyError(name)
        fresh = {t.name: t for t in self.targets(version=current.version + 1)}[name]
        fresh.drop()  # a rebuild interrupted earlier starts again from nothing
        projector = Projector(self.feed, fresh, clock=self.clock)
        while True:
            applied = projector.catch_up(max_events=5000)
            if progress is not None:
                progress(fresh.checkpoint(), self.feed.head())
            if applied == 0:
                break
        self.models.switch(name, fresh.version)
        current.drop()
        self.reload()
        return fresh.version

    def close(self) -> None:
        self.stop()
        self.models.close()
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
