"""What an archive's event lines must hold for every store to take them: the checks export and import share.

An archive's digest has no key: anyone can recompute it, so it only proves a
file whole, not sound. What makes an import safe is that every line is checked
against what *every* store can hold before the target is opened:

* a line is at most :data:`MAX_LINE` bytes (read with a bounded buffer, so a
  hostile file cannot make the reader hold more);
* a stream id is text of at most :data:`MAX_STREAM_ID_BYTES` bytes of UTF-8;
* a position is a whole number from 1 to :data:`MAX_POSITION` (SQLite
  ``INTEGER``, Cassandra ``bigint``), and each stream's positions run 1, 2, 3 ...
  with none twice and none missing (:class:`StreamPositions`);
* a schema version is a whole number from 1 to :data:`MAX_SCHEMA_VERSION`
  (Cassandra ``int``);
* ``recorded_at`` is an ISO 8601 time with a time zone, inside the range every
  store encodes (:func:`eskit.stores.timestamps.storable`);
* ``event_id`` is a UUID; ``data`` and ``metadata`` are text, or valid base64.

A key line (a stream's key record, :mod:`eskit.privacy`) names its subject
(a stream id, as above), the master key that wrapped it and the wrapped bytes
(base64), or, for a tombstone, only when it was erased; times as above.

Export applies the same checks to what it writes, so a damaged store is not
turned into an archive that import would refuse.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import datetime
from typing import Any

from eskit.events import StoredEvent
from eskit.privacy import KeyRecord
from eskit.stores.timestamps import storable

__all__ = [
    "MAX_LINE",
    "MAX_POSITION",
    "MAX_SCHEMA_VERSION",
    "MAX_STREAM_ID_BYTES",
    "LineProblem",
    "StreamPositions",
    "check_event",
    "event_from_line",
    "key_from_line",
    "key_line",
    "shown",
]

#: the longest line an archive may hold (bytes, newline included)
MAX_LINE = 16 * 1024 * 1024
#: the highest position every store holds: SQLite INTEGER and Cassandra bigint are signed 64-bit
MAX_POSITION = 2**63 - 1
#: the highest schema version every store holds: Cassandra's int is signed 32-bit
MAX_SCHEMA_VERSION = 2**31 - 1
#: the longest stream id: half of Cassandra's 64 KiB key limit, leaving room for the key's other parts
MAX_STREAM_ID_BYTES = 32 * 1024


class LineProblem(ValueError):
    """What is wrong with one event (the caller says where it is)."""


def shown(value: object, *, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: messages quote what they refuse, within bounds."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _whole(value: dict[str, Any], name: str, high: int) -> int:
    found = value.get(name)
    if isinstance(found, bool) or not isinstance(found, int):
        raise LineProblem(f"{name} must be a whole number, not {shown(found)}")
    if not 1 <= found <= high:
        raise LineProblem(f"{name} {found} is out of range: every store holds 1 to {high}")
    return found


def _text(value: dict[str, Any], name: str) -> str:
    found = value.get(name)
    if not isinstance(found, str) or not found:
        raise LineProblem(f"{name} must be non-empty text, not {shown(found)}")
    return found


def _bytes(value: dict[str, Any], name: str) -> bytes:
    if name in value:
        found = value[name]
        if not isinstance(found, str):
            raise LineProblem(f"{name} must be text, not {shown(found)}")
        return found.encode("utf-8")
    encoded = value.get(name + "_base64")
    if not isinstance(encoded, str):
        raise LineProblem(f"{name} (or {name}_base64) is missing")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise LineProblem(f"{name}_base64 is not base64: {exc}") from None


def _stream(value: dict[str, Any]) -> str:
    stream = _text(value, "stream")
    if len(stream.encode("utf-8")) > MAX_STREAM_ID_BYTES:
        raise LineProblem(f"stream id {shown(stream)} is longer than {MAX_STREAM_ID_BYTES:,} bytes")
    return stream


def _recorded_at(value: dict[str, Any], name: str = "recorded_at") -> datetime:
    text = value.get(name)
    if not isinstance(text, str):
        raise LineProblem(f"{name} must be an ISO 8601 time, not {shown(text)}")
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise LineProblem(f"{name} {shown(text)} is not an ISO 8601 time") from None
    try:
        return storable(when)
    except ValueError as exc:
        raise LineProblem(f"{name} {exc}") from None


def event_from_line(value: dict[str, Any]) -> StoredEvent:
    """The event an archive line describes; :class:`LineProblem` when no store could hold it as written."""
    stream = _stream(value)
    position = _whole(value, "position", MAX_POSITION)
    type_name = _text(value, "type")
    schema_version = _whole(value, "schema_version", MAX_SCHEMA_VERSION)
    event_id = value.get("event_id")
    try:
        parsed_id = uuid.UUID(event_id) if isinstance(event_id, str) else None
    except ValueError:
        parsed_id = None
    if parsed_id is None:
        raise LineProblem(f"event_id must be a UUID, not {shown(event_id)}")
    return StoredEvent(
        stream_id=stream,
        position=position,
        type_name=type_name,
        schema_version=schema_version,
        data=_bytes(value, "data"),
        metadata=_bytes(value, "metadata"),
        recorded_at=_recorded_at(value),
        event_id=parsed_id,
    )


def key_line(record: KeyRecord, time: Any) -> dict[str, Any]:
    """The archive line of a key record (``time`` writes a datetime as the archive does)."""
    line: dict[str, Any] = {"key": record.subject, "created_at": time(record.created_at)}
    if record.erased:
        line["erased_at"] = time(record.erased_at)
    else:
        assert record.wrapped is not None
        line["master_id"] = record.master_id
        line["wrapped_base64"] = base64.b64encode(record.wrapped).decode("ascii")
    return line


def key_from_line(value: dict[str, Any]) -> KeyRecord:
    """The key record a key line describes; :class:`LineProblem` when it is not one a store could hold."""
    subject = _text(value, "key")
    if len(subject.encode("utf-8")) > MAX_STREAM_ID_BYTES:
        raise LineProblem(f"key {shown(subject)} is longer than {MAX_STREAM_ID_BYTES:,} bytes")
    created_at = _recorded_at(value, "created_at")
    if "erased_at" in value:
        return KeyRecord.tombstone(subject, _recorded_at(value, "erased_at"), created_at=created_at)
    master_id = _text(value, "master_id")
    return KeyRecord(subject, master_id, _bytes(value, "wrapped"), created_at)


def check_event(event: StoredEvent) -> None:
    """Raise :class:`LineProblem` for an event (read from a store, to export) that an import would refuse."""
    if not event.stream_id or len(event.stream_id.encode("utf-8")) > MAX_STREAM_ID_BYTES:
        raise LineProblem(f"stream id {shown(event.stream_id)} is empty or longer than {MAX_STREAM_ID_BYTES:,} bytes")
    if not 1 <= event.position <= MAX_POSITION:
        raise LineProblem(f"position {event.position} is out of range: every store holds 1 to {MAX_POSITION}")
    if not 1 <= event.schema_version <= MAX_SCHEMA_VERSION:
        raise LineProblem(
            f"schema_version {event.schema_version} is out of range: every store holds 1 to {MAX_SCHEMA_VERSION}"
        )
    try:
        storable(event.recorded_at)
    except ValueError as exc:
        raise LineProblem(f"recorded_at {exc}") from None


class StreamPositions:
    """Each stream's last position seen, to check that positions run 1, 2, 3 ... (memory grows with streams only)."""

    def __init__(self) -> None:
        self._last: dict[str, int] = {}

    def follow(self, stream_id: str, position: int) -> None:
        """Take the stream's next event; :class:`LineProblem` unless it is at the position after the last one."""
        last = self._last.get(stream_id, 0)
        if position == last + 1:
            self._last[stream_id] = position
            return
        where = f"stream {shown(stream_id)}"
        if last == 0:
            raise LineProblem(f"{where} starts at position {position}, not 1: its first events are missing")
        if position <= last:
            raise LineProblem(
                f"{where} has position {position} again after position {last}: an event twice, or out of order"
            )
        raise LineProblem(f"{where} jumps from position {last} to {position}: the events between are missing")
