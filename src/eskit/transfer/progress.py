"""How long-running data tools report progress: a port the command line renders."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol

__all__ = ["Advance", "Progress", "quiet"]

#: called with the number of items just done
Advance = Callable[[int], None]


class Progress(Protocol):
    """Opens a task: ``with progress("exporting", total=n, unit="events") as advance: advance(k)``.

    ``total`` is None when it is not known in advance (then no estimate can be given).
    """

    def __call__(
        self, label: str, *, total: int | None = None, unit: str = "events"
    ) -> contextlib.AbstractContextManager[Advance]: ...


@contextlib.contextmanager
def quiet(label: str, *, total: int | None = None, unit: str = "events") -> Iterator[Advance]:
    """Progress that shows nothing (library use, tests)."""
    yield lambda _n: None
