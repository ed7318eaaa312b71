"""The eventsourcing library's side of ``bench_vs_eventsourcing``.

A module of its own (imported only when that benchmark runs) because the
library registers aggregate classes by topic (``module:qualname``), so they
must be defined once, at module level, and a missing library must mean a skip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate


class ESCounter(Aggregate):
    """The counter in the library's explicit style: ``__init__`` makes its Created event."""

    def __init__(self, note: str) -> None:
        self.total = 0

    class Incremented(Aggregate.Event):
        amount: int
        note: str

        def apply(self, aggregate: ESCounter) -> None:
            aggregate.total += self.amount

    def increment(self, amount: int, note: str) -> None:
        self.trigger_event(self.Incremented, amount=amount, note=note)


class CounterApp(Application[UUID]):
    """An application with no snapshots and no aggregate cache (the defaults)."""


class EventsourcingSide:
    """eventsourcing: ``Application`` on ``eventsourcing.sqlite``; ``save`` per command, ``repository.get``."""

    def __init__(self, path: Path, note: str) -> None:
        self.app = CounterApp(env={"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(path)})
        self.note = note
        self.aggregates: list[ESCounter] = []

    def create(self) -> None:
        counter = ESCounter(note=self.note)
        self.app.save(counter)
        self.aggregates.append(counter)

    def command(self, i: int) -> None:
        counter = self.aggregates[i]
        counter.increment(1, self.note)
        self.app.save(counter)

    def load(self, i: int) -> int:
        return int(self.app.repository.get(self.aggregates[i].id).total)

    def pragmas(self) -> tuple[str, int]:
        return library_pragmas(self.app)

    def close(self) -> None:
        self.app.close()


def library_pragmas(app: Any) -> tuple[str, int]:
    """The journal mode and synchronous level of the connection an SQLite-backed library application uses."""
    recorder: Any = app.recorder  # an SQLiteApplicationRecorder, which has a datastore
    with recorder.datastore.transaction(commit=False) as c:
        c.execute("PRAGMA journal_mode")
        mode = c.fetchone()[0]
        c.execute("PRAGMA synchronous")
        return str(mode), int(c.fetchone()[0])


class ApplicationSide:
    """The same ``CounterApp`` on whatever persistence module ``env`` names; save per command, get to load."""

    def __init__(self, env: dict[str, str], note: str) -> None:
        self.app = CounterApp(env=env)
        self.note = note
        self.aggregates: list[ESCounter] = []

    def create(self) -> None:
        counter = ESCounter(note=self.note)
        self.app.save(counter)
        self.aggregates.append(counter)

    def command(self, i: int) -> None:
        counter = self.aggregates[i]
        counter.increment(1, self.note)
        self.app.save(counter)

    def load(self, i: int) -> int:
        return int(self.app.repository.get(self.aggregates[i].id).total)

    def close(self) -> None:
        self.app.close()
