"""Spans around eskit's own work, for whichever tracer the application installs; nothing when it installs none.

eskit imports no tracing library. An application that traces installs a :class:`Tracer` once
(:func:`install`); eskit's projectors and followers, and the application's own code, ask
:func:`tracer` for it and open a span around a unit of work only when there is one. Without a
tracer the cost is one global read per unit of work, so tracing that is off costs nothing
measurable.

Attributes must never hold the data of events or commands (payloads, device ids, keys): only
names, counts, positions and the pseudonymous ids the caller chooses to name.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

__all__ = ["Attribute", "Span", "Tracer", "install", "tracer"]

#: what a span attribute may hold
Attribute = str | int | float | bool


class Span(Protocol):
    """The open span a :meth:`Tracer.span` block receives."""

    def set(self, key: str, value: Attribute) -> None:
        """Set (or replace) one attribute."""

    def event(self, name: str, attributes: dict[str, Attribute]) -> None:
        """Record something that happened at this moment within the span (a conflict, a retry)."""

    def fail(self, error: BaseException) -> None:
        """Mark the span failed by ``error`` (a fault, not a refusal the caller expects)."""


class Tracer(Protocol):
    """Opens spans that nest under the span current in the calling thread (or task)."""

    def span(
        self, name: str, attributes: dict[str, Attribute], *, kind: str = "internal"
    ) -> AbstractContextManager[Span]:
        """A span named ``name`` for the block, current inside it; ``kind`` is ``internal``,
        ``client`` (a call to another system: a store, a broker) or ``producer``.

        An exception leaving the block does not mark the span failed: call :meth:`Span.fail`.
        """


_installed: Tracer | None = None


def install(chosen: Tracer | None) -> None:
    """Make ``chosen`` the tracer of this process (None: no spans)."""
    global _installed
    _installed = chosen


def tracer() -> Tracer | None:
    """The tracer installed in this process, or None when nothing traces."""
    return _installed
