"""The service on the in-memory store with its read side, followed in the foreground (no thread)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from downloads.bootstrap import open_read_side
from downloads.readmodels.readside import ReadSide
from tests.downloads.factories import Downloads, FakeClock, start_service

__all__ = ["Wired", "wired"]


@dataclass
class Wired:
    """A service, its read side, and a way to bring the read side up to date."""

    app: Downloads
    read_side: ReadSide

    @property
    def clock(self) -> FakeClock:
        return self.app.clock

    def caught_up(self, *, rounds: int = 50) -> None:
        """Step the runner until the feed holds nothing unapplied and no revocation waits."""
        feed = self.read_side.runner.stores.stream_feed
        for _ in range(rounds):
            work = self.read_side.step()
            settled = feed is None or feed.backlog()[0] == 0
            if work == 0 and settled and self.read_side.pending_revocations() == 0:
                return
        raise AssertionError("the read side did not catch up")


@contextmanager
def wired(store: str = "memory://") -> Iterator[Wired]:
    app = start_service(store=store)
    read_side = open_read_side(app.app)
    assert isinstance(read_side, ReadSide)
    try:
        yield Wired(app, read_side)
    finally:
        read_side.close()
        app.close()
