"""The archive format: a store's events in one gzip-compressed JSON-lines file.

Line 1 is the header, then one line per event, then the trailer::

    {"format": "eskit-archive", "version": 1, "created_at": "...Z", "source": "sqlite",
     "consistency": "feed-cut", "feed_cut": 12345}
    {"stream": "account-a1", "position": 1, "event_id": "<uuid>", "type": "AccountOpened",
     "schema_version": 1, "recorded_at": "2026-12-01T12:00:00.123456Z", "data": "{...}", "metadata": "{...}"}
    ...
    {"end": true, "streams": 2, "events": 9, "sha256": "<hex>"}

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
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import os
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from eskit.events import NewEvent, StoredEvent
from eskit.exceptions import EskitError

__all__ = ["FORMAT", "VERSION", "ArchiveError", "ArchiveHeader", "ArchiveReader", "ArchiveSummary", "ArchiveWriter"]

FORMAT = "eskit-archive"
VERSION = 1


class ArchiveError(EskitError):
    """An archive that cannot be trusted: not one, a newer version, truncated, altered or malformed."""


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
        self._out = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=1)
        self._digest = hashlib.sha256()
        self._buffer: list[bytes] = []  # lines not yet compressed: one write per MiB costs less than one per line
        self._buffered = 0
        self.streams = 0
        self.events = 0
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

    def finish(self) -> ArchiveSummary:
        self._flush()
        summary = ArchiveSummary(self.streams, self.events, self._digest.hexdigest())
        trailer = {"end": True, "streams": summary.streams, "events": summary.events, "sha256": summary.sha256}
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
            self._out.close()
        self._raw.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._partial)

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is not None:
            self.abort()


class ArchiveReader:
    """Reads an archive: :meth:`check` proves it whole, :meth:`events` yields its events.

    Both stream the file, so memory stays flat whatever its size.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.header = self._read_header()

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        try:
            with gzip.open(self.path, "rb") as raw:
                yield from enumerate(io.BufferedReader(raw, buffer_size=1 << 20), start=1)
        except FileNotFoundError as exc:
            raise ArchiveError(f"no archive at {self.path!r}") from exc
        except (OSError, EOFError, zlib.error) as exc:
            raise ArchiveError(f"{self.path!r} is damaged or not a gzip file: {exc}") from exc

    def _read_header(self) -> ArchiveHeader:
        for number, line in self._lines():
            value = self._parse(number, line)
            if value.get("format") != FORMAT:
                raise ArchiveError(f"{self.path!r} is not an {FORMAT} file")
            if value.get("version") != VERSION:
                raise ArchiveError(
                    f"{self.path!r} is {FORMAT} version {value.get('version')!r}; this code reads version {VERSION}"
                )
            try:
                return ArchiveHeader(
                    created_at=datetime.fromisoformat(value["created_at"]),
                    source=str(value["source"]),
                    consistency=str(value["consistency"]),
                    feed_cut=value.get("feed_cut"),
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise ArchiveError(f"{self.path!r}: malformed header: {exc}") from exc
        raise ArchiveError(f"{self.path!r} is empty")

    def _parse(self, number: int, line: bytes) -> dict[str, Any]:
        if not line.endswith(b"\n"):
            raise ArchiveError(f"{self.path!r} is truncated: line {number} is cut short")
        try:
            value = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ArchiveError(f"{self.path!r}: line {number} is not JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise ArchiveError(f"{self.path!r}: line {number} is not a JSON object")
        return value

    def check(self) -> ArchiveSummary:
        """Read the whole file: every line parses as an event, and the trailer's counts and digest match.

        Raises :class:`ArchiveError` naming the first problem (a truncated file has no trailer).
        """
        digest = hashlib.sha256()
        streams = events = 0
        trailer: dict[str, Any] | None = None
        for number, line in self._lines():
            if trailer is not None:
                raise ArchiveError(f"{self.path!r}: line {number} follows the trailer")
            value = self._parse(number, line)
            if value.get("end") is True:
                trailer = value
                continue
            digest.update(line)
            if number > 1:
                event = self._event(number, value)
                events += 1
                streams += event.position == 1
        if trailer is None:
            raise ArchiveError(f"{self.path!r} is truncated: it has no trailer (an export that did not finish?)")
        summary = ArchiveSummary(streams, events, digest.hexdigest())
        if trailer.get("sha256") != summary.sha256:
            raise ArchiveError(f"{self.path!r}: checksum mismatch: the file was altered or damaged")
        if trailer.get("events") != events or trailer.get("streams") != streams:
            raise ArchiveError(
                f"{self.path!r}: the trailer counts {trailer.get('streams')} streams and {trailer.get('events')} "
                f"events, the file holds {streams} and {events}"
            )
        return summary

    def events(self) -> Iterator[tuple[str, int, NewEvent]]:
        """Each event as ``(stream_id, position, event)``, in file order (call :meth:`check` first)."""
        for number, line in self._lines():
            if number == 1:
                continue
            value = self._parse(number, line)
            if value.get("end") is True:
                return
            stored = self._event(number, value)
            yield stored.stream_id, stored.position, stored.to_new()

    def _event(self, number: int, value: dict[str, Any]) -> StoredEvent:
        try:
            position = value["position"]
            stream = value["stream"]
            if not isinstance(position, int) or position < 1 or not isinstance(stream, str) or not stream:
                raise ValueError("a stream id and a position of 1 or more are needed")
            return StoredEvent(
                stream_id=stream,
                position=position,
                type_name=str(value["type"]),
                schema_version=int(value["schema_version"]),
                data=_read_bytes(value, "data"),
                metadata=_read_bytes(value, "metadata"),
                recorded_at=datetime.fromisoformat(value["recorded_at"]),
                event_id=uuid.UUID(value["event_id"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ArchiveError(f"{self.path!r}: line {number} is not an event: {exc!r}") from exc


def _read_bytes(value: dict[str, Any], name: str) -> bytes:
    if name in value:
        return str(value[name]).encode("utf-8")
    return base64.b64decode(value[name + "_base64"], validate=True)
