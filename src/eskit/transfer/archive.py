"""The archive format: a store's events in one gzip-compressed JSON-lines file.

Line 1 is the header, then one line per event, then one per stream's key, then the trailer::

    {"format": "eskit-archive", "version": 2, "created_at": "...Z", "source": "sqlite",
     "consistency": "feed-cut", "feed_cut": 12345}
    {"stream": "account-a1", "position": 1, "event_id": "<uuid>", "type": "AccountOpened",
     "schema_version": 1, "recorded_at": "2026-12-01T12:00:00.123456Z", "data": "{...}", "metadata": "{...}"}
    ...
    {"key": "account-a1", "created_at": "...Z", "master_id": "<id>", "wrapped_base64": "..."}
    {"key": "account-a2", "created_at": "...Z", "erased_at": "...Z"}
    {"end": true, "streams": 2, "events": 9, "keys": 2, "sha256": "<hex>"}

Keys travel as the store keeps them: wrapped by the master key (never in
clear), or as the tombstone of an erased one (no key bytes at all). Version 1
archives (before keys) are read as they are.

``data`` and ``metadata`` are the stored bytes as text (``data_base64`` /
``metadata_base64`` instead when they are not UTF-8), so an import writes back
exactly the bytes that were exported; whatever an application keeps in an
event's metadata (its idempotency records, for one) travels with the event.
Within a stream, events come in position order, starting at 1. ``sha256`` is
the digest of every byte before the trailer line (uncompressed), so a
truncated or altered file is refused before anything is written.
``consistency`` says what the export is a picture of: ``feed-cut`` (every
event the store committed up to feed sequence ``feed_cut``: the store as it
stood at one moment) or ``per-stream`` (each stream as it stood when it was
read, for stores without a single-order feed).

Every line is read with a bounded buffer and checked against what every store
can hold (:mod:`eskit.transfer.lines`): an archive is refused, naming the
first wrong line (``line 12: ...``), before anything is written anywhere.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from eskit.events import NewEvent, StoredEvent
from eskit.exceptions import EskitError
from eskit.privacy import KeyRecord
from eskit.transfer.lines import (
    MAX_LINE,
    LineProblem,
    StreamPositions,
    check_event,
    event_from_line,
    key_from_line,
    key_line,
    shown,
)

__all__ = [
    "FORMAT",
    "VERSION",
    "ArchiveError",
    "ArchiveHeader",
    "ArchiveReader",
    "ArchiveSummary",
    "ArchiveWriter",
    "Decode",
    "Item",
]

FORMAT = "eskit-archive"
VERSION = 2
#: the versions this code reads
READABLE = (1, 2)


class ArchiveError(EskitError):
    """An archive that cannot be trusted: not one, a newer version, truncated, altered, malformed, or
    holding what no store can take; or an event that cannot be exported."""


#: an application's decoding of one event, given its stream's key record from the archive (raises when it cannot)
Decode = Callable[[StoredEvent, KeyRecord | None], object]

#: what an archive holds, line by line: an event ``(stream_id, position, event)``, or a stream's key record
Item = tuple[str, int, NewEvent] | KeyRecord


@dataclass(frozen=True)
class ArchiveHeader:
    """What the first line says: where the events came from and how consistent a picture they are."""

    created_at: datetime
    source: str
    consistency: str
    feed_cut: int | None


@dataclass(frozen=True)
class ArchiveSummary:
    """What the trailer says, checked against the lines before it."""

    streams: int
    events: int
    sha256: str
    keys: int = 0


def _time(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _bytes_field(line: dict[str, Any], name: str, value: bytes) -> None:
    try:
        line[name] = value.decode("utf-8")
    except UnicodeDecodeError:
        line[name + "_base64"] = base64.b64encode(value).decode("ascii")


class ArchiveWriter:
    """Writes an archive line by line; :meth:`finish` adds the trailer. Use as a context manager.

    The file is written under a temporary name and renamed into place by
    :meth:`finish`, so an interrupted export never leaves a file that looks whole.
    """

    def __init__(self, path: str, header: ArchiveHeader) -> None:
        self.path = path
        self._partial = path + ".partial"
        self._raw = open(self._partial, "wb")  # noqa: SIM115 - closed by finish or abort
        try:
            self._start(header)
        except BaseException:  # interrupted before the caller holds the writer: nothing may be left behind
            self.abort()
            raise

    def _start(self, header: ArchiveHeader) -> None:
        self._out = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=1)
        self._digest = hashlib.sha256()
        self._buffer: list[bytes] = []  # lines not yet compressed: one write per MiB costs less than one per line
        self._buffered = 0
        self.streams = 0
        self.events = 0
        self.keys = 0
        self._positions = StreamPositions()
        self._line(
            {
                "format": FORMAT,
                "version": VERSION,
                "created_at": _time(header.created_at),
                "source": header.source,
                "consistency": header.consistency,
                "feed_cut": header.feed_cut,
            }
        )

    def _line(self, value: dict[str, Any]) -> None:
        line = orjson.dumps(value) + b"\n"
        if len(line) > MAX_LINE:
            raise ArchiveError(
                f"cannot export {shown(value.get('stream'))} at position {value.get('position')}: its line would be "
                f"{len(line):,} bytes, more than the {MAX_LINE:,} an archive line may hold"
            )
        self._buffer.append(line)
        self._buffered += len(line)
        if self._buffered >= 1 << 20:
            self._flush()

    def _flush(self) -> None:
        chunk = b"".join(self._buffer)
        self._buffer, self._buffered = [], 0
        self._digest.update(chunk)
        self._out.write(chunk)

    def write(self, event: StoredEvent) -> None:
        """Add ``event``; :class:`ArchiveError` for one an import would refuse (a damaged store's)."""
        try:
            check_event(event)
            self._positions.follow(event.stream_id, event.position)
        except LineProblem as exc:
            raise ArchiveError(f"cannot export {shown(event.stream_id)} at position {event.position}: {exc}") from None
        line: dict[str, Any] = {
            "stream": event.stream_id,
            "position": event.position,
            "event_id": str(event.event_id),
            "type": event.type_name,
            "schema_version": event.schema_version,
            "recorded_at": _time(event.recorded_at),
        }
        _bytes_field(line, "data", event.data)
        _bytes_field(line, "metadata", event.metadata)
        self._line(line)
        self.events += 1
        if event.position == 1:  # every stream's events start at 1, so this counts streams without a set
            self.streams += 1

    def write_key(self, record: KeyRecord) -> None:
        """Add a stream's key record as the store keeps it (wrapped, or a tombstone)."""
        self._line(key_line(record, _time))
        self.keys += 1

    def finish(self) -> ArchiveSummary:
        self._flush()
        summary = ArchiveSummary(self.streams, self.events, self._digest.hexdigest(), self.keys)
        trailer = {
            "end": True,
            "streams": summary.streams,
            "events": summary.events,
            "keys": summary.keys,
            "sha256": summary.sha256,
        }
        self._out.write(orjson.dumps(trailer) + b"\n")
        self._out.close()
        self._raw.flush()
        os.fsync(self._raw.fileno())
        self._raw.close()
        os.replace(self._partial, self.path)
        return summary

    def abort(self) -> None:
        """Drop what was written (an interrupted or failed export)."""
        with contextlib.suppress(Exception):
            self._out.close()  # may not be made yet: then this is an AttributeError, suppressed
        self._raw.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._partial)

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is not None:
            self.abort()


