"""Re-deciding an account's history: did any event break a limit the rules enforce?

:func:`limit_breaches` looks at one recorded event and the account's state just
before it, and says which of the product's limits (section 3) the event broke:
the plan's devices with downloads, a device's active downloads, a studio's
downloads per title in the window, the active devices per account, and one
active license per title on a device. A history written by the service never
breaks one; a store damaged or written around the service can. Checked against
the policy given, which is the one the service runs with today.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from downloads.domain import rules
from downloads.domain.account import Account
from downloads.domain.errors import Denied
from downloads.domain.events import DeviceRegistered, LicenseIssued, LicenseRenewed
from downloads.domain.model import ACTIVE, EXPIRED
from downloads.domain.policy import Policy
from eskit import DomainEvent

__all__ = ["limit_breaches"]


def limit_breaches(account: Account, event: DomainEvent, policy: Policy, studio_of: Callable[[str], str]) -> list[str]:
    """The limits ``event`` broke, given ``account`` as it stood before it (empty when none)."""
    if isinstance(event, DeviceRegistered):
        active = sum(1 for d in account.devices.values() if d.status == ACTIVE and d.device_id != event.device_id)
        if active >= policy.max_devices:
            return [
                f"device {event.device_id!r} registered as device {active + 1}, over the limit {policy.max_devices}"
            ]
        return []
    if isinstance(event, LicenseIssued):
        found = _device_breaches(account, event.device_id, event.title_id, policy)
        if event.counted:
            found += _title_breaches(account, event.title_id, event.issued_at, policy, studio_of)
        return [f"license {event.license_id!r} issued: {b}" for b in found]
    if isinstance(event, LicenseRenewed):
        lic = account.licenses.get(event.license_id)
        if lic is None:
            return []  # the fold reports an event about a license never issued
        found = []
        if lic.status == EXPIRED:
            found += _device_breaches(account, lic.device_id, lic.title_id, policy)
        if event.counted:
            found += _title_breaches(account, lic.title_id, event.at, policy, studio_of)
        return [f"license {event.license_id!r} renewed: {b}" for b in found]
    return []


def _device_breaches(account: Account, device_id: str, title_id: str, policy: Policy) -> list[str]:
    held = account.active_licenses(device_id)
    if any(lic.title_id == title_id for lic in held):
        return [f"device {device_id!r} already held an active license for title {title_id!r}"]
    try:
        rules.check_device_limits(
            device_id=device_id,
            held=len(held),
            devices_in_use=len(account.devices_with_downloads()),
            limit=account.device_limit(policy),
            max_per_device=policy.max_active_downloads,
            plan=account.plan,
        )
    except Denied as denied:
        return [f"{denied.code} ({denied.message})"]
    return []


def _title_breaches(
    account: Account, title_id: str, at: datetime, policy: Policy, studio_of: Callable[[str], str]
) -> list[str]:
    limit = policy.studio(studio_of(title_id)).max_downloads_per_title
    quota = rules.window_quota(account.downloads.get(title_id, []), limit=limit, now=at, window=policy.window)
    try:
        rules.check_title_limit(title_id, quota, policy.window)
    except Denied as denied:
        return [f"{denied.code} ({denied.message})"]
    return []
