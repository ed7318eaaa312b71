"""Commands: what a caller asks the service to do, one frozen dataclass each.

A command is the same value from the route that builds it, through the
idempotency fingerprint (its name and :meth:`AccountCommand.arguments`), to the
handler that calls the domain with its fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

__all__ = [
    "AccountCommand",
    "AcquireLicense",
    "ChangePlan",
    "CloseAccount",
    "DeactivateDevice",
    "OpenAccount",
    "RegisterDevice",
    "ReleaseLicense",
    "RenewLicense",
    "RevokeLicense",
    "SetTitle",
    "StartPlayback",
    "SyncDevice",
]


@dataclass(frozen=True)
class AccountCommand:
    """A command on one account; ``name`` is its stable name in events, fingerprints and metrics."""

    name: ClassVar[str]
    #: whether the command may run on an account that does not exist yet
    creates_account: ClassVar[bool] = False

    account_id: str

    def arguments(self) -> dict[str, Any]:
        """The command's fields other than the account, as stored and fingerprinted."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "account_id"}


@dataclass(frozen=True)
class OpenAccount(AccountCommand):
    name: ClassVar[str] = "open_account"
    creates_account: ClassVar[bool] = True

    plan: str


@dataclass(frozen=True)
class ChangePlan(AccountCommand):
    name: ClassVar[str] = "change_plan"

    plan: str


@dataclass(frozen=True)
class CloseAccount(AccountCommand):
    name: ClassVar[str] = "close_account"


@dataclass(frozen=True)
class RegisterDevice(AccountCommand):
    name: ClassVar[str] = "register_device"

    device_id: str
    model: str


@dataclass(frozen=True)
class DeactivateDevice(AccountCommand):
    name: ClassVar[str] = "deactivate_device"

    device_id: str


@dataclass(frozen=True)
class SyncDevice(AccountCommand):
    """The device reports the licenses it holds (any iterable of ids; kept as a tuple)."""

    name: ClassVar[str] = "sync_device"

    device_id: str
    license_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "license_ids", tuple(self.license_ids))

    def arguments(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "license_ids": list(self.license_ids)}


@dataclass(frozen=True)
class AcquireLicense(AccountCommand):
    name: ClassVar[str] = "acquire_license"

    device_id: str
    title_id: str


@dataclass(frozen=True)
class StartPlayback(AccountCommand):
    name: ClassVar[str] = "start_playback"

    license_id: str


@dataclass(frozen=True)
class RenewLicense(AccountCommand):
    name: ClassVar[str] = "renew_license"

    license_id: str


@dataclass(frozen=True)
class ReleaseLicense(AccountCommand):
    name: ClassVar[str] = "release_license"

    license_id: str


@dataclass(frozen=True)
class RevokeLicense(AccountCommand):
    """Sent by the title-withdrawal process manager, never by clients."""

    name: ClassVar[str] = "revoke_license"

    license_id: str
    reason: str


@dataclass(frozen=True)
class SetTitle:
    """Put a title in the catalog or change it (admins); times are aware."""

    name: ClassVar[str] = "set_title"

    title_id: str
    studio: str
    downloadable: bool = True
    available_until: datetime | None = None
