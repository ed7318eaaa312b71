"""The ``downloads`` command: its groups of subcommands, and the one place its errors meet the outside.

Groups: :mod:`~downloads.entrypoints.cli.serve` (``serve``, ``token``),
:mod:`~downloads.entrypoints.cli.store` (``store init|export|import|copy|verify``),
:mod:`~downloads.entrypoints.cli.support` (``history``, ``what-if``),
:mod:`~downloads.entrypoints.cli.readside` (``project``, ``projections``),
:mod:`~downloads.entrypoints.cli.relay` (``relay``) and
:mod:`~downloads.entrypoints.cli.privacy` (``erase``, ``keys new|rotate``).

Every option also reads its ``DOWNLOADS_*`` environment variable (see
:mod:`downloads.settings`). The project's own errors and bad input print
``ErrorName: message`` and exit 1 (2 for a bad policy); anything else is a bug and shows as one.
Whatever comes from the store is printed with non-printable characters escaped,
so stored text cannot drive the operator's terminal.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from downloads.entrypoints.cli import privacy, readside, relay, serve, store, support
from downloads.entrypoints.cli.common import printable

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="downloads", description="Download-license accounting service.")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (serve, store, readside, relay, support, privacy):
        group.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    The service's own errors (:class:`~downloads.errors.DownloadsError`), eskit's and bad settings
    print ``ErrorName: message`` and exit non-zero (2 for a bad policy or a production deployment without
    its master key, 1 otherwise); anything else
    is a bug and shows as one.
    """
    from pydantic import ValidationError

    from downloads.adapters.master_keys import NoMasterKey
    from downloads.adapters.policy_file import PolicyError
    from downloads.domain import DomainError
    from downloads.errors import DownloadsError
    from eskit import EskitError

    args = build_parser().parse_args(argv)
    try:
        status: int = args.run(args)
        return status
    except (DownloadsError, EskitError, ValidationError) as exc:
        if isinstance(exc, DomainError):
            message = f"{exc.code}: {exc.message}"
        elif isinstance(exc, ValidationError):
            message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        else:
            message = str(exc)
        _fail(printable(f"{type(exc).__name__}: {message}"))
        return 2 if isinstance(exc, PolicyError | NoMasterKey) else 1
    except KeyboardInterrupt:
        return 130


def _fail(text: str) -> None:
    """The error line of a command that failed; a JSON log object in the read side's process that serve
    started with JSON logs (its stderr is serve's, every line of which is then one object)."""
    import os

    from downloads.entrypoints.cli.common import PARENT_VARIABLE

    if os.environ.get(PARENT_VARIABLE) and os.environ.get("DOWNLOADS_LOG_FORMAT", "").strip().lower() == "json":
        import logging

        from downloads.adapters.logs import JsonFormatter

        record = logging.LogRecord("downloads.project", logging.ERROR, __file__, 0, text, None, None)
        text = JsonFormatter().format(record)
    print(text, file=sys.stderr)
