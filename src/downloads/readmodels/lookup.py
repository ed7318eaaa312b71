"""Lookup: which accounts hold a device id, a license id or an idempotency key (support's first question).

``owned`` lists each account's keys, so that an erased member's rows are found and deleted.
"""

from __future__ import annotations

from collections.abc import Iterator

from downloads.domain.events import AccountErased, DeviceRegistered, LicenseIssued
from downloads.readmodels.model import SCRUB, Barrier, ReadModel, Scrub, Seen
from eskit.readmodel import Delete, Put, Rows, Table

__all__ = ["KEYS", "KINDS", "OWNED", "accounts", "decide", "every_key", "read_model"]

KEYS = Table("keys", partition=("kind", "key"), clustering=("account_id",))
#: each account's rows of ``keys`` (to delete them when its member is erased)
OWNED = Table("owned", partition=("account_id",), clustering=("kind", "key"))

KINDS = ("device_id", "license_id", "idempotency_key")


def decide(seen: Seen, rows: Rows) -> Iterator[Put | Delete | Barrier | Scrub]:
    """A registered device, an issued license, and the event holding a key's record name their account;
    an erased member's rows go."""
    account_id, event, meta = seen.account_id, seen.event, seen.meta
    if account_id is None:
        return
    if isinstance(event, AccountErased):
        for row in rows.select(OWNED.name, (account_id,)):
            yield Delete(KEYS.name, (row["kind"], row["key"], account_id))
            yield Delete(OWNED.name, (account_id, row["kind"], row["key"]))
        yield SCRUB
        return
    if seen.erased:
        return  # an erased member's events: nothing of theirs is written
    found: list[tuple[str, str]] = []
    if isinstance(event, DeviceRegistered):
        found.append(("device_id", event.device_id))
    elif isinstance(event, LicenseIssued):
        found.append(("license_id", event.license_id))
    if meta.extra and "reply" in meta.extra and meta.request_id:
        found.append(("idempotency_key", meta.request_id))
    for kind, key in found:
        yield Put(OWNED.name, (account_id, kind, key))
        yield Put(KEYS.name, (kind, key, account_id))


def accounts(rows: Rows, kind: str, key: str, *, limit: int = 1000) -> list[str]:
    """The accounts (in order) that hold ``key`` of ``kind``."""
    return [str(r["account_id"]) for r in rows.select(KEYS.name, (kind, key), limit=limit)]


def every_key(rows: Rows, *, after: tuple[str, str, str] | None, limit: int) -> list[tuple[str, str, str]]:
    """A page of ``(account_id, kind, key)`` over every row, after row ``after`` (for verification)."""
    resume = None if after is None else (after[1], after[2], after[0])
    return [(r["account_id"], r["kind"], r["key"]) for r in rows.scan(KEYS.name, after=resume, limit=limit)]


def read_model() -> ReadModel:
    return ReadModel("lookup", (KEYS, OWNED), decide, layout=3)
