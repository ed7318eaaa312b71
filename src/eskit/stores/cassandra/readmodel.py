"""Read models in the cluster: per-stream checkpoints, effects idempotent in position, versions and a lease.

Cassandra has no transaction across partitions, and a read model's rows live
in many (by title, by key, by month). So instead of committing a batch and its
checkpoint together, every effect of an event is made *idempotent in
position*: each cell a projection writes belongs to rows written by one stream
only, and is written ``USING TIMESTAMP`` the event's position in that stream.
Cassandra keeps, per cell, the write with the highest timestamp, so:

* applying an event again (a runner killed after its effects and before its
  checkpoint, or two runners at once) writes the same cells at the same
  timestamps: no further effect;
* applying an older event after a newer one (a runner paused and woken up)
  loses to the newer cells: it cannot undo anything.

Rows that many streams touch hold no values, only their key, so writing them
twice is the same. The checkpoint of stream ``s`` is a cell of its own, also
written at its position, so it only moves forward; it is written after every
effect of the events it covers stands. A process manager's own writes and
deletes carry the current time (microseconds since the epoch), far above any
position, so they win over every effect, however late it is applied again.

A stream a version cannot apply (an event that does not decode, that the
projection cannot take, or that cannot be read back) is skipped, as on SQLite:
``eskit_projection_skips`` (one partition, at most
:data:`~eskit.projection.MAX_SKIPPED_STREAMS` rows per version) records from
which position, up to where and why, and the stream's checkpoint moves on. The
first position is written at a timestamp that falls as the position grows, so
the earliest skip wins whoever writes last; the position skipped up to, at its
own position, so the latest wins. Every runner reads the partition at the start
of each round, so a stream skipped by one runner is skipped by the next. An
event that fails part-way may leave the effects it wrote before failing (each
idempotent); a rebuild writes them again whole.

Each projection version has its own tables (``rm_<name>_v<version>_<table>``);
the registry ``eskit_projections`` says which versions exist and which answers
reads, and ``eskit_leases`` holds the runner lease (conditional writes only: no
plain write ever touches its partition). Tables are created only by the process
that registers a version, never by readers, so two processes do not race a
schema change.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from eskit.events import StoredEvent
from eskit.exceptions import DamagedEvent
from eskit.projection import MAX_SKIPPED_STREAMS, SkippedStream, StreamTarget, TooManySkipped, cannot_apply
from eskit.readmodel.sink import Sink
from eskit.readmodel.store import Handler, Progress, ReadModelStore, Version, table_prefix
from eskit.readmodel.tables import Row, Table, TableSet, Writer
from eskit.stores.cassandra.session import CassandraSession, applied, translated
from eskit.stores.timestamps import from_micros, to_micros

__all__ = ["CassandraReadModels"]

log = logging.getLogger(__name__)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS {ks}.eskit_projections (name text, version int, state text, layout int, cursor text,"
    " updated_at bigint, error text, PRIMARY KEY (name, version))",
    "CREATE TABLE IF NOT EXISTS {ks}.eskit_projection_counts (name text, version int, applied counter,"
    " PRIMARY KEY (name, version))",
    "CREATE TABLE IF NOT EXISTS {ks}.eskit_leases (name text PRIMARY KEY, holder text, fence bigint,"
    " expires_at double)",
    "CREATE TABLE IF NOT EXISTS {ks}.eskit_projection_skips (bucket int, name text, version int, stream_id text,"
    " position bigint, upto bigint, error text, PRIMARY KEY ((bucket), name, version, stream_id))",
)
_REGISTRY = ("eskit_projections", "eskit_projection_counts", "eskit_leases", "eskit_projection_skips")
#: skips' first positions are written at ``FIRST_WINS - position`` (the earliest wins), and deleted above it
FIRST_WINS = 2**62
#: how much of an error's text a skip keeps
_ERROR_CHARS = 500
_TYPES = {"text": "text", "int": "bigint", "bool": "boolean"}


class _Statements:
    """The CQL of one table (``{ks}`` left for the keyspace)."""

    def __init__(self, name: str, table: Table) -> None:
        self.table, self.name = table, "{ks}." + name
        self.cols = ", ".join(table.columns)
        types = ", ".join(f"{c} {_TYPES[table.kind(c)]}" for c in table.columns)
        key = f"({', '.join(table.partition)})" + "".join(f", {c}" for c in table.clustering)
        self.create = f"CREATE TABLE IF NOT EXISTS {self.name} ({types}, PRIMARY KEY ({key}))"
        self.where_key = " AND ".join(f"{k} = ?" for k in table.key)
        self.where_partition = " AND ".join(f"{k} = ?" for k in table.partition)

    def put(self, columns: Sequence[str], *, at_position: bool) -> str:
        names = [*self.table.key, *columns]
        using = " USING TIMESTAMP ?" if at_position else ""
        return f"INSERT INTO {self.name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))}){using}"

    def row(self, found: Any) -> Row:
        return {c: getattr(found, c) for c in self.table.columns}


class _Tables(TableSet):
    """One version's tables in the keyspace."""

    def __init__(self, models: CassandraReadModels, prefix: str, tables: Sequence[Table]) -> None:
        self.models, self.prefix = models, prefix
        self.tables = {t.name: t for t in tables}
        self._cql = {t.name: _Statements(prefix + t.name, t) for t in tables}
        self.checkpoints_table = "{ks}." + prefix + "checkpoints"

    def cql(self, table: str) -> _Statements:
        found = self._cql.get(table)
        if found is None:
            raise ValueError(f"no table {table!r}")
        return found

    def ddl(self) -> list[str]:
        return [
            *(s.create for s in self._cql.values()),
            f"CREATE TABLE IF NOT EXISTS {self.checkpoints_table} (stream_id text PRIMARY KEY, position bigint)",
        ]

    def create(self) -> None:
        self.models.create(self.ddl())

    def drop(self) -> None:
        keyspace = self.models.db.cluster.metadata.keyspaces.get(self.models.ks)
        names = [t for t in (keyspace.tables if keyspace else {}) if t.startswith(self.prefix)]
        self.models.create([f"DROP TABLE IF EXISTS {{ks}}.{table}" for table in names])

    def exists(self) -> bool:
        return self.models.has_table(self.prefix + "checkpoints")

    def put(self, table: str, key: Sequence[Any], values: Mapping[str, Any] | None = None) -> None:
        values = values or {}
        statements = self.cql(table)
        statements.table.check(key, values)
        self.models.run(statements.put(list(values), at_position=False), (*key, *values.values()))

    def delete(self, table: str, key: Sequence[Any]) -> None:
        statements = self.cql(table)
        self.models.run(f"DELETE FROM {statements.name} WHERE {statements.where_key}", tuple(key))

    def _query(self, cql: str, params: Sequence[Any]) -> list[Any]:
        if not self.exists():
            return []
        return list(self.models.run(cql, params))

    def get(self, table: str, key: Sequence[Any]) -> Row | None:
        statements = self.cql(table)
        rows = self._query(f"SELECT {statements.cols} FROM {statements.name} WHERE {statements.where_key}", tuple(key))
        return statements.row(rows[0]) if rows else None

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
        statements = self.cql(table)
        clustering = statements.table.clustering
        cql = f"SELECT {statements.cols} FROM {statements.name} WHERE {statements.where_partition}"
        params: list[Any] = list(partition)
        bounded_here = after is None  # CQL takes no single-column bound beside a tuple one: filter those below
        if after is not None and clustering:
            cql += f" AND ({', '.join(clustering)}) > ({', '.join('?' * len(clustering))})"
            params.extend(after)
        if bounded_here and low is not None:
            cql += f" AND {clustering[0]} >= ?"
            params.append(low)
        if bounded_here and high is not None:
            cql += f" AND {clustering[0]} <= ?"
            params.append(high)
        if limit is not None and bounded_here:
            cql += " LIMIT ?"
            params.append(limit)
        rows = [statements.row(r) for r in self._query(cql, params)]
        if not bounded_here:
            first = clustering[0] if clustering else None
            rows = [
                r
                for r in rows
                if first is None or ((low is None or r[first] >= low) and (high is None or r[first] <= high))
            ]
            rows = rows if limit is None else rows[:limit]
        return rows

    def scan(self, table: str, *, after: Sequence[Any] | None = None, limit: int = 1000) -> list[Row]:
        """Token order of partitions, clustering order within; resumes after a whole key."""
        statements = self.cql(table)
        spec = statements.table
        base = f"SELECT {statements.cols} FROM {statements.name}"
        found: list[Row] = []
        if after is None:
            return [statements.row(r) for r in self._query(f"{base} LIMIT ?", (limit,))]
        key_values = list(after[: len(spec.partition)])
        if spec.clustering:
            rest = f"({', '.join(spec.clustering)}) > ({', '.join('?' * len(spec.clustering))})"
            cql = f"{base} WHERE {statements.where_partition} AND {rest} LIMIT ?"
            found = [statements.row(r) for r in self._query(cql, [*key_values, *after[len(spec.partition) :], limit])]
        if len(found) < limit:
            token = f"token({', '.join(spec.partition)}) > token({', '.join('?' * len(spec.partition))})"
            cql = f"{base} WHERE {token} LIMIT ?"
            found += [statements.row(r) for r in self._query(cql, [*key_values, limit - len(found)])]
        return found


