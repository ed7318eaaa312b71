"""Plain, JSON-ready views of the domain: the shapes the API returns (product spec section 4)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from downloads.domain import Account, Device, License, Policy, TitleInfo
from downloads.domain.model import ACTIVE

__all__ = ["account_view", "device_view", "iso", "license_view", "title_view"]


def iso(when: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z``."""
    if when is None:
        return None
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def device_view(account: Account, device: Device) -> dict[str, Any]:
    return {
        "device_id": device.device_id,
        "model": device.model,
        "status": device.status,
        "active_downloads": len(account.active_licenses(device.device_id)) if device.status == ACTIVE else 0,
    }


def license_view(account: Account, lic: License) -> dict[str, Any]:
    return {
        "license_id": lic.license_id,
        "account_id": account.id,
        "device_id": lic.device_id,
        "title_id": lic.title_id,
        "status": lic.status,
        "issued_at": iso(lic.issued_at),
        "expires_at": iso(lic.expires_at),
        "playback_started_at": iso(lic.playback_started_at),
        "renewals": lic.renewals,
    }


def account_view(account: Account, policy: Policy, *, stored: bool = False) -> dict[str, Any]:
    """The account; ``stored`` reports the stored version (ignoring unsaved lazy expiries)."""
    return {
        "account_id": account.id,
        "plan": account.plan,
        "status": account.status,
        "device_limit": account.device_limit(policy),
        "devices_with_downloads": len(account.devices_with_downloads()),
        "devices": [device_view(account, d) for d in account.devices.values()],
        "version": account.stored_version if stored else account.version,
    }


def title_view(info: TitleInfo) -> dict[str, Any]:
    return {
        "title_id": info.title_id,
        "studio": info.studio,
        "downloadable": info.downloadable,
        "available_until": iso(info.available_until),
    }
