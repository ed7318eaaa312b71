"""Licenses by title: every license with its status, to list a title's licenses across accounts.

Rows are partitioned by title and ordered by account and license, so a page of
one title's licenses is one range read on every store. A page reads at most
:data:`SCAN` rows of the title (released, revoked and expired ones are read
past); when it stops there, it answers what it found with a cursor to go on.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from downloads.domain.events import (
    AccountErased,
    LicenseExpired,
    LicenseIssued,
    LicenseReleased,
    LicenseRenewed,
    LicenseRevoked,
    PlaybackStarted,
)
from downloads.readmodels.model import (
    SCRUB,
    TITLES_OF,
    Barrier,
    ReadModel,
    Scrub,
    Seen,
    licenses_of,
    remember_title,
    title_of,
)
from eskit.readmodel import Delete, Put, Rows, Table
from eskit.stores.timestamps import from_micros, to_micros

__all__ = ["LICENSES", "SCAN", "decide", "every_license", "page", "read_model"]

LICENSES = Table(
    "licenses",
    partition=("title_id",),
    clustering=("account_id", "license_id"),
    values=("device_id", "status", "issued_at", "expires_at"),
    kinds={"issued_at": "int", "expires_at": "int"},
)

#: rows a page may read past before it answers with what it found
SCAN = 20_000

_ENDED = {LicenseReleased: "released", LicenseRevoked: "revoked", LicenseExpired: "expired"}


def decide(seen: Seen, rows: Rows) -> Iterator[Put | Delete | Barrier | Scrub]:
    """A license's row follows its events: issued, playback started, renewed, ended; an erased member's go."""
    event, account_id = seen.event, seen.account_id
    if account_id is None:
        return
    if isinstance(event, AccountErased):
        for license_id, title_id in licenses_of(rows, seen):
            yield Delete(LICENSES.name, (title_id, account_id, license_id))
            yield Delete(TITLES_OF.name, (account_id, license_id))
        yield SCRUB
        return
    if seen.erased:
        return  # an erased member's events: nothing of theirs is written (their rows went with the erasure)
    if isinstance(event, LicenseIssued):
        yield remember_title(seen, event.license_id, event.title_id)
        values = {
            "device_id": event.device_id,
            "status": "active",
            "issued_at": to_micros(event.issued_at),
            "expires_at": to_micros(event.expires_at),
        }
        yield Put(LICENSES.name, (event.title_id, account_id, event.license_id), values)
        return
    if isinstance(event, PlaybackStarted):
        change: dict[str, Any] = {"expires_at": to_micros(event.expires_at)}
    elif isinstance(event, LicenseRenewed):
        change = {"status": "active", "expires_at": to_micros(event.expires_at)}
    elif isinstance(event, LicenseReleased | LicenseRevoked | LicenseExpired):
        change = {"status": _ENDED[type(event)]}
    else:
        return
    title_id = title_of(rows, seen, event.license_id)
    yield Put(LICENSES.name, (title_id, account_id, event.license_id), change)


def page(
    rows: Rows, title_id: str, *, status: str, after: tuple[str, str] | None, limit: int, now: datetime
) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
    """A page of the title's licenses with ``status`` (``active``: not past expiry at ``now``), by account and license.

    Returns the rows and the cursor of the next page (None on the last).
    """
    cutoff = to_micros(now)
    found: list[dict[str, Any]] = []
    scanned = 0
    cursor = after
    while scanned < SCAN:
        wanted = min(1000, SCAN - scanned)
        batch = rows.select(LICENSES.name, (title_id,), after=cursor, limit=wanted)
        for row in batch:
            scanned += 1
            cursor = (row["account_id"], row["license_id"])
            if row["status"] != status or (status == "active" and row["expires_at"] <= cutoff):
                continue
            if len(found) == limit:
                last = found[-1]
                return found, (last["account_id"], last["license_id"])
            found.append(
                {
                    "account_id": row["account_id"],
                    "license_id": row["license_id"],
                    "device_id": row["device_id"],
                    "status": row["status"],
                    "issued_at": from_micros(row["issued_at"]),
                    "expires_at": from_micros(row["expires_at"]),
                }
            )
        if len(batch) < wanted:
            return found, None  # the title's partition is through
    return found, cursor  # stopped after SCAN rows: the next page goes on from the last one read


def every_license(rows: Rows, *, after: tuple[str, str, str] | None, limit: int) -> list[tuple[str, str, str]]:
    """A page of ``(account_id, license_id, title_id)`` over every row, after row ``after`` (for verification)."""
    resume = None if after is None else (after[2], after[0], after[1])
    found = rows.scan(LICENSES.name, after=resume, limit=limit)
    return [(r["account_id"], r["license_id"], r["title_id"]) for r in found]


def read_model() -> ReadModel:
    return ReadModel("licenses_by_title", (LICENSES, TITLES_OF), decide, layout=2)
