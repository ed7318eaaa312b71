"""Argument checks shared by every store adapter, so all refuse the same input alike."""

from __future__ import annotations

from collections.abc import Sequence

from eskit.events import NewEvent
from eskit.exceptions import InterfaceError

__all__ = ["check_append", "check_read"]


def check_append(stream_id: str, events: Sequence[NewEvent], expected_version: int) -> None:
    """Raise :class:`InterfaceError` for an append no store should attempt."""
    if not stream_id:
        raise InterfaceError("stream id must not be empty")
    if not events:
        raise InterfaceError("append needs at least one event")
    if expected_version < 0:
        raise InterfaceError(f"expected version must be >= 0, got {expected_version}")


def check_read(gt: int, lte: int | None, limit: int | None) -> None:
    """Raise :class:`InterfaceError` for read bounds that make no sense."""
    if gt < 0:
        raise InterfaceError(f"gt must be >= 0, got {gt}")
    if lte is not None and lte < 0:
        raise InterfaceError(f"lte must be >= 0, got {lte}")
    if limit is not None and limit < 0:
        raise InterfaceError(f"limit must be >= 0, got {limit}")
