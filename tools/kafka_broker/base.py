"""The broker tool's error type."""

from __future__ import annotations

__all__ = ["BrokerError"]


class BrokerError(RuntimeError):
    """A broker operation failed; the message includes the broker log's tail where there is one."""
