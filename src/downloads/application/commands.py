"""Commands: what a caller asks the service to do, one frozen dataclass each.

A command is the same value from the route that builds it, through the
idempotency fingerprint (its name and :meth:`AccountCommand.arguments`), to the
handler that calls the domain with its fields. It also says what of it the store
keeps: the arguments a re-decision needs and the reply a retry gets, both bounded
by the account's state rather than by what the caller sent.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Self

from downloads.domain import Account, Invalid, Policy

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
    #: whether the command's decision must read titles as stored, never from the cache (see catalog.py)
    fresh_catalog: ClassVar[bool] = False

    account_id: str

    def arguments(self) -> dict[str, Any]:
        """The command's fields other than the account, as fingerprinted."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "account_id"}

    def validate(self, policy: Policy) -> None:
        """Refuse arguments past a bound of ``policy`` (:class:`~downloads.domain.Invalid`) before any
        work; nothing is recorded for such a request. By default every command passes."""

    def recorded_arguments(self, account: Account) -> dict[str, Any]:
        """The arguments kept with the command's first event and with its denial, given the account it
        was decided on: what deciding it again needs (by default all of them)."""
        return self.arguments()

    @classmethod
    def from_recorded(cls, account_id: str, args: Mapping[str, Any]) -> Self:
        """The command again from :meth:`recorded_arguments` (``TypeError`` for arguments it does not take)."""
        return cls(account_id, **args)

    def reply_to_keep(self, body: dict[str, Any]) -> dict[str, Any]:
        """What of the reply ``body`` the key record keeps (by default all of it)."""
        return body

    def reply_kept(self, kept: Mapping[str, Any]) -> dict[str, Any]:
        """The reply again from what :meth:`reply_to_keep` kept, for a retry of this same request."""
        return dict(kept)


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
    """The device reports the licenses it holds (any iterable of ids; kept as a tuple).

    What the device says is never stored as it was sent: only the ids that are licenses the
    account issued to that device (the others cannot change a decision, now or re-decided under
    another policy) and how many ids were sent. The reply's ``revoked`` is exactly the ids sent
    that were not active, so the key record leaves it out and a retry, which must send the same
    ids, rebuilds it.
    """

    name: ClassVar[str] = "sync_device"

    device_id: str
    license_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "license_ids", tuple(self.license_ids))

    def arguments(self) -> dict[str, Any]:
        return {"device_id": self.device_id, "license_ids": list(self.license_ids)}

    def validate(self, policy: Policy) -> None:
        """At most as many ids as a device may hold (``TOO_MANY_LICENSE_IDS``)."""
        limit, sent = policy.max_active_downloads, len(self.license_ids)
        if sent > limit:
            raise Invalid(
                "TOO_MANY_LICENSE_IDS",
                f"a device holds at most {limit} licenses, the sync names {sent} ids",
                {"limit": limit, "sent": sent},
            )

    def recorded_arguments(self, account: Account) -> dict[str, Any]:
        issued_here = [
            license_id
            for license_id in dict.fromkeys(self.license_ids)
            if (lic := account.licenses.get(license_id)) is not None and lic.device_id == self.device_id
        ]
        return {"device_id": self.device_id, "license_ids": issued_here, "license_ids_sent": len(self.license_ids)}

    @classmethod
    def from_recorded(cls, account_id: str, args: Mapping[str, Any]) -> Self:
        return cls(account_id, **{k: v for k, v in args.items() if k != "license_ids_sent"})

    def reply_to_keep(self, body: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in body.items() if k != "revoked"}

    def reply_kept(self, kept: Mapping[str, Any]) -> dict[str, Any]:
        if "revoked" in kept:  # kept whole by older versions
            return dict(kept)
        active = set(kept.get("active") or ())
        return {**kept, "revoked": [i for i in dict.fromkeys(self.license_ids) if i not in active]}


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
    # "the title can be downloaded, leave the license" must never come from a stale title
    fresh_catalog: ClassVar[bool] = True

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
