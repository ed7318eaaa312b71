"""The Account aggregate: one member's devices, licenses and per-title downloads.

Every rule of the product is an invariant of one account, so one optimistic
append per command enforces it. Command methods check rules, then trigger
events; state changes only in :meth:`Account.apply`. Licenses past their expiry
are expired lazily: :meth:`Account.expire_due` runs first in every command.

Time: a command is decided at :meth:`Account.decision_time`, the later of the
deciding process's clock and the last recorded time in the account, so time
never runs backwards within an account even when processes' clocks disagree.

Erasure: :meth:`Account.erase` records ``AccountErased``, after which the
account holds nothing of its member (devices, licenses, counts and keys are
dropped) and :attr:`Account.erased` is true; so is it for an account whose key
was erased without that event (an archive restored after the erasure).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Self

from downloads.domain import rules
from downloads.domain.errors import Denied, Gone, Invalid
from downloads.domain.events import (
    AccountClosed,
    AccountErased,
    AccountOpened,
    DeviceDeactivated,
    DeviceRegistered,
    LicenseExpired,
    LicenseIssued,
    LicenseReleased,
    LicenseRenewed,
    LicenseRevoked,
    PlanChanged,
    PlaybackStarted,
    RequestAnswered,
)
from downloads.domain.model import (
    ACTIVE,
    DEACTIVATED,
    EXPIRED,
    RELEASED,
    REVOKED,
    Device,
    License,
)
from downloads.domain.policy import Policy
from downloads.domain.requests import AcceptedRequest, RememberedRequests, reply_record
from downloads.domain.rules import TitleQuota
from downloads.domain.snapshots import AccountState, decode_state, encode_state
from downloads.domain.title import TitleInfo
from eskit import Aggregate, DomainEvent, EventMetadata

__all__ = ["Account", "account_erased"]

OPEN = "active"
CLOSED = "closed"
ERASED = "erased"


def account_erased(account_id: str, erased_at: datetime | None) -> Gone:
    """The refusal of anything about an erased account (410 ``ACCOUNT_ERASED``)."""
    when = erased_at.isoformat() if erased_at is not None else None
    return Gone(
        "ACCOUNT_ERASED",
        f"account {account_id!r} was erased" + (f" at {when}" if when else "") + ": nothing about it is kept",
        {"account_id": account_id, "erased_at": when},
    )


class Account(Aggregate):
    """One member account (see the module docstring)."""

    snapshot_type = "Account"
    snapshot_version = 2

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.plan = ""
        self.status = ""
        self.opened_at: datetime | None = None
        self.devices: dict[str, Device] = {}
        self.licenses: dict[str, License] = {}
        self._active: dict[str, License] = {}  # the active subset of licenses, kept by apply
        self.downloads: dict[str, list[datetime]] = {}  # title id -> times counted, oldest first
        self.requests = RememberedRequests()
        self.last_at: datetime | None = None  # the latest time recorded in the account
        self.erased_at: datetime | None = None

    # -- queries ---------------------------------------------------------------

    @property
    def exists(self) -> bool:
        return bool(self.status)

    @property
    def erased(self) -> bool:
        """Whether the member was forgotten: the account records it, or its key was erased."""
        return self.status == ERASED or self.key_erased

    def require_not_erased(self) -> None:
        """Raise ``ACCOUNT_ERASED`` (410) for an erased account."""
        if self.erased:
            raise account_erased(self.id, self.erased_at)

    def decision_time(self, clock_now: datetime) -> datetime:
        """When a command arriving at ``clock_now`` is decided: never before the account's last event."""
        return clock_now if self.last_at is None or clock_now > self.last_at else self.last_at

    def device_limit(self, policy: Policy) -> int:
        return rules.device_limit(policy, self.plan)

    def active_licenses(self, device_id: str | None = None) -> list[License]:
        return [lic for lic in self._active.values() if device_id is None or lic.device_id == device_id]

    def devices_with_downloads(self) -> set[str]:
        return {lic.device_id for lic in self._active.values()}

    def _set_status(self, lic: License, status: str) -> None:
        lic.status = status
        if status == ACTIVE:
            self._active[lic.license_id] = lic
        else:
            self._active.pop(lic.license_id, None)

    def device(self, device_id: str) -> Device:
        found = self.devices.get(device_id)
        if found is None:
            raise rules.device_not_found(device_id)
        return found

    def license(self, license_id: str) -> License:
        found = self.licenses.get(license_id)
        if found is None:
            raise rules.license_not_found(license_id)
        return found

    # -- rules shared by commands ------------------------------------------------

    def _require_active(self) -> None:
        self.require_not_erased()
        if self.status != OPEN:
            raise Denied("ACCOUNT_NOT_ACTIVE", f"account {self.id!r} is closed", {"status": self.status})

    def expire_due(self, now: datetime) -> None:
        """Record ``LicenseExpired`` for every active license past its expiry, oldest expiry first.

        Looks only at the active licenses (bounded by the policy, not by history) and sorts only
        the due ones, usually none.
        """
        due = [lic for lic in self._active.values() if lic.expires_at <= now]
        for lic in sorted(due, key=lambda lic: lic.expires_at):
            self.trigger(LicenseExpired(lic.license_id, lic.expires_at))

    def _prepare(self, now: datetime) -> None:
        self._require_active()
        self.expire_due(now)

    def _check_device_limits(self, device_id: str, policy: Policy) -> None:
        rules.check_device_limits(
            device_id=device_id,
            held=len(self.active_licenses(device_id)),
            devices_in_use=len(self.devices_with_downloads()),
            limit=self.device_limit(policy),
            max_per_device=policy.max_active_downloads,
            plan=self.plan,
        )

    def title_quota(self, title: TitleInfo, policy: Policy, now: datetime) -> TitleQuota:
        """The studio's per-title limit in the rolling window, how much of it is used, and when one more fits."""
        limit = policy.studio(title.studio).max_downloads_per_title
        return rules.window_quota(self.downloads.get(title.title_id, []), limit=limit, now=now, window=policy.window)

    def _check_title_limit(self, title: TitleInfo, policy: Policy, now: datetime) -> None:
        if policy.studio(title.studio).max_downloads_per_title == 0:
            return  # the studio sets no limit: nothing to count
        rules.check_title_limit(title.title_id, self.title_quota(title, policy, now), policy.window)

    # -- commands ----------------------------------------------------------------

    def open(self, *, plan: str, policy: Policy, now: datetime) -> None:
        """Open the account (``ACCOUNT_EXISTS`` if it was opened before, ``UNKNOWN_PLAN``)."""
        if self.exists:
            raise Denied("ACCOUNT_EXISTS", f"account {self.id!r} already exists", {"account_id": self.id})
        _check_plan(plan, policy)
        self.trigger(AccountOpened(self.id, plan, now))

    def change_plan(self, *, plan: str, policy: Policy, now: datetime) -> None:
        """Change the plan; a downgrade revokes nothing (new devices wait until under the limit)."""
        self._prepare(now)
        _check_plan(plan, policy)
        if plan != self.plan:
            self.trigger(PlanChanged(plan, now))

    def close(self, *, now: datetime) -> None:
        """Close the account, revoking every active license."""
        self._prepare(now)
        for lic in self.active_licenses():
            self.trigger(LicenseRevoked(lic.license_id, now, "account_closed"))
        self.trigger(AccountClosed(now))

    def register_device(self, *, device_id: str, model: str, policy: Policy, now: datetime) -> tuple[Device, bool]:
        """Register a device; returns it and whether it was (re)registered now."""
        self._prepare(now)
        existing = self.devices.get(device_id)
        if existing is not None and existing.status == ACTIVE:
            return existing, False
        active = sum(1 for d in self.devices.values() if d.status == ACTIVE)
        if active >= policy.max_devices:
            raise Denied(
                "TOO_MANY_DEVICES",
                f"the account has {active} active devices, the limit is {policy.max_devices}",
                {"limit": policy.max_devices, "used": active},
            )
        self.trigger(DeviceRegistered(device_id, model, now))
        return self.devices[device_id], True

    def deactivate_device(self, *, device_id: str, now: datetime) -> tuple[Device, list[str]]:
        """Deactivate a device and release its licenses; returns it and the released ids."""
        self._prepare(now)
        device = self.device(device_id)
        released = [lic.license_id for lic in self.active_licenses(device_id)]
        if device.status == ACTIVE:
            for license_id in released:
                self.trigger(LicenseReleased(license_id, now, "device_deactivated"))
            self.trigger(DeviceDeactivated(device_id, now))
        return device, released

    def acquire(
        self,
        *,
        device_id: str,
        title_id: str,
        title: TitleInfo | None,
        policy: Policy,
        now: datetime,
        license_id: str | None = None,
    ) -> tuple[License, bool]:
        """Issue a license, in the product's rule order; returns it and whether it is new."""
        self._prepare(now)
        device = self.device(device_id)
        if device.status != ACTIVE:
            raise Denied("DEVICE_NOT_ACTIVE", f"device {device_id!r} is deactivated", {"device_id": device_id})
        info = rules.check_title(title, title_id, now)
        for lic in self.active_licenses(device_id):
            if lic.title_id == title_id:
                return lic, False
        self._check_device_limits(device_id, policy)
        self._check_title_limit(info, policy, now)
        studio = policy.studio(info.studio)
        new_id = license_id or str(uuid.uuid4())
        self.trigger(LicenseIssued(new_id, device_id, title_id, now, now + studio.license_duration, True))
        return self.licenses[new_id], True

    def start_playback(self, *, license_id: str, title: TitleInfo | None, policy: Policy, now: datetime) -> License:
        """The first playback shortens expiry to the studio's playback window."""
        self._prepare(now)
        lic = self.license(license_id)
        if lic.status != ACTIVE:
            raise rules.license_not_active(lic.license_id, lic.status)
        if lic.playback_started_at is None:
            studio = policy.studio(title.studio if title else "default")
            self.trigger(PlaybackStarted(license_id, now, min(lic.expires_at, now + studio.playback_window)))
        return lic

    def renew(self, *, license_id: str, title: TitleInfo | None, policy: Policy, now: datetime) -> License:
        """Renew an active or expired license for a new full duration."""
        self._prepare(now)
        lic = self.license(license_id)
        if lic.status not in (ACTIVE, EXPIRED):
            raise rules.license_not_active(lic.license_id, lic.status)
        info = rules.check_title(title, lic.title_id, now)
        if lic.status == EXPIRED:
            device = self.device(lic.device_id)
            if device.status != ACTIVE:
                raise Denied(
                    "DEVICE_NOT_ACTIVE", f"device {lic.device_id!r} is deactivated", {"device_id": lic.device_id}
                )
            for held in self.active_licenses(lic.device_id):
                if held.title_id == lic.title_id:
                    raise Denied(
                        "TITLE_ALREADY_LICENSED",
                        f"device {lic.device_id!r} already holds license {held.license_id!r} for this title",
                        {"license_id": held.license_id, "title_id": lic.title_id, "device_id": lic.device_id},
                    )
            self._check_device_limits(lic.device_id, policy)
        studio = policy.studio(info.studio)
        counted = studio.renewals_count_as_downloads
        if counted:
            self._check_title_limit(info, policy, now)
        self.trigger(LicenseRenewed(license_id, now, now + studio.license_duration, counted))
        return lic

    def release(self, *, license_id: str, now: datetime) -> License:
        """The member deleted the download; releasing a released license changes nothing."""
        self._prepare(now)
        lic = self.license(license_id)
        if lic.status == RELEASED:
            return lic
        if lic.status == REVOKED:
            raise rules.license_not_active(lic.license_id, lic.status)
        self.trigger(LicenseReleased(license_id, now, "member"))
        return lic

    def revoke(self, *, license_id: str, reason: str, title: TitleInfo | None, now: datetime) -> License:
        """Revoke an active license because its title was withdrawn.

        Nothing changes when the license is not active any more, or when the title can be
        downloaded at ``now`` after all (made downloadable again, or its end moved later since
        the revocation was asked for): a revocation decided on stale knowledge does no harm.
        """
        lic = self.license(license_id)
        if self.status == OPEN:
            self.expire_due(now)
        if lic.status == ACTIVE and (title is None or not title.downloadable_at(now)):
            self.trigger(LicenseRevoked(license_id, now, reason))
        return lic

    def sync(self, *, device_id: str, held: Iterable[str], now: datetime) -> dict[str, list[str]]:
        """Reconcile the device's view: release what it lost, revoke what it should not hold."""
        self._prepare(now)
        self.device(device_id)
        held_ids = list(dict.fromkeys(held))
        server = {lic.license_id for lic in self.active_licenses(device_id)}
        released = sorted(server - set(held_ids))
        for license_id in released:
            self.trigger(LicenseReleased(license_id, now, "sync"))
        return {
            "active": [i for i in held_ids if i in server],
            "released": released,
            "revoked": [i for i in held_ids if i not in server],
        }

    def erase(self, *, by: str, request_id: str, now: datetime) -> datetime:
        """Forget the member: record ``AccountErased`` (once; erasing again answers the first time)."""
        if self.status == ERASED:
            assert self.erased_at is not None
            return self.erased_at
        self.trigger(AccountErased(now, by, request_id))
        return now

    # -- idempotency and time ------------------------------------------------------

    def answered_unchanged(self, *, command: str, now: datetime) -> None:
        """Record that ``command`` was answered without a change (so its idempotency key is kept)."""
        self.trigger(RequestAnswered(command, now))

    def accepted(self, request_id: str, now: datetime) -> AcceptedRequest | None:
        """The record of an accepted request id, if still within its retention at ``now``."""
        return self.requests.get(request_id, now)

    def observe(self, event: DomainEvent, metadata: EventMetadata, position: int) -> None:
        at = metadata.recorded_at
        if self.last_at is None or at > self.last_at:
            self.last_at = at
        record = reply_record(metadata.extra)
        if metadata.request_id is not None and record is not None:
            self.requests.observe(metadata.request_id, record, position, self.last_at)

    # -- state changes -----------------------------------------------------------

    def apply(self, event: DomainEvent) -> None:
        if isinstance(event, AccountOpened):
            self.plan, self.status, self.opened_at = event.plan, OPEN, event.at
        elif isinstance(event, PlanChanged):
            self.plan = event.plan
        elif isinstance(event, AccountClosed):
            self.status = CLOSED
        elif isinstance(event, DeviceRegistered):
            self.devices[event.device_id] = Device(event.device_id, event.model, ACTIVE, event.at)
        elif isinstance(event, DeviceDeactivated):
            self.devices[event.device_id].status = DEACTIVATED
        elif isinstance(event, LicenseIssued):
            issued = License(event.license_id, event.device_id, event.title_id, event.issued_at, event.expires_at)
            self.licenses[event.license_id] = issued
            self._set_status(issued, ACTIVE)
            if event.counted:
                rules.count_download(self.downloads.setdefault(event.title_id, []), event.issued_at)
        elif isinstance(event, PlaybackStarted):
            lic = self.licenses[event.license_id]
            lic.playback_started_at, lic.expires_at = event.at, event.expires_at
        elif isinstance(event, LicenseRenewed):
            lic = self.licenses[event.license_id]
            self._set_status(lic, ACTIVE)
            lic.expires_at, lic.playback_started_at = event.expires_at, None
            lic.renewals += 1
            lic.ended_at = lic.end_reason = None
            if event.counted:
                rules.count_download(self.downloads.setdefault(lic.title_id, []), event.at)
        elif isinstance(event, LicenseReleased | LicenseRevoked):
            lic = self.licenses[event.license_id]
            self._set_status(lic, RELEASED if isinstance(event, LicenseReleased) else REVOKED)
            lic.ended_at, lic.end_reason = event.at, event.reason
        elif isinstance(event, LicenseExpired):
            lic = self.licenses[event.license_id]
            self._set_status(lic, EXPIRED)
            lic.ended_at, lic.end_reason = event.at, "expired"
        elif isinstance(event, RequestAnswered):
            pass  # no state: its metadata holds a key record, which observe indexes
        elif isinstance(event, AccountErased):
            # Nothing of the member stays, in memory or in a snapshot: what a cache may still hold goes.
            self.status, self.erased_at = ERASED, event.at
            self.devices, self.licenses, self._active, self.downloads = {}, {}, {}, {}
            self.requests = RememberedRequests()

    # -- snapshots ---------------------------------------------------------------

    def to_snapshot(self) -> Mapping[str, Any]:
        return encode_state(
            AccountState(
                plan=self.plan,
                status=self.status,
                opened_at=self.opened_at,
                devices=list(self.devices.values()),
                licenses=list(self.licenses.values()),
                active=list(self._active),
                downloads=self.downloads,
                requests=self.requests,
                last_at=self.last_at,
                erased_at=self.erased_at,
            )
        )

    @classmethod
    def from_snapshot(cls, aggregate_id: str, version: int, state: Mapping[str, Any]) -> Self:
        decoded = decode_state(state)
        account = cls(aggregate_id)
        account.version = version
        account.plan, account.status, account.opened_at = decoded.plan, decoded.status, decoded.opened_at
        account.devices = {d.device_id: d for d in decoded.devices}
        account.licenses = {lic.license_id: lic for lic in decoded.licenses}
        for license_id in decoded.active:
            account._set_status(account.licenses[license_id], ACTIVE)
        account.downloads = {title_id: sorted(times) for title_id, times in decoded.downloads.items()}
        account.requests = decoded.requests
        account.last_at, account.erased_at = decoded.last_at, decoded.erased_at
        return account


def _check_plan(plan: str, policy: Policy) -> None:
    if plan not in policy.plans:
        raise Invalid("UNKNOWN_PLAN", f"plan {plan!r} is not offered", {"plan": plan, "plans": sorted(policy.plans)})
