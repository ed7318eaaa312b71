"""Lookup: which accounts hold a device id, a license id or an idempotency key (support's first question)."""

from __future__ import annotations

from collections.abc import Iterator

from downloads.domain.events import DeviceRegistered, LicenseIssued
from downloads.readmodels.model import Barrier, ReadModel, Seen
from eskit.readmodel import Put, Rows, Table

__all__ = ["KEYS", "KINDS", "accounts", "decide", "every_key", "read_model"]

KEYS = Table("keys", partition=("kind", "key"), clustering=("account_id",))

KINDS = ("device_id", "license_id", "idempotency_key")


def decide(seen: Seen, rows: Rows) -> Iterator[Put | Barrier]:
    """A registered device, an issued license, and the event holding a key's record name their account."""
    account_id, event, meta = seen.account_id, seen.event, seen.meta
    if account_id is None:
        return
    if isinstance(event, DeviceRegistered):
        yield Put(KEYS.name, ("device_id", event.device_id, account_id))
    elif isinstance(event, LicenseIssued):
        yield Put(KEYS.name, ("license_id", event.license_id, account_id))
    if meta.extra and "reply" in meta.extra and meta.request_id:
        yield Put(KEYS.name, ("idempotency_key", meta.request_id, account_id))


def accounts(rows: Rows, kind: str, key: str, *, limit: int = 1000) -> list[str]:
    """The accounts (in order) that hold ``key`` of ``kind``."""
    return [str(r["account_id"]) for r in rows.select(KEYS.name, (kind, key), limit=limit)]


def every_key(rows: Rows, *, after: tuple[str, str, str] | None, limit: int) -> list[tuple[str, str, str]]:
    """A page of ``(account_id, kind, key)`` over every row, after row ``after`` (for verification)."""
    resume = None if after is None else (after[1], after[2], after[0])
    return [(r["account_id"], r["kind"], r["key"]) for r in rows.scan(KEYS.name, after=resume, limit=limit)]


def read_model() -> ReadModel:
    return ReadModel("lookup", (KEYS,), decide, layout=2)
