"""Log lines: plain text (the default) or one JSON object per line (``DOWNLOADS_LOG_FORMAT=json``).

Every line carries the id of the request it was written for (:data:`REQUEST_ID`, set by the HTTP
middleware for the request's whole handling, commands included) and, while tracing, the trace and
span ids of the span current where it was written, so a line leads to its trace and back.

A JSON line holds ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``, ``message``,
then ``request_id``, ``trace_id`` and ``span_id`` when known, and ``exception`` (the traceback as
text) when the line reports one. Messages name accounts by their pseudonymous ids only; they never
hold a command's arguments.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from downloads.adapters.tracing import current_ids

__all__ = ["FORMATS", "REQUEST_ID", "JsonFormatter", "TextFormatter", "logging_config"]

#: the id of the request being handled in this thread or task (None outside a request)
REQUEST_ID: ContextVar[str | None] = ContextVar("downloads_request_id", default=None)

#: the values of ``DOWNLOADS_LOG_FORMAT``
FORMATS = ("text", "json")


def _ids() -> dict[str, str]:
    found: dict[str, str] = {}
    request_id = REQUEST_ID.get()
    if request_id is not None:
        found["request_id"] = request_id
    ids = current_ids()
    if ids is not None:
        found["trace_id"], found["span_id"] = ids
    return found


class JsonFormatter(logging.Formatter):
    """One JSON object per line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_ids(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """``time level logger: message [request_id=... trace_id=... span_id=...]``, then the traceback."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = _ids()
        if not ids:
            return text
        first, newline, rest = text.partition("\n")
        return first + " [" + " ".join(f"{k}={v}" for k, v in ids.items()) + "]" + newline + rest


def logging_config(fmt: Literal["text", "json"], level: str) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for a server process: the root logger and the HTTP server's own
    (granian's, uvicorn's) all write ``fmt`` lines to stderr at ``level``."""
    formatter = "downloads.adapters.logs.JsonFormatter" if fmt == "json" else "downloads.adapters.logs.TextFormatter"
    handler = {"class": "logging.StreamHandler", "formatter": "downloads", "stream": "ext://sys.stderr"}
    named = {"handlers": ["downloads"], "level": level.upper(), "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"downloads": {"()": formatter}},
        "handlers": {"downloads": handler},
        "root": {"handlers": ["downloads"], "level": level.upper()},
        "loggers": {
            name: dict(named) for name in ("_granian", "granian.access", "uvicorn", "uvicorn.error", "uvicorn.access")
        },
    }
