"""One handler per account command: check with the domain, return the answer.

A handler gets the command, the account loaded at its latest state and the
:class:`Context` of this decision (policy, time, catalog), calls one domain
method and returns a :class:`Decision`. Loading, saving, retries and
idempotency are the service's (:mod:`downloads.application.service`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel

from downloads.application.commands import (
    AccountCommand,
    AcquireLicense,
    ChangePlan,
    CloseAccount,
    DeactivateDevice,
    OpenAccount,
    RegisterDevice,
    ReleaseLicense,
    RenewLicense,
    RevokeLicense,
    StartPlayback,
    SyncDevice,
)
from downloads.application.presenters import (
    SyncOut,
    present_account,
    present_deactivated,
    present_device,
    present_license,
)
from downloads.domain import Account, Policy, TitleInfo

__all__ = [
    "HANDLERS",
    "Context",
    "Decision",
    "Handler",
    "acquire_license",
    "change_plan",
    "close_account",
    "deactivate_device",
    "open_account",
    "register_device",
    "release_license",
    "renew_license",
    "revoke_license",
    "start_playback",
    "sync_device",
]


@dataclass(frozen=True)
class Context:
    """What a decision may consult besides the account: the policy, its time, the catalog."""

    policy: Policy
    now: datetime
    title: Callable[[str], TitleInfo | None]
    #: the id a new license gets (a re-decision keeps the id the license had); None: a fresh one
    license_id: str | None = None

    def title_of_license(self, account: Account, license_id: str) -> TitleInfo | None:
        lic = account.licenses.get(license_id)
        return self.title(lic.title_id) if lic else None


@dataclass(frozen=True)
class Decision:
    """A handler's answer: the presented body, and whether the command created something."""

    answer: BaseModel
    created: bool = False


C = TypeVar("C", bound=AccountCommand)
Handler = Callable[[Any, Account, Context], Decision]

#: command class -> its handler
HANDLERS: dict[type[AccountCommand], Handler] = {}


def _handles(command: type[C]) -> Callable[[Callable[[C, Account, Context], Decision]], Handler]:
    def register(handler: Callable[[C, Account, Context], Decision]) -> Handler:
        HANDLERS[command] = handler
        return handler

    return register


@_handles(OpenAccount)
def open_account(command: OpenAccount, account: Account, ctx: Context) -> Decision:
    account.open(plan=command.plan, policy=ctx.policy, now=ctx.now)
    return Decision(present_account(account, ctx.policy), created=True)


@_handles(ChangePlan)
def change_plan(command: ChangePlan, account: Account, ctx: Context) -> Decision:
    account.change_plan(plan=command.plan, policy=ctx.policy, now=ctx.now)
    return Decision(present_account(account, ctx.policy))


@_handles(CloseAccount)
def close_account(command: CloseAccount, account: Account, ctx: Context) -> Decision:
    account.close(now=ctx.now)
    return Decision(present_account(account, ctx.policy))


@_handles(RegisterDevice)
def register_device(command: RegisterDevice, account: Account, ctx: Context) -> Decision:
    device, created = account.register_device(
        device_id=command.device_id, model=command.model, policy=ctx.policy, now=ctx.now
    )
    return Decision(present_device(account, device), created=created)


@_handles(DeactivateDevice)
def deactivate_device(command: DeactivateDevice, account: Account, ctx: Context) -> Decision:
    device, released = account.deactivate_device(device_id=command.device_id, now=ctx.now)
    return Decision(present_deactivated(account, device, released))


@_handles(SyncDevice)
def sync_device(command: SyncDevice, account: Account, ctx: Context) -> Decision:
    views = account.sync(device_id=command.device_id, held=command.license_ids, now=ctx.now)
    return Decision(SyncOut(**views))


@_handles(AcquireLicense)
def acquire_license(command: AcquireLicense, account: Account, ctx: Context) -> Decision:
    lic, created = account.acquire(
        device_id=command.device_id,
        title_id=command.title_id,
        title=ctx.title(command.title_id),
        policy=ctx.policy,
        now=ctx.now,
        license_id=ctx.license_id,
    )
    return Decision(present_license(account, lic), created=created)


@_handles(StartPlayback)
def start_playback(command: StartPlayback, account: Account, ctx: Context) -> Decision:
    title = ctx.title_of_license(account, command.license_id)
    lic = account.start_playback(license_id=command.license_id, title=title, policy=ctx.policy, now=ctx.now)
    return Decision(present_license(account, lic))


@_handles(RenewLicense)
def renew_license(command: RenewLicense, account: Account, ctx: Context) -> Decision:
    title = ctx.title_of_license(account, command.license_id)
    lic = account.renew(license_id=command.license_id, title=title, policy=ctx.policy, now=ctx.now)
    return Decision(present_license(account, lic))


@_handles(ReleaseLicense)
def release_license(command: ReleaseLicense, account: Account, ctx: Context) -> Decision:
    lic = account.release(license_id=command.license_id, now=ctx.now)
    return Decision(present_license(account, lic))


@_handles(RevokeLicense)
def revoke_license(command: RevokeLicense, account: Account, ctx: Context) -> Decision:
    title = ctx.title_of_license(account, command.license_id)
    lic = account.revoke(license_id=command.license_id, reason=command.reason, title=title, now=ctx.now)
    return Decision(present_license(account, lic))
