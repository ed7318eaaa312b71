"""Entities inside the Account aggregate: devices and licenses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

__all__ = ["Device", "License"]

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