class _EventWriter(Writer):
    """The effects of a stream's events, each written at its event's position, sent at once and awaited together.

    A read first waits for every write made before it, so it sees them.
    """

    def __init__(self, tables: _Tables) -> None:
        self.tables = tables
        self.position = 0
        self._futures: list[tuple[Any, Any]] = []

    def put(self, table: str, key: Sequence[Any], values: Mapping[str, Any] | None = None) -> None:
        values = values or {}
        statements = self.tables.cql(table)
        statements.table.check(key, values)
        self.write(statements.put(list(values), at_position=True), (*key, *values.values(), self.position))

    def write(self, cql: str, params: Sequence[Any]) -> None:
        models = self.tables.models
        statement = models.prepare(cql).bind(params)
        statement.consistency_level = models.db.write_cl
        self._futures.append((models.db.session.execute_async(statement), statement))

    def flush(self) -> None:
        """Wait for every write so far; one that failed is sent again (it is idempotent) with retries."""
        futures, self._futures = self._futures, []
        for future, statement in futures:
            try:
                future.result()
            except Exception:
                self.tables.models.db.query(statement)

    def delete(self, table: str, key: Sequence[Any]) -> None:
        statements = self.tables.cql(table)
        self.write(
            f"DELETE FROM {statements.name} USING TIMESTAMP ? WHERE {statements.where_key}", (self.position, *key)
        )

    def barrier(self) -> None:
        self.flush()

    def get(self, table: str, key: Sequence[Any]) -> Row | None:
        self.flush()
        return self.tables.get(table, key)

    def select(self, table: str, partition: Sequence[Any], **options: Any) -> list[Row]:
        self.flush()
        return self.tables.select(table, partition, **options)

    def scan(self, table: str, *, after: Sequence[Any] | None = None, limit: int = 1000) -> list[Row]:
        self.flush()
        return self.tables.scan(table, after=after, limit=limit)


