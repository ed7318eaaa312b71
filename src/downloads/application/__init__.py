"""The application layer: commands, their handlers, idempotency, queries and presenters."""

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
    SetTitle,
    StartPlayback,
    SyncDevice,
)
from downloads.application.ports import Clock, ServiceObserver, system_clock
from downloads.application.service import DownloadsService, Reply

__all__ = [
    "AccountCommand",
    "AcquireLicense",
    "ChangePlan",
    "Clock",
    "CloseAccount",
    "DeactivateDevice",
    "DownloadsService",
    "OpenAccount",
    "RegisterDevice",
    "ReleaseLicense",
    "RenewLicense",
    "Reply",
    "RevokeLicense",
    "ServiceObserver",
    "SetTitle",
    "StartPlayback",
    "SyncDevice",
    "system_clock",
]
