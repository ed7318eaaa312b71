"""What the relay publishes for each accepted event: a versioned JSON envelope, its key and its headers.

Envelope version 1 (the value of each Kafka message, UTF-8 JSON)::

    {"envelope": 1,                      this layout's version (also in the header below)
     "event_id": "9f0c...-...",          unique per event: what a consumer removes duplicates by
     "stream_id": "account-a17",         the stream the event belongs to
     "account_id": "a17",                the account (null for a title's stream)
     "position": 4,                      its place in the stream, from 1, without gaps
     "type": "LicenseIssued",            the event's stable type name
     "schema_version": 1,                the version of "data"'s layout for that type
     "recorded_at": "2026-03-01T12:00:00.123456Z",   RFC 3339, UTC
     "command": "AcquireLicense",        the command that decided it (null if unknown)
     "data": {...}}                      the event's data exactly as stored (not upcast)

Nothing else of the event's metadata is published (request and causation ids, the answers kept
for idempotency), and no secret is ever in an event. Key: the account id (the stream id for a
title's stream), so one member's events go to one partition, in order. Headers:
``envelope-version`` (``1``) and ``event-type``.

Erasure (issue 22) decides what may leave the store: every envelope's ``data`` is made by one
function, :func:`stored_data`, the seam where members' personal fields will be left encrypted,
or dropped for an erased member, before anything is published.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC
from typing import Any

import orjson

from eskit import StoredEvent

__all__ = [
    "ACCOUNT_PREFIX",
    "ENVELOPE_HEADER",
    "ENVELOPE_VERSION",
    "DataOf",
    "Message",
    "account_of",
    "message",
    "stored_data",
]

ENVELOPE_VERSION = 1
ENVELOPE_HEADER = "envelope-version"
ACCOUNT_PREFIX = "account-"
_VERSION_HEADER = str(ENVELOPE_VERSION).encode()

#: what an envelope says of an event's data (see :func:`stored_data`)
DataOf = Callable[[StoredEvent], Any]
#: (key, value, headers) of one Kafka message
Message = tuple[bytes, bytes, list[tuple[str, bytes]]]


def account_of(stream_id: str) -> str | None:
    """The account an ``account-<id>`` stream is of; None for any other stream (a title's)."""
    return stream_id[len(ACCOUNT_PREFIX) :] if stream_id.startswith(ACCOUNT_PREFIX) else None


def stored_data(stored: StoredEvent) -> Any:
    """The event's data as stored: what envelope version 1 publishes.

    The one place that decides what of an event's data leaves the store: erasure replaces it.
    Raises ``orjson.JSONDecodeError`` (a ``ValueError``) for data that is not JSON: the relay then
    stops on that event and reports it, it never skips it.
    """
    return orjson.loads(stored.data)


def _command(stored: StoredEvent) -> str | None:
    if not stored.metadata:
        return None
    found = orjson.loads(stored.metadata)
    command = found.get("command") if isinstance(found, dict) else None
    return command if isinstance(command, str) else None


def message(stored: StoredEvent, *, data: DataOf = stored_data) -> Message:
    """The Kafka message of one stored event: its key, its envelope, its headers."""
    account = account_of(stored.stream_id)
    when = stored.recorded_at
    if when.utcoffset():  # stores hand out UTC; anything else is written in UTC all the same
        when = when.astimezone(UTC)
    value = orjson.dumps(
        {
            "envelope": ENVELOPE_VERSION,
            "event_id": stored.event_id,
            "stream_id": stored.stream_id,
            "account_id": account,
            "position": stored.position,
            "type": stored.type_name,
            "schema_version": stored.schema_version,
            "recorded_at": when,
            "command": _command(stored),
            "data": data(stored),
        },
        option=orjson.OPT_UTC_Z,  # RFC 3339 in UTC, "Z"; microseconds when there are any
    )
    key = (account if account is not None else stored.stream_id).encode()
    headers = [(ENVELOPE_HEADER, _VERSION_HEADER), ("event-type", stored.type_name.encode())]
    return key, value, headers