class _StreamTarget(StreamTarget):
    """A projection version following each stream (see the module docstring).

    While its runner holds the lease (from :meth:`hold` to :meth:`forget`), no other runner moves its
    checkpoints, so it keeps those it read or wrote (the newest :attr:`KNOWN` streams) and answers them
    without a read. A checkpoint is only ever raised (each write carries its position as its timestamp),
    so one known lower than the stored one (a late write of a runner that lost the lease) only has events
    applied again, whose effects are idempotent in position. A target whose runner holds no lease (one
    that only reports, or checks) reads every checkpoint from the store.
    """

    #: streams whose checkpoint a target keeps in memory
    KNOWN = 100_000

    def __init__(self, name: str, version: int, tables: _Tables, handle: Handler) -> None:
        self.name, self.version, self.tables, self.handle = name, version, tables, handle
        self._known: OrderedDict[str, int] = OrderedDict()
        self._known_lock = threading.Lock()
        self._holding = False

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    def checkpoints(self, stream_ids: Sequence[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        with self._known_lock:
            for stream_id in stream_ids:
                known = self._known.get(stream_id)
                if known is not None:
                    found[stream_id] = known
        missing = [s for s in stream_ids if s not in found]
        if not missing:
            return found
        models = self.tables.models
        statement = models.prepare(f"SELECT position FROM {self.tables.checkpoints_table} WHERE stream_id = ?")
        statement.consistency_level = models.db.write_cl  # see CassandraReadModels.run
        results = models.db.query_all([(statement, (s,)) for s in missing])
        for stream_id, rows in zip(missing, results, strict=True):
            row = rows.one()
            found[stream_id] = int(row.position) if row is not None and row.position is not None else 0
            self._remember(stream_id, found[stream_id])
        return found

    def hold(self) -> None:
        with self._known_lock:
            self._known.clear()
            self._holding = True

    def forget(self) -> None:
        with self._known_lock:
            self._known.clear()
            self._holding = False

    def _remember(self, stream_id: str, position: int) -> None:
        with self._known_lock:
            if not self._holding:
                return
            if position >= self._known.get(stream_id, -1):
                self._known[stream_id] = position
            self._known.move_to_end(stream_id)
            if len(self._known) > self.KNOWN:
                self._known.popitem(last=False)

    def apply(self, stream_id: str, events: Sequence[StoredEvent]) -> None:
        if not events:
            return
        models, last = self.tables.models, events[-1].position
        if models.skipped_from(self.name, self.version, stream_id) is not None:
            models.extend_skip(self.name, self.version, stream_id, last)
        else:
            writer = _EventWriter(self.tables)
            try:
                for stored in events:
                    writer.position = stored.position
                    self.handle(stream_id, stored, writer)
            except Exception as exc:
                writer.flush()
                if not cannot_apply(exc):
                    raise
                self._one_by_one(stream_id, events)
            else:
                writer.flush()  # every effect stands before the checkpoint moves past them
        self._move(stream_id, last)

    def _one_by_one(self, stream_id: str, events: Sequence[StoredEvent]) -> None:
        """Apply ``events`` one at a time; record a skip from the first that cannot be applied."""
        for stored in events:
            writer = _EventWriter(self.tables)
            writer.position = stored.position
            try:
                self.handle(stream_id, stored, writer)
            except Exception as exc:
                writer.flush()
                if not cannot_apply(exc):
                    raise
                error = f"{type(exc).__name__}: {exc}"
                self.tables.models.skip(self.name, self.version, stream_id, stored.position, events[-1].position, error)
                return
            writer.flush()  # the next event may read what this one wrote

    def _move(self, stream_id: str, last: int) -> None:
        writer = _EventWriter(self.tables)
        writer.write(
            f"INSERT INTO {self.tables.checkpoints_table} (stream_id, position) VALUES (?, ?) USING TIMESTAMP ?",
            (stream_id, last, last),
        )
        writer.flush()
        self._remember(stream_id, last)

    def skip_unreadable(self, stream_id: str, position: int, reason: str, *, upto: int) -> None:
        models = self.tables.models
        if models.skipped_from(self.name, self.version, stream_id) is not None:
            models.extend_skip(self.name, self.version, stream_id, upto)
        else:
            models.skip(self.name, self.version, stream_id, position, upto, f"DamagedEvent: {reason}")
        self._move(stream_id, upto)

    def skipped(self) -> list[SkippedStream]:
        return self.tables.models.read_skips().get((self.name, self.version), [])


class _SinkTarget(_StreamTarget):
    """A relay's per-stream checkpoints in the keyspace: the stream's events published and acknowledged, then
    its checkpoint written (at its position, so it never goes back). Nothing is skipped."""

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


class CassandraReadModels(ReadModelStore):
    """Read models, the registry of versions and the runner lease, in the store's keyspace."""

    follows: Literal["sequence", "streams"] = "streams"

    def __init__(self, db: CassandraSession) -> None:
        self.db = db
        self.ks = db.settings.keyspace
        self._prepared: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._ready = False
        #: (name, version) -> stream -> first position skipped, as of the last :meth:`read_skips` and this runner's own
        self._skips: dict[tuple[str, int], dict[str, int]] = {}

    def prepare(self, cql: str) -> Any:
        """A prepared statement for ``cql`` (``{ks}`` is the keyspace), prepared once per process."""
        with self._lock:
            found = self._prepared.get(cql)
        if found is None:
            with translated("cannot prepare a read-model statement"):
                found = self.db.prepare(cql.format(ks=self.ks))
            with self._lock:
                self._prepared[cql] = found
        return found

    def run(self, cql: str, params: Sequence[Any] = (), *, serial: bool = False) -> Any:
        statement = self.prepare(cql).bind(params)
        if " IF " in cql:  # a conditional write: Paxos at the store's serial level
            statement.serial_consistency_level = self.db.serial_cl
        if not serial:
            # Reads too: what a runner writes at the commit level (QUORUM when several regions write)
            # must be what the next runner reads, wherever it runs.
            statement.consistency_level = self.db.write_cl
        return self.db.query(statement, serial=serial, idempotent=" IF " not in cql)

    def has_table(self, table: str) -> bool:
        keyspace = self.db.cluster.metadata.keyspaces.get(self.ks)
        return keyspace is not None and table in keyspace.tables

    def create(self, statements: Sequence[str]) -> None:
        """Run schema statements (``{ks}`` for the keyspace) and wait until every node agrees on them."""
        with translated("cannot create read-model tables"):
            # All at once: each is answered after the driver waited for the nodes to agree on it, and
            # they touch different tables (one process creates them: see the module docstring).
            futures = [self.db.session.execute_async(s.format(ks=self.ks), timeout=60) for s in statements]
            for future in futures:
                future.result()
            if not self.db.cluster.control_connection.wait_for_schema_agreement(wait_time=60):
                # A node that is down or paused learns the tables when it is back; until then a
                # statement it coordinates is refused, and the runner tries that stream again.
                log.warning("read-model tables created, but not every node agrees on the schema yet")

    def ensure(self) -> None:
        """Create the registry and lease tables, or add what an older keyspace lacks (runners only)."""
        if self._ready:
            return
        if not all(self.has_table(t) for t in _REGISTRY):
            self.create(_SCHEMA)
        keyspace = self.db.cluster.metadata.keyspaces.get(self.ks)
        table = keyspace.tables.get("eskit_projections") if keyspace is not None else None
        if table is not None and "layout" not in table.columns:
            self.create(["ALTER TABLE {ks}.eskit_projections ADD layout int"])
        self._ready = True

    def exists(self) -> bool:
        return self.has_table("eskit_projections")

    # -- tables and targets ----------------------------------------------------------------

    def tables(self, name: str, version: int, tables: Sequence[Table]) -> TableSet:
        return _Tables(self, table_prefix(name, version), tables)

    def target(self, name: str, version: int, tables: TableSet, handle: Handler) -> StreamTarget:
        assert isinstance(tables, _Tables)
        return _StreamTarget(name, version, tables, handle)

    def sink_target(self, name: str, version: int, tables: TableSet, sink: Sink) -> StreamTarget:
        assert isinstance(tables, _Tables)
        return _SinkTarget(name, version, tables, sink)

    # -- the registry ---------------------------------------------------------------------

    def versions(self, names: Sequence[str]) -> dict[str, list[Version]]:
        found: dict[str, list[Version]] = {name: [] for name in names}
        if not all(self.has_table(t) for t in _REGISTRY[:2]):
            return found
        layout = ", layout" if self._ready or self._has_layout() else ""  # older keyspaces: rebuilt (layout 0)
        rows = self.run(
            f"SELECT name, version, state, cursor, updated_at, error{layout} FROM {{ks}}.eskit_projections"
            " WHERE name IN ?",
            (list(names),),
        )
        counts = self.run(
            "SELECT name, version, applied FROM {ks}.eskit_projection_counts WHERE name IN ?", (list(names),)
        )
        applied = {(r.name, r.version): int(r.applied or 0) for r in counts}
        for r in rows:
            if r.state not in ("building", "active"):
                continue  # a late progress report wrote the row of a version already dropped
            when = from_micros(r.updated_at) if r.updated_at is not None else None
            version = Version(
                r.name,
                r.version,
                r.state,
                getattr(r, "layout", None) or 0,
                r.cursor,
                applied.get((r.name, r.version), 0),
                when,
                r.error,
            )
            found.setdefault(r.name, []).append(version)
        return {name: sorted(versions, key=lambda v: v.version) for name, versions in found.items()}

    def _has_layout(self) -> bool:
        keyspace = self.db.cluster.metadata.keyspaces.get(self.ks)
        table = keyspace.tables.get("eskit_projections") if keyspace is not None else None
        return table is not None and "layout" in table.columns

    def register(self, name: str, version: int, *, state: str, layout: int) -> None:
        self.ensure()
        self.run(
            "UPDATE {ks}.eskit_projections SET state = ?, layout = ? WHERE name = ? AND version = ?",
            (state, layout, name, version),
        )

    def set_cursor(self, name: str, version: int, cursor: str | None) -> None:
        self.run("UPDATE {ks}.eskit_projections SET cursor = ? WHERE name = ? AND version = ?", (cursor, name, version))

    def report(self, progress: Sequence[Progress]) -> None:
        statements: list[tuple[str, tuple[object, ...]]] = []
        for p in progress:
            if p.applied:
                statements.append(
                    (
                        "UPDATE {ks}.eskit_projection_counts SET applied = applied + ? WHERE name = ? AND version = ?",
                        (p.applied, p.name, p.version),
                    )
                )
            when = to_micros(p.updated_at) if p.updated_at is not None else None
            statements.append(
                (
                    "UPDATE {ks}.eskit_projections SET updated_at = ?, error = ? WHERE name = ? AND version = ?",
                    (when, p.error, p.name, p.version),
                )
            )
        futures = []
        for cql, params in statements:
            bound = self.prepare(cql).bind(params)
            bound.consistency_level = self.db.write_cl
            futures.append(self.db.session.execute_async(bound))
        for future in futures:
            future.result()

    def forget(self, name: str, version: int) -> None:
        self.run("DELETE FROM {ks}.eskit_projections WHERE name = ? AND version = ?", (name, version))
        self.run("DELETE FROM {ks}.eskit_projection_counts WHERE name = ? AND version = ?", (name, version))
        if self.has_table("eskit_projection_skips"):
            self.run(
                "DELETE FROM {ks}.eskit_projection_skips USING TIMESTAMP ? WHERE bucket = 0 AND name = ?"
                " AND version = ?",
                (FIRST_WINS, name, version),
            )

    def begin_round(self) -> None:
        self.read_skips()  # streams another runner skipped are skipped here too

    # -- skipped streams (see the module docstring) -------------------------------------

    def read_skips(self) -> dict[tuple[str, int], list[SkippedStream]]:
        """Every version's skipped streams (one partition read), and the cache :meth:`skipped_from` answers from."""
        if not self.has_table("eskit_projection_skips"):
            return {}
        found: dict[tuple[str, int], list[SkippedStream]] = {}
        rows = self.run(
            "SELECT name, version, stream_id, position, upto, error FROM {ks}.eskit_projection_skips WHERE bucket = 0"
        )
        for r in rows:
            upto = r.upto if r.upto is not None else r.position
            found.setdefault((r.name, r.version), []).append(
                SkippedStream(r.stream_id, int(r.position), max(1, int(upto) - int(r.position) + 1), str(r.error))
            )
        with self._lock:
            self._skips = {key: {s.stream_id: s.position for s in skipped} for key, skipped in found.items()}
        return found

    def skipped_from(self, name: str, version: int, stream_id: str) -> int | None:
        """The first position of the stream that version skips, if it skips it (as last read, or skipped here)."""
        with self._lock:
            return self._skips.get((name, version), {}).get(stream_id)

    def skip(self, name: str, version: int, stream_id: str, position: int, upto: int, error: str) -> None:
        """Record that the version skips the stream from ``position``, up to ``upto`` so far, because of ``error``.

        Raises :class:`~eskit.projection.TooManySkipped` once the version skips
        :data:`~eskit.projection.MAX_SKIPPED_STREAMS` streams.
        """
        with self._lock:
            held = self._skips.setdefault((name, version), {})
            known = stream_id in held
            if not known and len(held) >= MAX_SKIPPED_STREAMS:
                raise TooManySkipped(
                    f"{name}@{version}: more than {MAX_SKIPPED_STREAMS} streams cannot be applied (the last, "
                    f"{stream_id}@{position}: {error}): this looks like a fault of the projection's code, not damage; "
                    "fix it, then rebuild"
                )
            held[stream_id] = min(position, held.get(stream_id, position))
        if not known:
            log.warning(
                "projection %s@%d skips stream %s from position %d: %s", name, version, stream_id, position, error
            )
            self.run(
                "INSERT INTO {ks}.eskit_projection_skips (bucket, name, version, stream_id, position, error)"
                " VALUES (0, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
                (name, version, stream_id, position, error[:_ERROR_CHARS], FIRST_WINS - position),
            )
        self.extend_skip(name, version, stream_id, upto)

    def extend_skip(self, name: str, version: int, stream_id: str, upto: int) -> None:
        """The version skipped the stream up to ``upto`` now (the highest such write wins)."""
        self.run(
            "UPDATE {ks}.eskit_projection_skips USING TIMESTAMP ? SET upto = ? WHERE bucket = 0 AND name = ?"
            " AND version = ? AND stream_id = ?",
            (upto, upto, name, version, stream_id),
        )

    # -- the lease (conditional writes only) ----------------------------------------------

    def acquire_lease(self, name: str, holder: str, *, ttl: float) -> int | None:
        self.ensure()
        now = time.time()
        row = self.run(
            "SELECT holder, fence, expires_at FROM {ks}.eskit_leases WHERE name = ?", (name,), serial=True
        ).one()
        if row is None:
            result = self.run(
                "INSERT INTO {ks}.eskit_leases (name, holder, fence, expires_at) VALUES (?, ?, 1, ?) IF NOT EXISTS",
                (name, holder, now + ttl),
            )
            return 1 if applied(result) else None
        if row.holder != holder and row.expires_at > now:
            return None
        token = row.fence if row.holder == holder else row.fence + 1
        result = self.run(
            "UPDATE {ks}.eskit_leases SET holder = ?, fence = ?, expires_at = ? WHERE name = ? IF fence = ?",
            (holder, token, now + ttl, name, row.fence),
        )
        return int(token) if applied(result) else None

    def release_lease(self, name: str, holder: str) -> None:
        if self.has_table("eskit_leases"):
            self.run("UPDATE {ks}.eskit_leases SET expires_at = 0 WHERE name = ? IF holder = ?", (name, holder))
