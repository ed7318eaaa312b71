"""Presenters: the one definition of each answer's shape, and how it is built from the domain.

Each shape is a pydantic model; a presenter builds it from domain objects, so a
field can be missing or mistyped nowhere. The HTTP routes declare the same
models as their response models, which FastAPI enforces and documents, and
the tests read answers through them (product spec section 4).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel

from downloads.application.ports import Denial
from downloads.domain import Account, Device, License, Policy, TitleInfo
from downloads.domain.model import ACTIVE

__all__ = [
    "AccountOut",
    "DeactivatedOut",
    "DenialOut",
    "DenialsOut",
    "DeviceLicenseOut",
    "DeviceLicensesOut",
    "DeviceOut",
    "DownloadsOut",
    "ErasedOut",
    "EventOut",
    "EventsOut",
    "LicenseOut",
    "LicensesOut",
    "LookupOut",
    "OutcomeOut",
    "ProjectionOut",
    "ProjectionsOut",
    "ReportOut",
    "ReportRowOut",
    "SyncOut",
    "TitleLicenseOut",
    "TitleLicensesOut",
    "TitleOut",
    "WhatIfAccountsOut",
    "WhatIfDecisionOut",
    "WhatIfOut",
    "as_body",
    "iso",
    "jsonable",
    "present_account",
    "present_deactivated",
    "present_denials",
    "present_device",
    "present_license",
    "present_title",
]


def iso(when: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``."""
    if when is None:
        return None
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


class DeviceOut(BaseModel):
    device_id: str
    model: str
    status: Literal["active", "deactivated"]
    active_downloads: int


class AccountOut(BaseModel):
    account_id: str
    plan: str
    status: Literal["active", "closed"]
    device_limit: int
    devices_with_downloads: int
    devices: list[DeviceOut]
    version: int


class ErasedOut(BaseModel):
    account_id: str
    erased_at: str


class DeactivatedOut(BaseModel):
    device: DeviceOut
    released: list[str]


class SyncOut(BaseModel):
    active: list[str]
    released: list[str]
    revoked: list[str]


class LicenseOut(BaseModel):
    license_id: str
    account_id: str
    device_id: str
    title_id: str
    status: Literal["active", "expired", "released", "revoked"]
    issued_at: str
    expires_at: str
    playback_started_at: str | None
    renewals: int


class LicensesOut(BaseModel):
    licenses: list[LicenseOut]
    next: str | None = None  # pass as ``after`` for the next page; null on the last


class DownloadsOut(BaseModel):
    title_id: str
    limit: int
    used: int
    window_days: float
    next_available_at: str | None


class EventOut(BaseModel):
    seq: int
    type: str
    recorded_at: str
    data: dict[str, object]
    metadata: dict[str, object]


class EventsOut(BaseModel):
    events: list[EventOut]
    next: int | None


class DenialOut(BaseModel):
    at: str
    command: str
    args: dict[str, Any]
    code: str
    message: str
    details: dict[str, Any]
    request_id: str | None


class DenialsOut(BaseModel):
    denials: list[DenialOut]
    next: str | None


class OutcomeOut(BaseModel):
    status: Literal["accepted", "denied", "not_redecidable"]
    code: str | None


class WhatIfDecisionOut(BaseModel):
    at: str
    command: str
    args: dict[str, Any]
    was: OutcomeOut
    would_be: OutcomeOut


class WhatIfAccountsOut(BaseModel):
    was: AccountOut
    would_be: AccountOut | None  # None: the other policy would never have opened the account


class WhatIfOut(BaseModel):
    decisions: list[WhatIfDecisionOut]
    changed: int
    account: WhatIfAccountsOut


class TitleOut(BaseModel):
    title_id: str
    studio: str
    downloadable: bool
    available_until: str | None


class TitleLicenseOut(BaseModel):
    account_id: str
    license_id: str
    device_id: str
    status: Literal["active", "expired", "released", "revoked"]
    issued_at: str
    expires_at: str


class TitleLicensesOut(BaseModel):
    licenses: list[TitleLicenseOut]
    next: str | None = None  # pass as ``after`` for the next page; null on the last


class DeviceLicenseOut(BaseModel):
    account_id: str
    license_id: str
    title_id: str
    expires_at: str


class DeviceLicensesOut(BaseModel):
    licenses: list[DeviceLicenseOut]


class LookupOut(BaseModel):
    accounts: list[str]


class ReportRowOut(BaseModel):
    period: str
    studio: str
    title_id: str
    downloads: int
    renewals: int


class ReportOut(BaseModel):
    rows: list[ReportRowOut]


class ProjectionOut(BaseModel):
    name: str
    status: Literal["running", "caught_up", "failing", "stopped"]
    position: int
    lag_events: int
    lag_seconds: float
    updated_at: str | None
    error: str | None
    #: streams the projection skips because it cannot apply them (named in ``error``), and their events
    skipped_streams: int
    skipped_events: int


class ProjectionsOut(BaseModel):
    projections: list[ProjectionOut]


def present_device(account: Account, device: Device) -> DeviceOut:
    return DeviceOut(
        device_id=device.device_id,
        model=device.model,
        status=device.status,  # type: ignore[arg-type]  # the domain's statuses are exactly these values
        active_downloads=len(account.active_licenses(device.device_id)) if device.status == ACTIVE else 0,
    )


def present_deactivated(account: Account, device: Device, released: list[str]) -> DeactivatedOut:
    return DeactivatedOut(device=present_device(account, device), released=released)


def present_license(account: Account, lic: License) -> LicenseOut:
    return LicenseOut(
        license_id=lic.license_id,
        account_id=account.id,
        device_id=lic.device_id,
        title_id=lic.title_id,
        status=lic.status,  # type: ignore[arg-type]
        issued_at=iso(lic.issued_at) or "",
        expires_at=iso(lic.expires_at) or "",
        playback_started_at=iso(lic.playback_started_at),
        renewals=lic.renewals,
    )


def present_account(account: Account, policy: Policy, *, stored: bool = False) -> AccountOut:
    """The account; ``stored`` reports the stored version (ignoring unsaved lazy expiries)."""
    return AccountOut(
        account_id=account.id,
        plan=account.plan,
        status=account.status,  # type: ignore[arg-type]
        device_limit=account.device_limit(policy),
        devices_with_downloads=len(account.devices_with_downloads()),
        devices=[present_device(account, d) for d in account.devices.values()],
        version=account.stored_version if stored else account.version,
    )


def present_title(info: TitleInfo) -> TitleOut:
    return TitleOut(
        title_id=info.title_id,
        studio=info.studio,
        downloadable=info.downloadable,
        available_until=iso(info.available_until),
    )


def as_body(model: BaseModel) -> dict[str, Any]:
    """A presented answer as the JSON-ready mapping that replies store and replay."""
    return model.model_dump(mode="json")


def jsonable(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` with times as ISO 8601 strings in UTC with a ``Z`` (and anything else not JSON as text)."""
    result: dict[str, Any] = orjson.loads(orjson.dumps(value, option=orjson.OPT_UTC_Z, default=str))
    return result


def present_denials(denials: Sequence[Denial], following: str | None) -> DenialsOut:
    return DenialsOut(
        denials=[
            DenialOut(
                at=iso(d.at) or "",
                command=d.command,
                args=d.args,
                code=d.code,
                message=d.message,
                details=d.details,
                request_id=d.request_id,
            )
            for d in denials
        ],
        next=following,
    )
