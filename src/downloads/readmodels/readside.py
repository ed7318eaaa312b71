"""The read side of a deployment: the service's read models, kept by eskit's runner on the store's own backend.

Read models live beside a SQLite store (``x.readmodels.db``), in a Cassandra
store's keyspace, or in memory for ``memory://``: eskit opens the backend that
goes with the store's URL, and this is the one place that does so. The
runner follows the feed into every read model, and into the relay where there
is one (:mod:`downloads.readmodels.relay`), one runner of a deployment at a time
(a lease), and lets the title-withdrawal manager act after each round.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

from downloads.application import DownloadsService
from downloads.application.presenters import (
    DeviceLicenseOut,
    DeviceLicensesOut,
    LookupOut,
    ReportOut,
    ReportRowOut,
    TitleLicenseOut,
    TitleLicensesOut,
    iso,
)
from downloads.domain import Policy
from downloads.readmodels import devices, licenses, lookup, reports, withdrawal
from downloads.readmodels.model import Decoder, ReadModel
from downloads.readmodels.ports import Progress, ReadModels
from downloads.readmodels.relay import RELAY, relay_spec
from eskit import EventCodec, Stores
from eskit.privacy import KeyCache
from eskit.projection import ProjectionStatus
from eskit.readmodel import ProjectionRunner, ReadModelStore, RunnerSettings, Sink, open_read_models

__all__ = ["ReadSide"]


class ReadSide(ReadModels):
    """The read models of one deployment over ``stores`` (see the module docstring)."""

    def __init__(
        self,
        stores: Stores,
        codec: EventCodec,
        policy: Policy,
        service: DownloadsService,
        *,
        settings: RunnerSettings | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        store: ReadModelStore | None = None,
        relay: Sink | None = None,
        relay_batch: int | None = None,
    ) -> None:
        """``relay``: where the relay publishes, if this process relays (see :mod:`downloads.readmodels.relay`),
        ``relay_batch`` events at a time where the feed is one sequence."""
        self.policy, self.service = policy, service
        self.store = store or open_read_models(stores)
        self.relay = relay
        self.models: list[ReadModel] = [
            licenses.read_model(),
            lookup.read_model(),
            reports.read_model(),
            withdrawal.read_model(service.clock),
            devices.read_model(),
        ]
        keys = service.accounts.keys
        decoder = Decoder(codec, keys=KeyCache(keys) if keys is not None else None)
        self.runner = ProjectionRunner(
            self.store,
            stores,
            [*(model.spec(decoder) for model in self.models), relay_spec(relay, batch=relay_batch)],
            managers=[withdrawal.TitleWithdrawal(service)],
            settings=settings,
            clock=clock,
        )

    @property
    def names(self) -> list[str]:
        """The projections, and the relay where this deployment has one."""
        if self.relay is None and not self.relay_registered():
            return [name for name in self.runner.names if name != RELAY]
        return self.runner.names

    def exists(self) -> bool:
        return self.store.exists()

    def belongs(self) -> bool:
        return self.runner.belongs()

    def _demo_studio(self, title_id: str) -> str:
        listed = self.policy.titles.get(title_id)
        return listed.studio if listed else "default"

    # -- queries ----------------------------------------------------------------------------

    def title_licenses(
        self, title_id: str, *, status: str, after: tuple[str, str] | None, limit: int, now: datetime
    ) -> TitleLicensesOut:
        rows, following = licenses.page(
            self.runner.tables("licenses_by_title"), title_id, status=status, after=after, limit=limit, now=now
        )
        found = [
            TitleLicenseOut(**{**row, "issued_at": iso(row["issued_at"]), "expires_at": iso(row["expires_at"])})
            for row in rows
        ]
        return TitleLicensesOut(licenses=found, next="/".join(following) if following else None)

    def device_licenses(self, device_id: str) -> DeviceLicensesOut:
        found = devices.held(self.runner.tables("licenses_by_device"), device_id)
        return DeviceLicensesOut(
            licenses=[DeviceLicenseOut(**{**r, "expires_at": iso(r["expires_at"])}) for r in found]
        )

    def lookup(self, kind: str, key: str) -> LookupOut:
        return LookupOut(accounts=lookup.accounts(self.runner.tables("lookup"), kind, key))

    def report(
        self, *, granularity: str, studio: str | None, title_id: str | None, start: str | None, end: str | None
    ) -> ReportOut:
        rows = reports.report(
            self.runner.tables("download_reports"),
            granularity=granularity,
            studio=studio,
            title_id=title_id,
            start=start,
            end=end,
            demo_studio=self._demo_studio,
        )
        return ReportOut(rows=[ReportRowOut(**row) for row in rows])

    def every_license(self, *, after: tuple[str, str, str] | None, limit: int) -> list[tuple[str, str, str]]:
        return licenses.every_license(self.runner.tables("licenses_by_title"), after=after, limit=limit)

    def every_key(self, *, after: tuple[str, str, str] | None, limit: int) -> list[tuple[str, str, str]]:
        return lookup.every_key(self.runner.tables("lookup"), after=after, limit=limit)

    def pending_revocations(self) -> int:
        return withdrawal.marked(self.runner.tables(withdrawal.NAME))

    # -- running ----------------------------------------------------------------------------

    def status(self) -> list[ProjectionStatus]:
        names = set(self.names)
        return [s for s in self.runner.status() if s.name in names]

    def relay_registered(self) -> bool:
        """Whether some process of the deployment started the relay (it is in the registry)."""
        return self.store.exists() and bool(self.store.versions([RELAY])[RELAY])

    def forget_relay(self) -> int:
        """Remove the relay from the deployment (its registry entries and checkpoints); how many versions went.

        Its destination keeps what it received; a relay started again later publishes every event from the first.
        """
        versions = self.store.versions([RELAY])[RELAY] if self.store.exists() else []
        for version in versions:
            self.store.forget(RELAY, version.version)
            self.store.tables(RELAY, version.version, ()).drop()
        return len(versions)

    def rebuild(self, name: str, *, progress: Progress | None = None) -> int:
        return self.runner.rebuild(name, progress=progress)

    def step(self, *, manage: bool = True) -> int:
        return self.runner.step(manage=manage)

    def run(self, stop: threading.Event) -> None:
        self.runner.run(stop)

    def start(self) -> None:
        self.runner.start()

    def stop(self) -> None:
        self.runner.stop()

    def close(self) -> None:
        self.runner.close()
        if self.relay is not None:
            self.relay.close()  # after the runner: nothing publishes any more
        self.store.close()
