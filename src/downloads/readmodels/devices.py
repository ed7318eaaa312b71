"""Active licenses by device: which licenses a device id holds now, in any account (support's second question).

A device's row for a license stands while the license is active and is removed
when it ends, so a device's partition holds at most what a device may hold.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from downloads.domain.events import (
    AccountErased,
    LicenseExpired,
    LicenseIssued,
    LicenseReleased,
    LicenseRenewed,
    LicenseRevoked,
)
from downloads.readmodels.model import SCRUB, Barrier, ReadModel, Scrub, Seen
from eskit.readmodel import Delete, Put, Rows, Table
from eskit.stores.timestamps import from_micros, to_micros

__all__ = ["HELD", "ISSUED", "decide", "held", "read_model"]

HELD = Table(
    "held",
    partition=("device_id",),
    clustering=("account_id", "license_id"),
    values=("title_id", "expires_at"),
    kinds={"expires_at": "int"},
)
#: each license's device and title (from its LicenseIssued), for the license's later events
ISSUED = Table("issued", partition=("account_id",), clustering=("license_id",), values=("device_id", "title_id"))


def decide(seen: Seen, rows: Rows) -> Iterator[Put | Delete | Barrier | Scrub]:
    """A license is held from its issue (or renewal) until it is released, revoked or expires; an erased
    member's rows go."""
    event, account_id = seen.event, seen.account_id
    if account_id is None:
        return
    if isinstance(event, AccountErased):
        for row in rows.select(ISSUED.name, (account_id,)):
            yield Delete(HELD.name, (row["device_id"], account_id, row["license_id"]))
            yield Delete(ISSUED.name, (account_id, row["license_id"]))
        yield SCRUB
        return
    if seen.erased:
        return  # an erased member's events: nothing of theirs is written
    if isinstance(event, LicenseIssued):
        yield Put(
            ISSUED.name, (account_id, event.license_id), {"device_id": event.device_id, "title_id": event.title_id}
        )
        held = {"title_id": event.title_id, "expires_at": to_micros(event.expires_at)}
        yield Put(HELD.name, (event.device_id, account_id, event.license_id), held)
        return
    if not isinstance(event, LicenseRenewed | LicenseReleased | LicenseRevoked | LicenseExpired):
        return
    known = seen.facts.license(account_id, event.license_id)
    if known is not None:
        title_id, device_id = known
    else:
        issued = rows.get(ISSUED.name, (account_id, event.license_id))
        if issued is None:
            return  # a license this read model never saw issued holds nothing
        title_id, device_id = issued["title_id"], issued["device_id"]
    key = (device_id, account_id, event.license_id)
    if isinstance(event, LicenseRenewed):
        yield Put(HELD.name, key, {"title_id": title_id, "expires_at": to_micros(event.expires_at)})
    else:
        yield Delete(HELD.name, key)


def held(rows: Rows, device_id: str, *, limit: int = 1000) -> list[dict[str, Any]]:
    """The licenses ``device_id`` holds, by account and license (at most ``limit``)."""
    return [
        {
            "account_id": r["account_id"],
            "license_id": r["license_id"],
            "title_id": r["title_id"],
            "expires_at": from_micros(r["expires_at"]),
        }
        for r in rows.select(HELD.name, (device_id,), limit=limit)
    ]


def read_model() -> ReadModel:
    return ReadModel("licenses_by_device", (HELD, ISSUED), decide)
