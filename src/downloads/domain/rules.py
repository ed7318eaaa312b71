"""The acquire rules of the product as pure functions of plain values (product spec section 3).

The Account aggregate applies them to its state; anything else that must decide
the same way (the eventsourcing-library contender in the benchmarks) calls the
same functions, so there is one statement of each rule and of its refusal.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from downloads.domain.errors import Denied, NotFound
from downloads.domain.policy import Policy
from downloads.domain.title import TitleInfo

__all__ = [
    "TitleQuota",
    "check_device_limits",
    "check_title",
    "check_title_limit",
    "count_download",
    "device_limit",
    "device_not_found",
    "license_not_active",
    "license_not_found",
    "window_quota",
]


@dataclass(frozen=True)
class TitleQuota:
    """A title's download limit in the window for one account: the limit (0: none), the count, when one more fits."""

    limit: int
    used: int
    frees_at: datetime | None


def device_limit(policy: Policy, plan: str) -> int:
    """How many devices may hold downloads on ``plan`` (0 for a plan the policy does not offer)."""
    offered = policy.plans.get(plan)
    return offered.download_devices if offered else 0


def count_download(times: list[datetime], at: datetime) -> None:
    """Add a counted download at ``at`` to a title's ``times``, keeping them sorted oldest first.

    Decision times never go backwards within an account, so this is an append
    almost always; a time out of order (events written by another clock, or
    re-decided by what-if) is inserted in its place.
    """
    if not times or times[-1] <= at:
        times.append(at)
    else:
        bisect.insort_right(times, at)


def window_quota(times: Sequence[datetime], *, limit: int, now: datetime, window: timedelta) -> TitleQuota:
    """The quota left at ``now`` under ``limit`` downloads per ``window``, from a title's ``times`` sorted oldest first.

    Counts the times after ``now - window`` with no upper bound (a download
    recorded by a process whose clock runs ahead counts for every other process
    too), by one bisection: the cost does not grow with the number of times.
    No time is ever dropped, as the window is the policy's and another policy
    (a restart, what-if) may count further back.
    """
    first = bisect.bisect_right(times, now - window)
    used = len(times) - first
    full = limit > 0 and used >= limit
    # The (used - limit + 1)-th oldest counted time must leave the window before one more fits.
    return TitleQuota(limit, used, times[len(times) - limit] + window if full else None)


def check_title(title: TitleInfo | None, title_id: str, now: datetime) -> TitleInfo:
    """Acquire rules 2 and 3: the title is in the catalog and downloadable at ``now``."""
    if title is None:
        raise NotFound("TITLE_NOT_FOUND", f"title {title_id!r} is not in the catalog", {"title_id": title_id})
    if not title.downloadable_at(now):
        raise Denied(
            "TITLE_NOT_DOWNLOADABLE",
            f"title {title_id!r} cannot be downloaded now",
            {"title_id": title_id, "available_until": title.available_until},
        )
    return title


def check_device_limits(
    *, device_id: str, held: int, devices_in_use: int, limit: int, max_per_device: int, plan: str
) -> None:
    """Acquire rules 4 and 5 for a device holding ``held`` licenses that is about to hold one more."""
    if held == 0 and devices_in_use >= limit:
        raise Denied(
            "DEVICE_LIMIT_REACHED",
            f"the plan allows downloads on {limit} device(s), {devices_in_use} already hold downloads",
            {"limit": limit, "used": devices_in_use, "plan": plan},
        )
    if held >= max_per_device:
        raise Denied(
            "DEVICE_DOWNLOAD_LIMIT_REACHED",
            f"device {device_id!r} holds {held} downloads, the limit is {max_per_device}",
            {"limit": max_per_device, "used": held, "device_id": device_id},
        )


def check_title_limit(title_id: str, quota: TitleQuota, window: timedelta) -> None:
    """Acquire rule 6: the studio's per-title limit in the rolling window."""
    if quota.frees_at is not None:
        raise Denied(
            "TITLE_YEARLY_LIMIT_REACHED",
            f"title {title_id!r} was downloaded {quota.used} times in the window, the limit is {quota.limit}",
            {
                "limit": quota.limit,
                "used": quota.used,
                "title_id": title_id,
                "window_days": window / timedelta(days=1),
                "next_available_at": quota.frees_at,
            },
        )


def device_not_found(device_id: str) -> NotFound:
    return NotFound(
        "DEVICE_NOT_FOUND", f"device {device_id!r} is not registered to this account", {"device_id": device_id}
    )


def license_not_found(license_id: str) -> NotFound:
    return NotFound("LICENSE_NOT_FOUND", f"license {license_id!r} does not exist", {"license_id": license_id})


def license_not_active(license_id: str, status: str) -> Denied:
    return Denied(
        "LICENSE_NOT_ACTIVE", f"license {license_id!r} is {status}", {"license_id": license_id, "status": status}
    )
