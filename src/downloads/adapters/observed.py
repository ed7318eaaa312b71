"""Stores that time every operation into :class:`~downloads.adapters.metrics.Metrics` and, when a tracer is
installed (:mod:`eskit.tracing`), open a span per operation.

A span is named ``<db.system> <operation>`` (``sqlite append``) and carries ``db.system`` and
``db.operation.name`` (the statement kind: append, read, version, snapshot_load ...) and how many
events or snapshots it moved; never a stream's events, a snapshot's state or any other data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from downloads.adapters.metrics import Metrics
from eskit import EskitError, EventStore, NewEvent, Snapshot, SnapshotStore, StoredEvent, Stores
from eskit.tracing import Attribute, tracer

__all__ = ["ObservedEventStore", "ObservedSnapshotStore", "db_system", "observed_stores"]

T = TypeVar("T")


def db_system(url: str) -> str:
    """The ``db.system`` of a store URL: ``sqlite``, ``cassandra`` or ``memory``."""
    return url.split(":", 1)[0].lower() or "unknown"


class _Observer:
    """Times a store call into the histogram of its operation; wraps it in a span when tracing is on."""

    def __init__(self, metrics: Metrics, system: str) -> None:
        self.system = system
        self._histograms: dict[str, Any] = {}  # label children made once: .labels() per call costs more than the timing
        self._metrics = metrics

    def run(self, operation: str, call: Callable[[], T], count: Callable[[T], int] | None = None) -> T:
        histogram = self._histograms.get(operation)
        if histogram is None:
            histogram = self._histograms[operation] = self._metrics.store_latency.labels(operation)
        current = tracer()
        started = time.perf_counter()
        try:
            if current is None:
                return call()
            attributes: dict[str, Attribute] = {"db.system": self.system, "db.operation.name": operation}
            with current.span(f"{self.system} {operation}", attributes, kind="client") as span:
                try:
                    result = call()
                except EskitError as exc:
                    span.set("error.type", type(exc).__name__)
                    span.fail(exc)
                    raise
                if count is not None:
                    span.set("eskit.count", count(result))
                return result
        finally:
            histogram.observe(time.perf_counter() - started)


class ObservedEventStore(EventStore):
    """An event store that times (and traces) every call and delegates it; appends also feed the older
    ``downloads_store_append_seconds``."""

    def __init__(self, inner: EventStore, metrics: Metrics, *, system: str) -> None:
        self.inner = inner
        self.metrics = metrics
        self.command_budget = inner.command_budget
        self._observe = _Observer(metrics, system)

    def append(self, stream_id: str, events: Sequence[NewEvent], *, expected_version: int) -> int:
        started = time.perf_counter()
        try:
            return self._observe.run(
                "append", lambda: self.inner.append(stream_id, events, expected_version=expected_version)
            )
        finally:
            self.metrics.append_latency.observe(time.perf_counter() - started)

    def read(
        self, stream_id: str, *, gt: int = 0, lte: int | None = None, limit: int | None = None, desc: bool = False
    ) -> list[StoredEvent]:
        return self._observe.run(
            "read", lambda: self.inner.read(stream_id, gt=gt, lte=lte, limit=limit, desc=desc), len
        )

    def append_many(self, appends: Sequence[tuple[str, Sequence[NewEvent], int]]) -> list[int | EskitError]:
        return self._observe.run("append_many", lambda: self.inner.append_many(appends), len)

    def stream_ids(self, *, after: str | None = None, limit: int = 1000) -> list[str]:
        return self._observe.run("stream_ids", lambda: self.inner.stream_ids(after=after, limit=limit), len)

    def version(self, stream_id: str) -> int:
        return self._observe.run("version", lambda: self.inner.version(stream_id))

    def recorded_times(self, stream_id: str, positions: Sequence[int]) -> dict[int, datetime]:
        return self._observe.run("recorded_times", lambda: self.inner.recorded_times(stream_id, positions), len)

    def version_at(self, stream_id: str, when: datetime) -> int:
        return self._observe.run("version_at", lambda: self.inner.version_at(stream_id, when))

    def ping(self) -> None:
        self._observe.run("ping", self.inner.ping)

    def read_latest(self, stream_id: str) -> bool:
        return self.inner.read_latest(stream_id)  # no request of its own: the next read is timed

    def announce(self, stream_id: str, version: int) -> None:
        self._observe.run("announce", lambda: self.inner.announce(stream_id, version))

    def close(self) -> None:
        self.inner.close()


class ObservedSnapshotStore(SnapshotStore):
    """A snapshot store that times (and traces) every call and delegates it."""

    def __init__(self, inner: SnapshotStore, metrics: Metrics, *, system: str) -> None:
        self.inner = inner
        self.deferred_writes = inner.deferred_writes  # written after the answer where the inner store is
        self._observe = _Observer(metrics, system)

    def save(self, snapshot: Snapshot) -> None:
        self._observe.run("snapshot_save", lambda: self.inner.save(snapshot))

    def load(self, stream_id: str, *, lte: int | None = None) -> Snapshot | None:
        return self._observe.run(
            "snapshot_load", lambda: self.inner.load(stream_id, lte=lte), lambda found: int(found is not None)
        )

    def versions(self, stream_id: str) -> list[int]:
        return self._observe.run("snapshot_versions", lambda: self.inner.versions(stream_id), len)

    def delete(self, stream_id: str, versions: Sequence[int]) -> None:
        self._observe.run("snapshot_delete", lambda: self.inner.delete(stream_id, versions))

    def close(self) -> None:
        self.inner.close()


def observed_stores(metrics: Metrics) -> Callable[[Stores], tuple[EventStore, SnapshotStore]]:
    """What :func:`~downloads.bootstrap.bootstrap` wraps a deployment's stores with: both timed and traced,
    and on SQLite every commit of the event store timed too (its fsync: ``downloads_sqlite_commit_seconds``)."""

    def wrap(stores: Stores) -> tuple[EventStore, SnapshotStore]:
        system = db_system(stores.url)
        connection = getattr(stores.events, "db", None)
        if system == "sqlite" and hasattr(connection, "commit_observer"):
            connection.commit_observer = metrics.sqlite_commit.observe  # type: ignore[union-attr]
        return (
            ObservedEventStore(stores.events, metrics, system=system),
            ObservedSnapshotStore(stores.snapshots, metrics, system=system),
        )

    return wrap
