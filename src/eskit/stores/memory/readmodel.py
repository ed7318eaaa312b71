"""Read models in memory, kept the way Cassandra keeps them: per-stream checkpoints, writes idempotent in position.

Every cell remembers the stream position that wrote it, and a write with a
lower position than the cell's loses; a row's deletion (by a process manager)
is a tombstone newer than any position. So applying an event twice has one
effect, and an older event applied late cannot undo a newer one: the same
argument as :mod:`eskit.stores.cassandra.readmodel`, without a cluster. Used by
``memory://`` deployments and by unit tests of read models.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from eskit.events import StoredEvent
from eskit.exceptions import DamagedEvent
from eskit.projection import MAX_SKIPPED_STREAMS, SkippedStream, StreamTarget, TooManySkipped, cannot_apply
from eskit.readmodel.sink import Sink
from eskit.readmodel.store import Handler, Progress, ReadModelStore, Version, table_prefix
from eskit.readmodel.tables import Row, Table, TableSet, Writer

__all__ = ["InMemoryReadModels"]

#: a process manager's writes and deletes are stamped above every position (positions are far below), in order
_MANAGER = 2**62


@dataclass
class _Row:
    marker: int = -1  # the position that made the row (a put), -1 for none
    cells: dict[str, tuple[int, Any]] = field(default_factory=dict)
    deleted: int = -1  # the row's tombstone: writes at or below it are gone

    def live(self) -> bool:
        return self.marker > self.deleted or any(ts > self.deleted for ts, _ in self.cells.values())

    def write(self, at: int, values: Mapping[str, Any]) -> None:
        if at > self.deleted:
            self.marker = max(self.marker, at)
        for column, value in values.items():
            old = self.cells.get(column)
            if old is None or at >= old[0]:
                self.cells[column] = (at, value)

    def read(self, table: Table, key: tuple[Any, ...]) -> Row:
        row: Row = dict(zip(table.key, key, strict=True))
        for column in table.values:
            cell = self.cells.get(column)
            row[column] = cell[1] if cell is not None and cell[0] > self.deleted else None
        return row


class _Tables(TableSet):
    """One version's tables: per table, key -> row (see the module docstring)."""

    def __init__(self, models: InMemoryReadModels, prefix: str, tables: Sequence[Table]) -> None:
        self.models, self.prefix = models, prefix
        self.tables = {t.name: t for t in tables}

    def _data(self, table: str) -> dict[tuple[Any, ...], _Row]:
        if table not in self.tables:
            raise ValueError(f"no table {table!r}")
        return self.models._data.setdefault(self.prefix + table, {})

    def create(self) -> None:
        with self.models._lock:
            self.models._created.add(self.prefix)

    def drop(self) -> None:
        with self.models._lock:
            self.models._created.discard(self.prefix)
            for name in [n for n in self.models._data if n.startswith(self.prefix)]:
                del self.models._data[name]
            self.models._checkpoints.pop(self.prefix, None)
            self.models._skipped.pop(self.prefix, None)

    def exists(self) -> bool:
        with self.models._lock:
            return self.prefix in self.models._created

    def write(self, table: str, key: Sequence[Any], values: Mapping[str, Any], at: int) -> None:
        self.tables[table].check(key, values)
        with self.models._lock:
            self._data(table).setdefault(tuple(key), _Row()).write(at, values)

    def put(self, table: str, key: Sequence[Any], values: Mapping[str, Any] | None = None) -> None:
        self.write(table, key, values or {}, self.models.stamp())

    def delete(self, table: str, key: Sequence[Any], at: int | None = None) -> None:
        with self.models._lock:
            row = self._data(table).setdefault(tuple(key), _Row())
            row.deleted = max(row.deleted, self.models.stamp() if at is None else at)

    def _rows(self, table: str) -> list[tuple[tuple[Any, ...], Row]]:
        spec = self.tables[table]
        with self.models._lock:
            found = [(k, r.read(spec, k)) for k, r in self._data(table).items() if r.live()]
        return sorted(found, key=lambda item: item[0])

    def get(self, table: str, key: Sequence[Any]) -> Row | None:
        spec = self.tables[table]
        with self.models._lock:
            row = self._data(table).get(tuple(key))
            return row.read(spec, tuple(key)) if row is not None and row.live() else None

    def select(
        self,
        table: str,
        partition: Sequence[Any],
        *,
        after: Sequence[Any] | None = None,
        low: Any = None,
        high: Any = None,
        limit: int | None = None,
    ) -> list[Row]:
        width = len(self.tables[table].partition)
        found = []
        for key, row in self._rows(table):
            if key[:width] != tuple(partition):
                continue
            clustering = key[width:]
            if after is not None and clustering <= tuple(after):
                continue
            if (low is not None and clustering[0] < low) or (high is not None and clustering[0] > high):
                continue
            found.append(row)
            if limit is not None and len(found) >= limit:
                break
        return found

    def scan(self, table: str, *, after: Sequence[Any] | None = None, limit: int = 1000) -> list[Row]:
        rows = [row for key, row in self._rows(table) if after is None or key > tuple(after)]
        return rows[:limit]


