"""What an account remembers of the commands it accepted under an idempotency key.

A key's record is written once per command, in the metadata of the command's
first event: the command's fingerprint, whether it created something, the
reply body and how long to keep it. The account keeps only an index of those
records (key, fingerprint, created, the position of the event holding the
record, when it expires), so snapshots stay small; the reply is read back from
that one event when a retry arrives. Keys are kept for the retention period,
whatever the number of other commands in that time.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

__all__ = ["AcceptedRequest", "RememberedRequests", "reply_record"]


@dataclass(frozen=True)
class AcceptedRequest:
    """A command the account accepted under an idempotency key.

    ``fingerprint`` identifies the command and its arguments, so the same key
    sent with a different command is recognised as a mistake; ``position`` is
    the stream position of the event whose metadata holds the reply.
    """

    request_id: str
    fingerprint: str
    created: bool
    position: int
    expires_at: datetime


def reply_record(metadata_extra: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """The key record stored in an event's metadata, if it holds one."""
    reply = metadata_extra.get("reply") if metadata_extra else None
    return reply if isinstance(reply, Mapping) else None


class RememberedRequests:
    """The accepted keys of one account, oldest first, each until its retention ends."""

    def __init__(self) -> None:
        self._by_key: OrderedDict[str, AcceptedRequest] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[AcceptedRequest]:
        return iter(self._by_key.values())

    def get(self, request_id: str, now: datetime) -> AcceptedRequest | None:
        """The record of ``request_id`` if it is still within its retention at ``now``."""
        found = self._by_key.get(request_id)
        return found if found is not None and found.expires_at > now else None

    def observe(self, request_id: str, record: Mapping[str, Any], position: int, at: datetime) -> None:
        """Remember the key record found at ``position`` (decided at ``at``); forget expired keys.

        A command's later events carry the same key (older versions also
        copied the record into each): the first one found stands.
        """
        self.forget_expired(at)
        existing = self._by_key.get(request_id)
        if existing is not None:
            if existing.expires_at > at:
                return
            # Expired, but kept behind a longer-lived key (retention changed between commands):
            # the key now names this command.
            del self._by_key[request_id]
        keep = timedelta(seconds=float(record.get("keep_seconds", 86400)))
        self._by_key[request_id] = AcceptedRequest(
            request_id=request_id,
            fingerprint=str(record.get("fingerprint", "")),
            created=bool(record.get("created", False)),
            position=position,
            expires_at=at + keep,
        )

    def forget_expired(self, now: datetime) -> None:
        """Drop keys past their retention, oldest first (keys are added in time order)."""
        while self._by_key:
            oldest = next(iter(self._by_key.values()))
            if oldest.expires_at > now:
                return
            del self._by_key[oldest.request_id]

    def to_rows(self) -> list[list[Any]]:
        return [[r.request_id, r.fingerprint, r.created, r.position, r.expires_at] for r in self._by_key.values()]

    @classmethod
    def from_rows(cls, rows: list[list[Any]], parse_time: Any) -> RememberedRequests:
        remembered = cls()
        for request_id, fingerprint, created, position, expires_at in rows:
            remembered._by_key[request_id] = AcceptedRequest(
                request_id, fingerprint, bool(created), int(position), parse_time(expires_at)
            )
        return remembered
