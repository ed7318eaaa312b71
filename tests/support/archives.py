"""Crafting archives by hand: real exports changed line by line, with the digest and counts made anew.

The trailer's digest has no key, so anyone can recompute it: these archives pass the digest check
and must be refused by what the import checks besides it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

__all__ = ["EventLine", "changed", "read_lines", "write_archive"]

#: an event line as a dict (``stream``, ``position``, ``recorded_at`` ...), or a key line (``key`` ...)
EventLine = dict[str, Any]


def read_lines(path: str | Path) -> tuple[dict[str, Any], list[EventLine]]:
    """The header and event lines of an archive (the trailer left out)."""
    with gzip.open(path, "rb") as f:
        values = [orjson.loads(line) for line in f.read().splitlines()]
    return values[0], [v for v in values[1:] if v.get("end") is not True]


def write_archive(
    path: str | Path,
    header: dict[str, Any],
    events: Iterable[EventLine | bytes],
    *,
    compresslevel: int = 6,
) -> None:
    """Write ``header``, ``events`` (dicts, or raw line bytes without their newline) and a trailer whose
    counts and sha256 match what was written, so the file passes the digest check whatever it holds."""
    digest = hashlib.sha256()
    streams = count = keys = 0
    with gzip.open(path, "wb", compresslevel=compresslevel) as out:

        def line(data: bytes) -> None:
            digest.update(data)
            out.write(data)

        line(orjson.dumps(header) + b"\n")
        for event in events:
            if isinstance(event, bytes):
                line(event + b"\n")
                count += 1
                continue
            line(json.dumps(event, separators=(",", ":")).encode() + b"\n")  # json: integers past 64 bits too
            if "key" in event and "stream" not in event:
                keys += 1
                continue
            count += 1
            streams += event.get("position") == 1
        trailer = {"end": True, "streams": streams, "events": count, "keys": keys, "sha256": digest.hexdigest()}
        out.write(orjson.dumps(trailer) + b"\n")


def changed(events: list[EventLine], index: int, change: Callable[[EventLine], EventLine]) -> list[EventLine]:
    """``events`` with the one at ``index`` replaced by ``change(copy of it)``."""
    return [*events[:index], change(dict(events[index])), *events[index + 1 :]]