class _StreamWriter(Writer):
    """Writes of one event, at its position."""

    def __init__(self, tables: _Tables) -> None:
        self.tables = tables
        self.position = 0

    def put(self, table: str, key: Sequence[Any], values: Mapping[str, Any] | None = None) -> None:
        self.tables.write(table, key, values or {}, self.position)

    def delete(self, table: str, key: Sequence[Any]) -> None:
        self.tables.delete(table, key, self.position)

    def get(self, table: str, key: Sequence[Any]) -> Row | None:
        return self.tables.get(table, key)

    def select(self, table: str, partition: Sequence[Any], **options: Any) -> list[Row]:
        return self.tables.select(table, partition, **options)

    def scan(self, table: str, *, after: Sequence[Any] | None = None, limit: int = 1000) -> list[Row]:
        return self.tables.scan(table, after=after, limit=limit)


class _StreamTarget(StreamTarget):
    """Applies a stream's events to one version's tables, then moves the stream's checkpoint (never back)."""

    def __init__(self, name: str, version: int, tables: _Tables, handle: Handler) -> None:
        self.name, self.version, self.tables, self.handle = name, version, tables, handle

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    def checkpoints(self, stream_ids: Sequence[str]) -> dict[str, int]:
        models = self.tables.models
        with models._lock:
            held = models._checkpoints.get(self.tables.prefix, {})
            return {s: held.get(s, 0) for s in stream_ids}

    def apply(self, stream_id: str, events: Sequence[StoredEvent]) -> None:
        """Apply the events (a stream skipped keeps being skipped), then move the checkpoint; as Cassandra does."""
        if not events:
            return
        models, prefix = self.tables.models, self.tables.prefix
        with models._lock:
            skipped = models._skipped.setdefault(prefix, {}).get(stream_id)
        if skipped is None:
            writer = _StreamWriter(self.tables)
            for stored in events:
                writer.position = stored.position
                try:
                    self.handle(stream_id, stored, writer)
                except Exception as exc:
                    if not cannot_apply(exc):
                        raise
                    self._skip(stream_id, stored.position, events[-1].position, f"{type(exc).__name__}: {exc}")
                    break
        else:
            with models._lock:
                models._skipped[prefix][stream_id] = replace(skipped, events=skipped.events + len(events))
        self._move(stream_id, events[-1].position)

    def _move(self, stream_id: str, last: int) -> None:
        models = self.tables.models
        with models._lock:
            held = models._checkpoints.setdefault(self.tables.prefix, {})
            held[stream_id] = max(held.get(stream_id, 0), last)

    def _skip(self, stream_id: str, position: int, upto: int, error: str) -> None:
        models = self.tables.models
        with models._lock:
            held = models._skipped.setdefault(self.tables.prefix, {})
            if len(held) >= MAX_SKIPPED_STREAMS:
                raise TooManySkipped(
                    f"{self.key}: more than {MAX_SKIPPED_STREAMS} streams cannot be applied (the last, {stream_id}@"
                    f"{position}: {error}): this looks like a fault of the projection's code, not damage"
                )
            held[stream_id] = SkippedStream(stream_id, position, upto - position + 1, error[:500])

    def skip_unreadable(self, stream_id: str, position: int, reason: str, *, upto: int) -> None:
        self._skip(stream_id, position, upto, f"DamagedEvent: {reason}")
        self._move(stream_id, upto)

    def skipped(self) -> list[SkippedStream]:
        models = self.tables.models
        with models._lock:
            return list(models._skipped.get(self.tables.prefix, {}).values())


