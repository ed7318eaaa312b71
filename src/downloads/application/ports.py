"""What the application needs from outside: a clock, an observer of outcomes, and a log of denials."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from downloads.errors import DownloadsError

__all__ = ["Clock", "Denial", "DenialLog", "InvalidCursor", "Sealer", "ServiceObserver", "system_clock"]

#: the time now, aware
Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


class ServiceObserver(Protocol):
    """What the service reports, for metrics."""

    def conflict(self, command: str, attempt: int) -> None:
        """Another writer got there first: attempt ``attempt`` of ``command`` is run again."""

    def outcome(self, command: str, code: str, seconds: float) -> None:
        """``command`` ended with ``code`` (``OK``, ``REPLAYED``, a rule's code, or ``FAILED``) after ``seconds``."""


@dataclass(frozen=True)
class Denial:
    """A command a rule refused: when it was decided, what it asked, and why it was refused.

    ``args`` and ``details`` are JSON-ready (times as ISO strings with a ``Z``).
    """

    at: datetime
    command: str
    args: dict[str, Any]
    code: str
    message: str
    details: dict[str, Any]
    request_id: str | None
    #: the account's version the refusal was decided on (orders it among the accepted commands)
    version: int | None = None


class InvalidCursor(DownloadsError, ValueError):
    """A paging cursor that is not of the form the log gives (the caller made it up or mangled it)."""


class DenialLog(Protocol):
    """Where denials are kept, apart from the account's events, so recording one never conflicts with a
    command the account accepts; each account keeps its newest ``kept`` denials and no more.

    A denial is personal data (what the member asked, under which request id): a log seals each
    record with the member's key where it is given a :class:`Sealer`, and forgets them on erasure."""

    kept: int

    def record(self, account_id: str, denial: Denial) -> None:
        """Keep ``denial`` (its free parts capped in size), dropping the account's oldest beyond the bound."""

    def page(self, account_id: str, *, after: str | None, limit: int) -> tuple[list[Denial], str | None]:
        """The account's denials newest first, after cursor ``after``; and the cursor of the next page.

        A page holds at most ``limit`` denials and stops early, with a cursor, once it holds a byte
        budget's worth (always at least one denial). Raises :class:`InvalidCursor` for an ``after``
        that is not of the form this log gives; one of that form that it never gave pages on from there.
        """

    def forget(self, account_id: str) -> None:
        """Remove every denial of the account (its member was erased); idempotent."""

    def close(self) -> None:
        """Release what the log holds open."""


class Sealer(Protocol):
    """Seals records about an account with its member's key, and opens them (a denial log uses one)."""

    def seal(self, account_id: str, body: bytes) -> bytes:
        """``body`` sealed under the account's key (made if it has none yet)."""

    def open(self, account_id: str, body: bytes) -> bytes | None:
        """What :meth:`seal` sealed (a body stored in clear as it is); None once the key was erased."""

    def forget(self, account_id: str) -> None:
        """Drop what is kept in memory of the account's key (it was erased)."""
