"""The events of the Account and Title aggregates.

Type names are stable and never derived from module paths. Times are aware
UTC datetimes; they are stored as ISO 8601 strings and parsed back here.

``personal`` names each event's fields that are a member's personal data (see
docs/privacy.md): they are sealed with the member's own key and read as
``eskit.ERASED`` once the member was erased. Title ids, times, counts, reasons
and license ids stay in clear.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from eskit import DomainEvent

__all__ = [
    "ACCOUNT_EVENTS",
    "TITLE_EVENTS",
    "AccountClosed",
    "AccountErased",
    "AccountEvent",
    "AccountOpened",
    "DeviceDeactivated",
    "DeviceRegistered",
    "LicenseExpired",
    "LicenseIssued",
    "LicenseReleased",
    "LicenseRenewed",
    "LicenseRevoked",
    "PlanChanged",
    "PlaybackStarted",
    "RequestAnswered",
    "TitleEvent",
    "TitleSet",
]


_DATETIME_FIELDS: dict[type[DomainEvent], dict[str, bool]] = {}


def _datetime_fields(cls: type[DomainEvent]) -> dict[str, bool]:
    """Each field of the event class, and whether it holds a datetime (computed once per class)."""
    found = _DATETIME_FIELDS.get(cls)
    if found is None:
        found = _DATETIME_FIELDS[cls] = {f.name: "datetime" in str(f.type) for f in dataclasses.fields(cls)}
    return found


def _parse_times(cls: type[DomainEvent], data: Mapping[str, Any]) -> dict[str, Any]:
    fields = _datetime_fields(cls)
    parsed: dict[str, Any] = {}
    for key, value in data.items():
        is_datetime = fields.get(key)
        if is_datetime is None:
            continue  # a field written by newer code: ignored, not fatal
        if is_datetime and isinstance(value, str):
            value = datetime.fromisoformat(value)
        parsed[key] = value
    return parsed


@dataclass(frozen=True)
class AccountEvent(DomainEvent):
    """Base of account events: payloads with datetimes parsed back on read."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DomainEvent:
        return cls(**_parse_times(cls, data))


@dataclass(frozen=True)
class AccountOpened(AccountEvent):
    type_name = "AccountOpened"
    account_id: str
    plan: str
    at: datetime


@dataclass(frozen=True)
class PlanChanged(AccountEvent):
    type_name = "PlanChanged"
    plan: str
    at: datetime


@dataclass(frozen=True)
class AccountClosed(AccountEvent):
    type_name = "AccountClosed"
    at: datetime


@dataclass(frozen=True)
class DeviceRegistered(AccountEvent):
    type_name = "DeviceRegistered"
    personal = frozenset({"device_id", "model"})
    device_id: str
    model: str
    at: datetime


@dataclass(frozen=True)
class DeviceDeactivated(AccountEvent):
    type_name = "DeviceDeactivated"
    personal = frozenset({"device_id"})
    device_id: str
    at: datetime


@dataclass(frozen=True)
class LicenseIssued(AccountEvent):
    """A license was issued; ``counted`` says whether it counts toward the title's yearly limit."""

    type_name = "LicenseIssued"
    personal = frozenset({"device_id"})
    license_id: str
    device_id: str
    title_id: str
    issued_at: datetime
    expires_at: datetime
    counted: bool = True


@dataclass(frozen=True)
class PlaybackStarted(AccountEvent):
    """The first playback: expiry shortened to ``expires_at``."""

    type_name = "PlaybackStarted"
    license_id: str
    at: datetime
    expires_at: datetime


@dataclass(frozen=True)
class LicenseRenewed(AccountEvent):
    type_name = "LicenseRenewed"
    license_id: str
    at: datetime
    expires_at: datetime
    counted: bool = True


@dataclass(frozen=True)
class LicenseReleased(AccountEvent):
    """The slot was freed: ``reason`` is ``member``, ``sync`` or ``device_deactivated``."""

    type_name = "LicenseReleased"
    license_id: str
    at: datetime
    reason: str


@dataclass(frozen=True)
class LicenseRevoked(AccountEvent):
    type_name = "LicenseRevoked"
    license_id: str
    at: datetime
    reason: str


@dataclass(frozen=True)
class LicenseExpired(AccountEvent):
    type_name = "LicenseExpired"
    license_id: str
    at: datetime


@dataclass(frozen=True)
class RequestAnswered(AccountEvent):
    """A command sent under an idempotency key was answered without changing the account.

    It changes no state: it exists so that the key's record (kept in its metadata, as a command's
    first event keeps it) is stored by the same conditional append as every other decision, and a
    retry gets the original answer. ``command`` is the command's name.
    """

    type_name = "RequestAnswered"
    command: str
    at: datetime


@dataclass(frozen=True)
class AccountErased(AccountEvent):
    """The member was forgotten: their key is destroyed and every personal field reads as erased from now on.

    Recorded without personal data: when, by whom (the subject of the admin's token) and under
    which request id. Always the account's last event: nothing is accepted after it.
    """

    type_name = "AccountErased"
    at: datetime
    erased_by: str
    request_id: str


@dataclass(frozen=True)
class TitleEvent(AccountEvent):
    """Base of title events (same datetime handling)."""


@dataclass(frozen=True)
class TitleSet(TitleEvent):
    """A title was put in the catalog or changed."""

    type_name = "TitleSet"
    title_id: str
    studio: str
    downloadable: bool
    available_until: datetime | None
    at: datetime


ACCOUNT_EVENTS: tuple[type[DomainEvent], ...] = (
    AccountOpened,
    PlanChanged,
    AccountClosed,
    DeviceRegistered,
    DeviceDeactivated,
    LicenseIssued,
    PlaybackStarted,
    LicenseRenewed,
    LicenseReleased,
    LicenseRevoked,
    LicenseExpired,
    RequestAnswered,
    AccountErased,
)
TITLE_EVENTS: tuple[type[DomainEvent], ...] = (TitleSet,)
