"""Entities inside the Account aggregate: devices, licenses, remembered requests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["AcceptedRequest", "Device", "License"]

ACTIVE = "active"
EXPIRED = "expired"
RELEASED = "released"
REVOKED = "revoked"
DEACTIVATED = "deactivated"


@dataclass
class Device:
    """A member's device; ``status`` is ``active`` or ``deactivated``."""

    device_id: str
    model: str
    status: str = ACTIVE
    registered_at: datetime | None = None


@dataclass
class License:
    """A download license; ``status`` is ``active``, ``expired``, ``released`` or ``revoked``."""

    license_id: str
    device_id: str
    title_id: str
    issued_at: datetime
    expires_at: datetime
    status: str = ACTIVE
    playback_started_at: datetime | None = None
    renewals: int = 0
    ended_at: datetime | None = None
    end_reason: str | None = None


@dataclass(frozen=True)
class AcceptedRequest:
    """A command the account accepted, kept so a retry gets the same answer.

    ``fingerprint`` identifies the command and its arguments, so the same
    request id sent with a different command is recognised as a mistake.
    """

    request_id: str
    fingerprint: str
    created: bool
    body: dict[str, Any]
    expires_at: datetime
