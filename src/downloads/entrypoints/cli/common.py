"""What every command group of the CLI shares: the usage error, settings from options, times, printing, progress."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from downloads.errors import DownloadsError
from downloads.settings import Settings

__all__ = [
    "UsageError",
    "parse_time",
    "printable",
    "progress_bar",
    "settings_from",
    "shown",
    "store_option",
    "traced",
]


class UsageError(DownloadsError):
    """A mistake in how the command was called: printed as ``UsageError: message``."""


#: set by ``serve`` for the read side's process it starts: the pid of the ``serve`` it belongs to
PARENT_VARIABLE = "DOWNLOADS_SERVE_PID"

#: the exit status of serve's read side process stopped by a signal (128 + SIGTERM, as a shell shows it)
STOPPED_ON_SIGNAL = 143


def printable(text: object) -> str:
    """``text`` with every character that is not printable (controls, format characters such
    as bidirectional overrides, line separators) written as a Python escape."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in str(text))


def settings_from(args: argparse.Namespace, **extra: Any) -> Settings:
    """Settings from the environment, overridden by the options given on the command line."""
    given = {k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None}
    given.update(extra)
    return Settings(**given)


def parse_time(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
    except ValueError as exc:
        raise UsageError(f"not an ISO 8601 time: {text!r}") from exc
    except OverflowError as exc:
        raise UsageError(f"{text!r} has no UTC form (it is out of range)") from exc


def store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--store", help="store URL (env DOWNLOADS_STORE; default sqlite:///downloads.db)")


def shown(url: str) -> str:
    """A store URL as shown to people (without its options, which may hold credentials)."""
    return url.split("?", 1)[0]


@contextlib.contextmanager
def progress_bar(label: str, *, total: int | None = None, unit: str = "events") -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr: redrawn every second on a terminal, every ten seconds in a log."""
    from tqdm import tqdm

    terminal = sys.stderr.isatty()
    with tqdm(
        total=total,
        desc=label,
        unit=f" {unit}",
        unit_scale=True,
        file=sys.stderr,
        mininterval=1.0 if terminal else 10.0,
        dynamic_ncols=terminal,
        ascii=not terminal,
        leave=True,
    ) as progress:
        yield progress.update


@contextlib.contextmanager
def traced() -> Iterator[None]:
    """For a long-running command (``project``, ``relay``): log lines in ``DOWNLOADS_LOG_FORMAT`` (text or
    JSON, with trace and span ids), and this process's spans exported over OTLP while the block runs when
    the ``OTEL_*`` variables ask for it (see :mod:`downloads.adapters.tracing`); tracing settings it cannot
    honour are a :class:`UsageError`."""
    import logging.config
    import os

    from downloads.adapters.logs import FORMATS, logging_config
    from downloads.adapters.tracing import TracingError, start_tracing, stop_tracing

    fmt = os.environ.get("DOWNLOADS_LOG_FORMAT", "text").strip().lower()
    if fmt not in FORMATS:
        raise UsageError(f"DOWNLOADS_LOG_FORMAT={fmt!r}: use one of {', '.join(FORMATS)}")
    logging.config.dictConfig(logging_config("json" if fmt == "json" else "text", "info"))

    try:
        start_tracing()
    except TracingError as exc:
        raise UsageError(str(exc)) from exc
    try:
        yield
    finally:
        stop_tracing()