class ArchiveReader:
    """Reads an archive: :meth:`check` proves it whole and sound, :meth:`events` yields its events.

    Both stream the file with a bounded buffer, so memory stays flat whatever the
    file holds; only each stream's last position is kept (to check positions run
    1, 2, 3 ...). ``decode``, when given, is an application's decoding of an event:
    :meth:`check` then also refuses an event the application cannot read.
    """

    def __init__(self, path: str, *, decode: Decode | None = None) -> None:
        self.path = path
        self.decode = decode
        #: what :meth:`check` found, once it passed
        self.summary: ArchiveSummary | None = None
        self.version = VERSION
        self.header = self._read_header()

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        number = 0
        try:
            with gzip.open(self.path, "rb") as raw:
                lines = io.BufferedReader(raw, buffer_size=1 << 20)
                while True:
                    number += 1
                    # Never more than MAX_LINE + 1 bytes at once: a longer line is refused, not read whole.
                    line = lines.readline(MAX_LINE + 1)
                    if not line:
                        return
                    if len(line) > MAX_LINE:
                        raise ArchiveError(f"line {number}: longer than {MAX_LINE:,} bytes, the most a line may hold")
                    yield number, line
        except FileNotFoundError as exc:
            raise ArchiveError(f"no archive at {self.path!r}") from exc
        except (OSError, EOFError, zlib.error) as exc:
            raise ArchiveError(f"line {max(number, 1)}: {self.path!r} is damaged or not a gzip file: {exc}") from exc

    def _read_header(self) -> ArchiveHeader:
        for number, line in self._lines():
            value = self._parse(number, line)
            if value.get("format") != FORMAT:
                raise ArchiveError(f"line 1: {self.path!r} is not an {FORMAT} file")
            if value.get("version") not in READABLE:
                raise ArchiveError(
                    f"line 1: {self.path!r} is {FORMAT} version {shown(value.get('version'))}; "
                    f"this code reads versions {', '.join(map(str, READABLE))}"
                )
            self.version = int(value["version"])
            try:
                feed_cut = value.get("feed_cut")
                if feed_cut is not None and (isinstance(feed_cut, bool) or not isinstance(feed_cut, int)):
                    raise ValueError(f"feed_cut must be a whole number, not {shown(feed_cut)}")
                return ArchiveHeader(
                    created_at=datetime.fromisoformat(value["created_at"]),
                    source=str(value["source"]),
                    consistency=str(value["consistency"]),
                    feed_cut=feed_cut,
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise ArchiveError(f"line 1: malformed header: {exc}") from exc
        raise ArchiveError(f"line 1: {self.path!r} is empty")

    def _parse(self, number: int, line: bytes) -> dict[str, Any]:
        if not line.endswith(b"\n"):
            raise ArchiveError(f"line {number}: cut short: the archive is truncated")
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ArchiveError(f"line {number}: not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise ArchiveError(f"line {number}: not a JSON object")
        return value

    def _item(self, number: int, value: dict[str, Any], positions: StreamPositions) -> StoredEvent | KeyRecord:
        try:
            if "key" in value and "stream" not in value:
                if self.version < 2:
                    raise LineProblem("a key line in a version 1 archive")
                return key_from_line(value)
            event = event_from_line(value)
            positions.follow(event.stream_id, event.position)
        except LineProblem as exc:
            raise ArchiveError(f"line {number}: {exc}") from None
        return event

    def _decoded(self, number: int, event: StoredEvent, keys: dict[str, KeyRecord]) -> None:
        if self.decode is None:
            return
        try:
            self.decode(event, keys.get(event.stream_id))
        except Exception as exc:  # whatever the application's decoding raises, the event is unreadable to it
            raise ArchiveError(
                f"line {number}: {shown(event.stream_id)} at position {event.position}: this application cannot "
                f"decode {shown(event.type_name)} (schema {event.schema_version}): {type(exc).__name__}: "
                f"{shown(str(exc), limit=200)}"
            ) from None

    def _walk(
        self, *, advance: Callable[[int], None], decoding: dict[str, KeyRecord] | None = None
    ) -> Iterator[tuple[int, StoredEvent | KeyRecord]]:
        """Every event and key record with its line number, each line checked (each event decoded with the
        keys of ``decoding``, when given); the trailer's digest and counts at the end."""
        digest = hashlib.sha256()
        positions = StreamPositions()
        streams = events = keys = last = 0
        trailer: dict[str, Any] | None = None
        for number, line in self._lines():
            last = number
            if trailer is not None:
                raise ArchiveError(f"line {number}: follows the trailer")
            value = self._parse(number, line)
            if value.get("end") is True:
                trailer = value
                continue
            digest.update(line)
            if number == 1:
                continue
            item = self._item(number, value, positions)
            if isinstance(item, KeyRecord):
                keys += 1
                yield number, item
                continue
            if decoding is not None:
                self._decoded(number, item, decoding)
            events += 1
            streams += item.position == 1
            if events % 1000 == 0:
                advance(1000)
            yield number, item
        advance(events % 1000)
        if trailer is None:
            raise ArchiveError(
                f"line {last}: no trailer after it: the archive is truncated (an export that did not finish?)"
            )
        summary = ArchiveSummary(streams, events, digest.hexdigest(), keys)
        if trailer.get("sha256") != summary.sha256:
            raise ArchiveError(f"line {last} (the trailer): checksum mismatch: the archive was altered or damaged")
        counted_keys = trailer.get("keys", 0) if self.version >= 2 else 0
        if trailer.get("events") != events or trailer.get("streams") != streams or counted_keys != keys:
            raise ArchiveError(
                f"line {last} (the trailer): it counts {shown(trailer.get('streams'))} streams, "
                f"{shown(trailer.get('events'))} events and {shown(counted_keys)} keys, the archive holds "
                f"{streams}, {events} and {keys}"
            )
        self.summary = summary

    def check(self, *, advance: Callable[[int], None] = lambda _n: None) -> ArchiveSummary:
        """Read the whole file: every line is a sound event or key, and the trailer's counts and digest match.

        Raises :class:`ArchiveError` naming the first problem and its line. ``advance`` is told of
        events checked, a thousand at a time. With ``decode``, a second read decodes every event with
        its stream's key record from the archive (the keys are kept in memory meanwhile).
        """
        keys: dict[str, KeyRecord] = {}
        for _, item in self._walk(advance=advance):
            if self.decode is not None and isinstance(item, KeyRecord):
                keys[item.subject] = item
        if self.decode is not None:
            for _ in self._walk(advance=lambda _n: None, decoding=keys):
                pass
        assert self.summary is not None
        return self.summary

    def items(self) -> Iterator[Item]:
        """Each event as ``(stream_id, position, event)`` and each key record, in file order (call :meth:`check`
        first).

        Every line is checked again as it is read, and the digest at the end, so a file
        changed since :meth:`check` raises :class:`ArchiveError` (after the lines before it).
        """
        for _, item in self._walk(advance=lambda _n: None):
            yield item if isinstance(item, KeyRecord) else (item.stream_id, item.position, item.to_new())

    def events(self) -> Iterator[tuple[str, int, NewEvent]]:
        """Each event as ``(stream_id, position, event)``, in file order (see :meth:`items`)."""
        for item in self.items():
            if not isinstance(item, KeyRecord):
                yield item
