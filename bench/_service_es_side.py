"""The eventsourcing library's side of ``bench_service``: the license mix on an ``Application``.

A module of its own (imported only when that benchmark runs) because the
library registers aggregate classes by topic (``module:qualname``), so they
must be defined once, at module level, and a missing library must mean a skip.

The Account aggregate here makes the same decisions as
:class:`downloads.domain.Account` for the commands the benchmark runs (open,
register device, acquire, start playback, release), in the same rule order,
with the same lazy expiry first, and its events carry the same fields. The
rules themselves are not written again: it calls the domain's pure rule
functions (:mod:`downloads.domain.rules`) on its own state, and reuses the
service's pure data (:class:`~downloads.domain.Policy`,
:class:`~downloads.domain.TitleInfo`). State is plain dicts
and lists (devices, licenses, per-title download times), which the library's
JSON transcoder snapshots as they are.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError

from bench._eventsourcing_side import library_pragmas
from downloads.domain import Policy, TitleInfo, rules
from downloads.domain.errors import Denied, Invalid, NotFound

__all__ = ["EsAccount", "EsDownloadsService", "LicenseApp"]

ACTIVE = "active"
RELEASED = "released"
REVOKED = "revoked"
EXPIRED = "expired"
NS = UUID("6f1c3c7e-0000-4000-8000-00000000b3c4")


def account_uuid(account_id: str) -> UUID:
    return uuid5(NS, "account-" + account_id)


def title_uuid(title_id: str) -> UUID:
    return uuid5(NS, "title-" + title_id)


class EsAccount(Aggregate):
    """One member account: devices, licenses and per-title download times, as dicts."""

    @staticmethod
    def create_id(account_id: str) -> UUID:
        return account_uuid(account_id)

    def __init__(self, account_id: str, plan: str, at: datetime) -> None:  # the AccountOpened event
        self.account_id = account_id
        self.plan = plan
        self.status = ACTIVE
        self.opened_at = at
        self.devices: dict[str, dict[str, Any]] = {}
        self.licenses: dict[str, dict[str, Any]] = {}
        self.downloads: dict[str, list[datetime]] = {}

    # -- events (each applies itself) --------------------------------------------------

    class DeviceRegistered(Aggregate.Event):
        device_id: str
        model: str
        at: datetime

        def apply(self, account: EsAccount) -> None:
            account.devices[self.device_id] = {
                "device_id": self.device_id,
                "model": self.model,
                "status": ACTIVE,
                "registered_at": self.at,
            }

    class LicenseIssued(Aggregate.Event):
        license_id: str
        device_id: str
        title_id: str
        issued_at: datetime
        expires_at: datetime
        counted: bool

        def apply(self, account: EsAccount) -> None:
            account.licenses[self.license_id] = {
                "license_id": self.license_id,
                "device_id": self.device_id,
                "title_id": self.title_id,
                "issued_at": self.issued_at,
                "expires_at": self.expires_at,
                "status": ACTIVE,
                "playback_started_at": None,
                "renewals": 0,
                "ended_at": None,
                "end_reason": None,
            }
            if self.counted:
                rules.count_download(account.downloads.setdefault(self.title_id, []), self.issued_at)

    class PlaybackStarted(Aggregate.Event):
        license_id: str
        at: datetime
        expires_at: datetime

        def apply(self, account: EsAccount) -> None:
            lic = account.licenses[self.license_id]
            lic["playback_started_at"], lic["expires_at"] = self.at, self.expires_at

    class LicenseReleased(Aggregate.Event):
        license_id: str
        at: datetime
        reason: str

        def apply(self, account: EsAccount) -> None:
            lic = account.licenses[self.license_id]
            lic["status"], lic["ended_at"], lic["end_reason"] = RELEASED, self.at, self.reason

    class LicenseExpired(Aggregate.Event):
        license_id: str
        at: datetime

        def apply(self, account: EsAccount) -> None:
            lic = account.licenses[self.license_id]
            lic["status"], lic["ended_at"], lic["end_reason"] = EXPIRED, self.at, "expired"

    # -- queries and shared rules (as downloads.domain.Account) ----------------------------

    def active_licenses(self, device_id: str | None = None) -> list[dict[str, Any]]:
        return [
            lic
            for lic in self.licenses.values()
            if lic["status"] == ACTIVE and (device_id is None or lic["device_id"] == device_id)
        ]

    def devices_with_downloads(self) -> set[str]:
        return {lic["device_id"] for lic in self.licenses.values() if lic["status"] == ACTIVE}

    def _prepare(self, now: datetime) -> None:
        if self.status != ACTIVE:
            raise Denied("ACCOUNT_NOT_ACTIVE", f"account {self.account_id!r} is closed", {"status": self.status})
        for lic in sorted(self.active_licenses(), key=lambda lic: lic["expires_at"]):
            if lic["expires_at"] <= now:
                self.trigger_event(self.LicenseExpired, license_id=lic["license_id"], at=lic["expires_at"])

    def _device(self, device_id: str) -> dict[str, Any]:
        found = self.devices.get(device_id)
        if found is None:
            raise rules.device_not_found(device_id)
        return found

    def _license(self, license_id: str) -> dict[str, Any]:
        found = self.licenses.get(license_id)
        if found is None:
            raise rules.license_not_found(license_id)
        return found

    def _check_device_limits(self, device_id: str, policy: Policy) -> None:
        rules.check_device_limits(
            device_id=device_id,
            held=len(self.active_licenses(device_id)),
            devices_in_use=len(self.devices_with_downloads()),
            limit=rules.device_limit(policy, self.plan),
            max_per_device=policy.max_active_downloads,
            plan=self.plan,
        )

    def _check_title_limit(self, title: TitleInfo, policy: Policy, now: datetime) -> None:
        limit = policy.studio(title.studio).max_downloads_per_title
        if limit == 0:
            return
        quota = rules.window_quota(self.downloads.get(title.title_id, []), limit=limit, now=now, window=policy.window)
        rules.check_title_limit(title.title_id, quota, policy.window)

    # -- commands --------------------------------------------------------------------------

    def register_device(self, *, device_id: str, model: str, now: datetime) -> tuple[dict[str, Any], bool]:
        self._prepare(now)
        existing = self.devices.get(device_id)
        if existing is not None and existing["status"] == ACTIVE:
            return existing, False
        self.trigger_event(self.DeviceRegistered, device_id=device_id, model=model, at=now)
        return self.devices[device_id], True

    def acquire(
        self, *, device_id: str, title_id: str, title: TitleInfo | None, policy: Policy, now: datetime
    ) -> tuple[dict[str, Any], bool]:
        self._prepare(now)
        device = self._device(device_id)
        if device["status"] != ACTIVE:
            raise Denied("DEVICE_NOT_ACTIVE", f"device {device_id!r} is deactivated", {"device_id": device_id})
        title = rules.check_title(title, title_id, now)
        for lic in self.active_licenses(device_id):
            if lic["title_id"] == title_id:
                return lic, False
        self._check_device_limits(device_id, policy)
        self._check_title_limit(title, policy, now)
        studio = policy.studio(title.studio)
        new_id = str(uuid.uuid4())
        self.trigger_event(
            self.LicenseIssued,
            license_id=new_id,
            device_id=device_id,
            title_id=title_id,
            issued_at=now,
            expires_at=now + studio.license_duration,
            counted=True,
        )
        return self.licenses[new_id], True

    def start_playback(
        self, *, license_id: str, title: TitleInfo | None, policy: Policy, now: datetime
    ) -> dict[str, Any]:
        self._prepare(now)
        lic = self._license(license_id)
        if lic["status"] != ACTIVE:
            raise rules.license_not_active(lic["license_id"], lic["status"])
        if lic["playback_started_at"] is None:
            studio = policy.studio(title.studio if title else "default")
            self.trigger_event(
                self.PlaybackStarted,
                license_id=license_id,
                at=now,
                expires_at=min(lic["expires_at"], now + studio.playback_window),
            )
        return lic

    def release(self, *, license_id: str, now: datetime) -> dict[str, Any]:
        self._prepare(now)
        lic = self._license(license_id)
        if lic["status"] == RELEASED:
            return lic
        if lic["status"] == REVOKED:
            raise rules.license_not_active(lic["license_id"], lic["status"])
        self.trigger_event(self.LicenseReleased, license_id=license_id, at=now, reason="member")
        return lic


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat().replace("+00:00", "Z")


def license_view(account: EsAccount, lic: dict[str, Any]) -> dict[str, Any]:
    """The same JSON-ready license body the service returns."""
    return {
        "license_id": lic["license_id"],
        "account_id": account.account_id,
        "device_id": lic["device_id"],
        "title_id": lic["title_id"],
        "status": lic["status"],
        "issued_at": _iso(lic["issued_at"]),
        "expires_at": _iso(lic["expires_at"]),
        "playback_started_at": _iso(lic["playback_started_at"]),
        "renewals": lic["renewals"],
    }


class LicenseApp(Application[UUID]):
    """The library's application: no aggregate cache (the default); snapshots set per instance."""


