"""What the application needs from outside: a clock and an observer of outcomes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

__all__ = ["Clock", "ServiceObserver", "system_clock"]

#: the time now, aware
Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


class ServiceObserver(Protocol):
    """What the service reports, for metrics."""

    def conflict(self, command: str, attempt: int) -> None: ...

    def outcome(self, command: str, code: str) -> None: ...
