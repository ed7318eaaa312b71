"""Stores full of history made by the service itself, for the data tools' tests and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from downloads.application import (
    AccountCommand,
    AcquireLicense,
    ChangePlan,
    DownloadsService,
    OpenAccount,
    RegisterDevice,
    ReleaseLicense,
    RenewLicense,
    SetTitle,
    StartPlayback,
    SyncDevice,
)
from eskit import EventStore

#: the master key of the stores these helpers build (a tool that reads their archives is given it too)
MASTER_KEY = "l2fHgRsyRNUNz6ECo_FV2m-YrS0O1H6l6jHIoOuq3aw"


@dataclass
class Built:
    """What was built: the accounts, and every command sent under a key with the answer it got."""

    accounts: list[str] = field(default_factory=list)
    #: command, key, body, created, and whether it wrote events (under a key every command does: one that
    #: changed nothing writes a RequestAnswered event to keep its key)
    keyed: list[tuple[AccountCommand, str, dict[str, Any], bool, bool]] = field(default_factory=list)


def build_history(service: DownloadsService, accounts: int, *, prefix: str = "acct") -> Built:
    """``accounts`` accounts, each with devices, licenses played, renewed, released and synced, most under keys."""
    built = Built()
    service.set_title(SetTitle(title_id="t-open", studio="default"))
    service.set_title(SetTitle(title_id="t-rare", studio="restricted"))

    def send(command: AccountCommand, key: str | None) -> dict[str, Any]:
        stream = service.accounts.stream_id(command.account_id)
        before = service.accounts.events.version(stream)
        reply = service.handle(command, idempotency_key=key)
        if key is not None:
            wrote = service.accounts.events.version(stream) > before
            built.keyed.append((command, key, reply.body, reply.created, wrote))
        return reply.body

    for n in range(accounts):
        a = f"{prefix}-{n:05d}"
        built.accounts.append(a)
        send(OpenAccount(account_id=a, plan="premium" if n % 3 else "basic"), f"{a}-open")
        send(RegisterDevice(account_id=a, device_id=f"{a}-d1", model="phone"), f"{a}-reg1")
        send(RegisterDevice(account_id=a, device_id=f"{a}-d2", model="tablet"), None)
        first = send(AcquireLicense(account_id=a, device_id=f"{a}-d1", title_id="t-open"), f"{a}-acq1")
        second = send(AcquireLicense(account_id=a, device_id=f"{a}-d1", title_id="t-rare"), f"{a}-acq2")
        send(StartPlayback(account_id=a, license_id=first["license_id"]), f"{a}-play")
        send(RenewLicense(account_id=a, license_id=second["license_id"]), f"{a}-renew")
        send(ReleaseLicense(account_id=a, license_id=first["license_id"]), None)
        send(SyncDevice(account_id=a, device_id=f"{a}-d1", license_ids=(second["license_id"], "gone")), f"{a}-sync")
        if n % 5 == 0:
            send(ChangePlan(account_id=a, plan="standard"), f"{a}-plan")
    return built


def all_events(store: EventStore) -> list[Any]:
    """Every stored event of every stream, ordered by stream and position."""
    found: list[Any] = []
    after = None
    while page := store.stream_ids(after=after, limit=500):
        for stream in page:
            found.extend(store.read(stream))
        after = page[-1]
    return sorted(found, key=lambda e: (e.stream_id, e.position))


def archive_of_history(path: str, accounts: int) -> tuple[Any, Built]:
    """A memory store of ``accounts`` accounts built by the service (snapshots every 4 events), exported to
    ``path``; returns the source runtime (still open) and what was built."""
    from downloads.bootstrap import bootstrap
    from downloads.settings import Settings
    from eskit.transfer import export_store

    source = bootstrap(Settings(store="memory://", snapshot_every=4, master_key=MASTER_KEY))
    built = build_history(source.service, accounts)
    export_store(source.stores, path)
    return source, built