class EsDownloadsService:
    """Command handlers on the library: load (``repository.get``), decide, ``save`` (one commit).

    ``snapshot_every`` > 0 snapshots accounts every that many events (the
    library's ``snapshotting_intervals``); 0 turns snapshots off.
    """

    def __init__(self, path: Path, policy: Policy, *, snapshot_every: int, clock: Any) -> None:
        cls: type[LicenseApp] = LicenseApp
        if snapshot_every > 0:
            cls = type("SnapshottingLicenseApp", (LicenseApp,), {"snapshotting_intervals": {EsAccount: snapshot_every}})
        # The library's aggregate cache (with fast-forward, its default) matches our repository's command
        # cache: both keep loaded accounts and read only the events appended since.
        self.app = cls(
            env={
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": str(path),
                "AGGREGATE_CACHE_MAXSIZE": "10000",
            }
        )
        self.policy = policy
        self.clock = clock

    def _execute(self, account_id: str, action: Any, *, max_attempts: int = 20) -> Any:
        """Load the account, run ``action`` on it, save its pending events; retry on a conflict."""
        for attempt in range(1, max_attempts + 1):
            try:
                account: EsAccount = self.app.repository.get(account_uuid(account_id))
            except AggregateNotFoundError:
                raise NotFound(
                    "ACCOUNT_NOT_FOUND", f"account {account_id!r} does not exist", {"account_id": account_id}
                ) from None
            result = action(account, self.clock())
            if account.pending_events:
                try:
                    self.app.save(account)
                except IntegrityError:
                    if attempt == max_attempts:
                        raise
                    continue
            return result
        raise AssertionError("unreachable")

    def title_info(self, title_id: str) -> TitleInfo | None:
        """As the service: the catalog aggregate if stored, else the policy's demo catalog."""
        try:
            title: Any = self.app.repository.get(title_uuid(title_id))
        except AggregateNotFoundError:
            listed = self.policy.titles.get(title_id)
            return TitleInfo(title_id, listed.studio) if listed else None
        return title.info  # type: ignore[no-any-return]  # pragma: no cover - the bench stores no titles

    def open_account(self, account_id: str, plan: str) -> dict[str, Any]:
        if plan not in self.policy.plans:
            raise Invalid("UNKNOWN_PLAN", f"plan {plan!r} is not offered", {"plan": plan})
        account = EsAccount(account_id=account_id, plan=plan, at=self.clock())
        self.app.save(account)
        return {"account_id": account_id, "plan": plan, "status": account.status}

    def register_device(self, account_id: str, device_id: str, model: str) -> dict[str, Any]:
        def action(account: EsAccount, now: datetime) -> dict[str, Any]:
            device, _ = account.register_device(device_id=device_id, model=model, now=now)
            return dict(device)

        return self._execute(account_id, action)  # type: ignore[no-any-return]

    def acquire_license(self, account_id: str, device_id: str, title_id: str) -> dict[str, Any]:
        title = self.title_info(title_id)

        def action(account: EsAccount, now: datetime) -> dict[str, Any]:
            lic, _ = account.acquire(device_id=device_id, title_id=title_id, title=title, policy=self.policy, now=now)
            return license_view(account, lic)

        return self._execute(account_id, action)  # type: ignore[no-any-return]

    def start_playback(self, account_id: str, license_id: str) -> dict[str, Any]:
        def action(account: EsAccount, now: datetime) -> dict[str, Any]:
            lic = account.licenses.get(license_id)
            title = self.title_info(lic["title_id"]) if lic else None
            return license_view(
                account, account.start_playback(license_id=license_id, title=title, policy=self.policy, now=now)
            )

        return self._execute(account_id, action)  # type: ignore[no-any-return]

    def release_license(self, account_id: str, license_id: str) -> dict[str, Any]:
        def action(account: EsAccount, now: datetime) -> dict[str, Any]:
            return license_view(account, account.release(license_id=license_id, now=now))

        return self._execute(account_id, action)  # type: ignore[no-any-return]

    def events_and_snapshots(self) -> tuple[int, int]:
        """Stored events and snapshots (for the run's sanity checks)."""
        recorder: Any = self.app.recorder
        with recorder.datastore.transaction(commit=False) as c:
            c.execute("SELECT count(*) FROM stored_events")
            events = int(c.fetchone()[0])
            c.execute("SELECT count(*) FROM stored_snapshots")
            snapshots = int(c.fetchone()[0])
        return events, snapshots

    def pragmas(self) -> tuple[str, int]:
        return library_pragmas(self.app)

    def close(self) -> None:
        self.app.close()
