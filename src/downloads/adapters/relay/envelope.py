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
     "data": {...},                      the event's data as stored (not upcast), without personal fields
     "withheld": ["device_id"]}          the names of the personal fields left out of "data"

Nothing else of the event's metadata is published (request and causation ids, the answers kept
for idempotency), and no secret is ever in an event. Key: the account id (the stream id for a
title's stream), so one member's events go to one partition, in order. Headers:
``envelope-version`` (``1``) and ``event-type``.

Members' personal fields never leave the store (docs/privacy.md): not in clear, and not sealed
either (no consumer holds a member's key, and ciphertext shipped elsewhere is one more copy to
forget). What of an event's data is published is decided by one function, given to
:func:`message` and to the sink: the service's is :func:`without_personal` (its codec says what is
personal); :func:`stored_data`, the data whole, is only for stores with nothing personal. So a
member's envelopes say the same before and after their erasure, and the erasure itself is
published (``AccountErased``, the account's last event): a consumer forgets the member then.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC
from typing import Any, NamedTuple

import orjson

from eskit import EventCodec, StoredEvent

__all__ = [
    "ACCOUNT_PREFIX",
    "ENVELOPE_HEADER",
    "ENVELOPE_VERSION",
    "DataOf",
    "Message",
    "Published",
    "account_of",
    "message",
    "stored_data",
    "without_personal",
]

ENVELOPE_VERSION = 1
ENVELOPE_HEADER = "envelope-version"
ACCOUNT_PREFIX = "account-"
_VERSION_HEADER = str(ENVELOPE_VERSION).encode()


class Published(NamedTuple):
    """What an envelope says of an event's data: the data, and the names of the fields left out of it."""

    data: Any
    withheld: Sequence[str] = ()


#: what of an event's data is published (see :func:`without_personal`)
DataOf = Callable[[StoredEvent], Published]
#: (key, value, headers) of one Kafka message
Message = tuple[bytes, bytes, list[tuple[str, bytes]]]


def account_of(stream_id: str) -> str | None:
    """The account an ``account-<id>`` stream is of; None for any other stream (a title's)."""
    return stream_id[len(ACCOUNT_PREFIX) :] if stream_id.startswith(ACCOUNT_PREFIX) else None


def stored_data(stored: StoredEvent) -> Published:
    """The event's data whole, as stored: for streams that hold nothing personal (tests, other stores).

    Raises ``orjson.JSONDecodeError`` (a ``ValueError``) for data that is not JSON: the relay then
    stops on that event and reports it, it never skips it.
    """
    return Published(orjson.loads(stored.data))


def without_personal(codec: EventCodec) -> DataOf:
    """The service's choice: each event's data as stored, without the fields ``codec`` calls personal
    (see :meth:`eskit.EventCodec.published`): in an account stream, the sealed box and any personal field
    an old event holds in clear are left out, and named in ``withheld``. Opens nothing, needs no key.

    Raises (from the returned function) the codec's ``SerializationError`` for data that is not a JSON
    object and ``UnknownEventType`` for a type it does not know in an account stream: the relay stops
    on that event and reports it, it never skips it, and never publishes what it cannot judge.
    """

    def data(stored: StoredEvent) -> Published:
        found, withheld = codec.published(stored)
        return Published(found, withheld)

    return data


def _command(stored: StoredEvent) -> str | None:
    if not stored.metadata:
        return None
    found = orjson.loads(stored.metadata)
    command = found.get("command") if isinstance(found, dict) else None
    return command if isinstance(command, str) else None


def message(stored: StoredEvent, *, data: DataOf = stored_data) -> Message:
    """The Kafka message of one stored event: its key, its envelope, its headers."""
    account = account_of(stored.stream_id)
    published = data(stored)
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
            "data": published.data,
            "withheld": list(published.withheld),
        },
        option=orjson.OPT_UTC_Z,  # RFC 3339 in UTC, "Z"; microseconds when there are any
    )
    key = (account if account is not None else stored.stream_id).encode()
    headers = [(ENVELOPE_HEADER, _VERSION_HEADER), ("event-type", stored.type_name.encode())]
    return key, value, headers