class _SinkTarget(_StreamTarget):
    """A relay's per-stream checkpoints: a stream's events are published, acknowledged, then its checkpoint moves."""

    def __init__(self, name: str, version: int, tables: _Tables, sink: Sink) -> None:
        super().__init__(name, version, tables, _no_rows)
        self.sink = sink

    def apply(self, stream_id: str, events: Sequence[StoredEvent]) -> None:
        if not events:
            return
        self.sink.publish(events)
        self._move(stream_id, events[-1].position)

    def skip_unreadable(self, stream_id: str, position: int, reason: str, *, upto: int) -> None:
        raise DamagedEvent(stream_id, position, reason)  # a relay never skips: the stream waits

    def skipped(self) -> list[SkippedStream]:
        return []


def _no_rows(stream_id: str, event: object, writer: object) -> None:
    raise AssertionError("a sink target writes no rows")


class InMemoryReadModels(ReadModelStore):
    """Read models, their registry and the runner lease, in this process (see the module docstring)."""

    follows: Literal["sequence", "streams"] = "streams"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._data: dict[str, dict[tuple[Any, ...], _Row]] = {}
        self._created: set[str] = set()
        self._checkpoints: dict[str, dict[str, int]] = {}
        self._skipped: dict[str, dict[str, SkippedStream]] = {}
        self._versions: dict[tuple[str, int], Version] = {}
        self._leases: dict[str, tuple[str, int, float]] = {}
        self._stamps = _MANAGER

    def stamp(self) -> int:
        """The stamp of a process manager's write: above every position, and above the one before."""
        with self._lock:
            self._stamps += 1
            return self._stamps

    def exists(self) -> bool:
        with self._lock:
            return bool(self._versions)

    def tables(self, name: str, version: int, tables: Sequence[Table]) -> TableSet:
        return _Tables(self, table_prefix(name, version), tables)

    def target(self, name: str, version: int, tables: TableSet, handle: Handler) -> StreamTarget:
        assert isinstance(tables, _Tables)
        return _StreamTarget(name, version, tables, handle)

    def sink_target(self, name: str, version: int, tables: TableSet, sink: Sink) -> StreamTarget:
        assert isinstance(tables, _Tables)
        return _SinkTarget(name, version, tables, sink)

    def versions(self, names: Sequence[str]) -> dict[str, list[Version]]:
        with self._lock:
            found: dict[str, list[Version]] = {name: [] for name in names}
            for (name, _), version in sorted(self._versions.items()):
                if name in found:
                    found[name].append(version)
            return found

    def register(self, name: str, version: int, *, state: str, layout: int) -> None:
        with self._lock:
            old = self._versions.get((name, version))
            if old is None:
                self._versions[(name, version)] = Version(name, version, state, layout)
            else:
                self._versions[(name, version)] = Version(
                    name, version, state, layout, old.cursor, old.applied, old.updated_at, old.error
                )

    def set_cursor(self, name: str, version: int, cursor: str | None) -> None:
        with self._lock:
            old = self._versions.get((name, version))
            if old is not None:
                self._versions[(name, version)] = Version(
                    name, version, old.state, old.layout, cursor, old.applied, old.updated_at, old.error
                )

    def report(self, progress: Sequence[Progress]) -> None:
        with self._lock:
            for p in progress:
                old = self._versions.get((p.name, p.version))
                if old is not None:
                    self._versions[(p.name, p.version)] = Version(
                        p.name,
                        p.version,
                        old.state,
                        old.layout,
                        old.cursor,
                        old.applied + p.applied,
                        p.updated_at,
                        p.error,
                    )

    def forget(self, name: str, version: int) -> None:
        with self._lock:
            self._versions.pop((name, version), None)

    def acquire_lease(self, name: str, holder: str, *, ttl: float) -> int | None:
        now = time.time()
        with self._lock:
            held = self._leases.get(name)
            if held is not None and held[0] != holder and held[2] > now:
                return None
            token = held[1] if held is not None and held[0] == holder else (held[1] + 1 if held else 1)
            self._leases[name] = (holder, token, now + ttl)
            return token

    def release_lease(self, name: str, holder: str) -> None:
        with self._lock:
            held = self._leases.get(name)
            if held is not None and held[0] == holder:
                self._leases[name] = (holder, held[1], 0.0)
