"""The Account's snapshot state: what is kept, and its compact stored form (version 2).

Rows are positional lists, not objects, so a snapshot of an account with
thousands of licenses stays small. Changing the form means a new
``Account.snapshot_version`` (an old snapshot is then rebuilt from events).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from downloads.domain.model import Device, License
from downloads.domain.requests import RememberedRequests

__all__ = ["AccountState", "decode_state", "encode_state"]


@dataclass
class AccountState:
    """Everything an account's snapshot holds; ``active`` lists licenses in the order they became active."""

    plan: str
    status: str
    opened_at: datetime | None
    devices: list[Device]
    licenses: list[License]
    active: list[str]
    downloads: dict[str, list[datetime]]
    requests: RememberedRequests
    last_at: datetime | None
    erased_at: datetime | None = None


def encode_state(state: AccountState) -> dict[str, Any]:
    """The stored form of ``state`` (``erased_at`` only for an erased account, so older forms compare equal)."""
    stored = {
        "plan": state.plan,
        "status": state.status,
        "opened_at": state.opened_at,
        "devices": [[d.device_id, d.model, d.status, d.registered_at] for d in state.devices],
        "licenses": [
            [
                lic.license_id,
                lic.device_id,
                lic.title_id,
                lic.issued_at,
                lic.expires_at,
                lic.status,
                lic.playback_started_at,
                lic.renewals,
                lic.ended_at,
                lic.end_reason,
            ]
            for lic in state.licenses
        ],
        "active": list(state.active),
        "downloads": state.downloads,
        "requests": state.requests.to_rows(),
        "last_at": state.last_at,
    }
    if state.erased_at is not None:
        stored["erased_at"] = state.erased_at
    return stored


def decode_state(stored: Mapping[str, Any]) -> AccountState:
    """Read the stored form back; raises ``KeyError``, ``TypeError`` or ``ValueError`` for a damaged one."""
    devices = [
        Device(device_id, model, status, _time(registered_at))
        for device_id, model, status, registered_at in stored["devices"]
    ]
    licenses = [
        License(
            row[0],
            row[1],
            row[2],
            _required_time(row[3]),
            _required_time(row[4]),
            row[5],
            _time(row[6]),
            row[7],
            _time(row[8]),
            row[9],
        )
        for row in stored["licenses"]
    ]
    return AccountState(
        plan=stored["plan"],
        status=stored["status"],
        opened_at=_time(stored["opened_at"]),
        devices=devices,
        licenses=licenses,
        active=list(stored["active"]),
        downloads={k: [_required_time(t) for t in v] for k, v in stored["downloads"].items()},
        requests=RememberedRequests.from_rows(stored["requests"], _required_time),
        last_at=_time(stored["last_at"]),
        erased_at=_time(stored.get("erased_at")),
    )


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _required_time(value: Any) -> datetime:
    parsed = _time(value)
    if parsed is None:
        raise ValueError("a required time is missing from the snapshot")
    return parsed
