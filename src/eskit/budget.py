"""A command's time budget: :class:`~eskit.CommandRunner` starts it, a store's requests stay within it.

A store that bounds a command (Cassandra's ``command_timeout``) says so in
:attr:`~eskit.ports.EventStore.command_budget`. The runner starts that budget when the command
arrives, before it waits for its aggregate's turn, and retries a conflict only while some of it is
left; the store gives each request what is left of it (with a floor, so that an attempt is never
sent with too little time to finish: that would turn a clean refusal into an unknown outcome). So
a command's answer comes within about its budget, however many conflicts, turns and timeouts it
meets, instead of one timeout per attempt.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["command_budget", "remaining"]

_until: ContextVar[float | None] = ContextVar("eskit_command_until", default=None)


@contextmanager
def command_budget(seconds: float | None) -> Iterator[None]:
    """Run the block under a budget of ``seconds`` (None: none), unless one is running already."""
    if seconds is None or _until.get() is not None:
        yield
        return
    token = _until.set(time.monotonic() + seconds)
    try:
        yield
    finally:
        _until.reset(token)


def remaining() -> float | None:
    """Seconds left of the current command's budget (negative once spent); None outside a budget."""
    until = _until.get()
    return None if until is None else until - time.monotonic()
