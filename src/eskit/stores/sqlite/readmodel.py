"""Read models in a SQLite file of their own: each batch's rows and its checkpoint in one transaction.

The file sits beside the event store's (``x.readmodels.db`` beside ``x.db``),
so read models never take the store's write lock, and holds, besides every
projection version's tables (``rm_<name>_v<version>_<table>``):

* ``eskit_checkpoints``: per projection version, the feed sequence applied up
  to (per relay version, published and acknowledged up to: :class:`SQLiteSinkTarget`).
  :class:`SQLiteTableProjection` applies a batch in one ``BEGIN IMMEDIATE``
  transaction that first checks the checkpoint is still where the batch starts
  (a second runner's batch is refused with
  :class:`~eskit.projection.CheckpointMoved`), then writes the rows and moves
  the checkpoint: each event has exactly one effect, whatever the number of
  runners, and a runner killed mid-batch leaves nothing behind;
* ``eskit_projections`` and ``eskit_leases``: the registry of versions and the
  runner lease (see :mod:`eskit.readmodel.store`);
* ``eskit_skipped``: per projection version, the streams it skips because it
  cannot apply them (:class:`~eskit.projection.SkippedStream`), changed in the
  same transaction as the checkpoint, so a skip is recorded exactly when the
  checkpoint moves past it;
* ``eskit_identity``: the id of the store the read models follow
  (:meth:`SQLiteReadModels.follow`), so they are never followed from a
  position that store never reached.

A batch is applied whole when it can be. When an event's own content makes it
fail (:func:`~eskit.projection.cannot_apply`), the batch is undone and applied
again event by event, each in a savepoint: the event that fails is undone
alone, its stream is recorded as skipped from there on, and the rest goes on.

Deleted rows are overwritten with zeros (``secure_delete``), and a batch in which
a decision asked for it (:meth:`~eskit.readmodel.Writer.scrub`: a member was
erased) ends with the write-ahead log checkpointed and emptied, so no copy of an
erased member's rows stays in the file or its log.

Durability: the file runs ``synchronous=NORMAL``. A crash of the machine may
lose the newest batches, but never a batch's rows without its checkpoint (WAL
commits are atomic), and the feed applies them again: read models are derived,
so nothing is lost that the event store does not hold.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from eskit.exceptions import DamagedEvent
from eskit.ports import FeedEvent
from eskit.projection import (
    MAX_SKIPPED_STREAMS,
    CheckpointMoved,
    ProjectionTarget,
    SkippedStream,
    TooManySkipped,
    cannot_apply,
)
from eskit.readmodel.sink import Sink
from eskit.readmodel.store import Handler, Progress, ReadModelStore, Version, table_prefix
from eskit.readmodel.tables import Row, Table, TableSet, Writer
from eskit.stores.sqlite.connection import SQLiteConnection, translate_errors
from eskit.stores.timestamps import from_micros, to_micros

__all__ = ["SQLiteReadModels", "SQLiteSinkTarget", "SQLiteTableProjection", "read_models_path"]

log = logging.getLogger(__name__)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS eskit_projections (name TEXT NOT NULL, version INTEGER NOT NULL,"
    " state TEXT NOT NULL, layout INTEGER NOT NULL, cursor TEXT, applied INTEGER NOT NULL DEFAULT 0,"
    " updated_at INTEGER, error TEXT, PRIMARY KEY (name, version))",
    "CREATE TABLE IF NOT EXISTS eskit_checkpoints (prefix TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS eskit_leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, token INTEGER NOT NULL,"
    " expires_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS eskit_skipped (prefix TEXT NOT NULL, stream_id TEXT NOT NULL,"
    " position INTEGER NOT NULL, sequence INTEGER, events INTEGER NOT NULL, error TEXT NOT NULL,"
    " PRIMARY KEY (prefix, stream_id))",
    "CREATE TABLE IF NOT EXISTS eskit_identity (id INTEGER PRIMARY KEY CHECK (id = 1), store_id TEXT NOT NULL)",
)
#: bookkeeping tables of read-model files written before the registry (their projections are rebuilt)
_LEGACY = ("checkpoints", "versions", "leases", "skipped", "store_identity")
#: the file's own tables; every other table is a projection version's
_OWN = frozenset({"eskit_projections", "eskit_checkpoints", "eskit_leases", "eskit_skipped", "eskit_identity"})
#: SQLite's errors that an event's values cause (a constraint or a type they break): skipped, not retried
_DATA_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError)
#: how much of an error's text a skip keeps
_ERROR_CHARS = 500

_TYPES = {"text": "TEXT", "int": "INTEGER", "bool": "INTEGER"}


def read_models_path(store_path: str | Path) -> Path:
    """Where a SQLite store's read models live: ``x.readmodels.db`` beside ``x.db``."""
    path = Path(store_path)
    return path.with_name(path.stem + ".readmodels" + (path.suffix or ".db"))


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Statements:
    """The SQL of one table, made once."""

    def __init__(self, name: str, table: Table) -> None:
        self.table = table
        q = _quote(name)
        key = ", ".join(table.key)
        self.columns = table.columns
        cols = ", ".join(self.columns)
        types = ", ".join(f"{c} {_TYPES[table.kind(c)]}" for c in self.columns)
        self.create = f"CREATE TABLE IF NOT EXISTS {q} ({types}, PRIMARY KEY ({key}))"
        self.get = f"SELECT {cols} FROM {q} WHERE " + " AND ".join(f"{k} = ?" for k in table.key)
        self.delete = f"DELETE FROM {q} WHERE " + " AND ".join(f"{k} = ?" for k in table.key)
        self.name = q
        self.cols = cols
        self._puts: dict[tuple[str, ...], str] = {}

    def checked_put(self, key: Sequence[Any], columns: tuple[str, ...]) -> str:
        """The upsert of ``columns`` (checked against the table once per set of columns) for a key."""
        found = self._puts.get(columns)
        if found is None:
            self.table.check(key, dict.fromkeys(columns))
            found = self.put(columns)
        elif len(key) != len(self.table.key):
            self.table.check(key, {})
        return found

    def put(self, columns: tuple[str, ...]) -> str:
        found = self._puts.get(columns)
        if found is None:
            names = self.table.key + columns
            marks = ", ".join("?" * len(names))
            if columns:
                sets = ", ".join(f"{c} = excluded.{c}" for c in columns)
                found = (
                    f"INSERT INTO {self.name} ({', '.join(names)}) VALUES ({marks})"
                    f" ON CONFLICT ({', '.join(self.table.key)}) DO UPDATE SET {sets}"
                )
            else:
                found = f"INSERT OR IGNORE INTO {self.name} ({', '.join(names)}) VALUES ({marks})"
            self._puts[columns] = found
        return found

    def row(self, values: Sequence[Any]) -> Row:
        row: Row = {}
        for column, value in zip(self.columns, values, strict=True):
            row[column] = bool(value) if value is not None and self.table.kind(column) == "bool" else value
        return row


class _Tables(TableSet):
    """One version's tables in the read-model file."""

    def __init__(self, models: SQLiteReadModels, prefix: str, tables: Sequence[Table]) -> None:
        self.models, self.prefix = models, prefix
        self.tables = {t.name: t for t in tables}
        self._sql = {t.name: _Statements(prefix + t.name, t) for t in tables}
        self._exists = False

    def sql(self, table: str) -> _Statements:
        found = self._sql.get(table)
        if found is None:
            raise ValueError(f"no table {table!r}")
        return found

    def create(self) -> None:
        with self.models.transaction() as conn:
            for statements in self._sql.values():
                conn.execute(statements.create)
        self._exists = True

    def drop(self) -> None:
        with self.models.transaction() as conn:
            for statements in self._sql.values():
                conn.execute(f"DROP TABLE IF EXISTS {statements.name}")
            conn.execute("DELETE FROM eskit_checkpoints WHERE prefix = ?", (self.prefix,))
            conn.execute("DELETE FROM eskit_skipped WHERE prefix = ?", (self.prefix,))
        self._exists = False

    def exists(self) -> bool:
        if not self.tables:
            return True  # a sink's: only its checkpoint, in the file's own table
        if not self._exists:
            first = self.prefix + next(iter(self.tables))
            rows = self.models.read("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (first,))
            self._exists = bool(rows)
        return self._exists

    # -- writes -----------------------------------------------------------------------------

    def write(self, conn: sqlite3.Connection, table: str, key: Sequence[Any], values: Mapping[str, Any]) -> None:
        statements = self._sql.get(table) or self.sql(table)
        columns = tuple(values)
        sql = statements.checked_put(key, columns)
        conn.execute(sql, (*key, *values.values()))

    def put(self, table: str, key: Sequence[Any], values: Mapping[str, Any] | None = None) -> None:
        with self.models.transaction() as conn:
            self.write(conn, table, key, values or {})

    def delete(self, table: str, key: Sequence[Any]) -> None:
        with self.models.transaction() as conn:
            conn.execute(self.sql(table).delete, tuple(key))

    # -- reads ------------------------------------------------------------------------------

    def _read(self, sql: str, params: Sequence[Any], conn: sqlite3.Connection | None) -> list[tuple[Any, ...]]:
        if conn is not None:
            with translate_errors():
                return [tuple(r) for r in conn.execute(sql, params).fetchall()]
        if not self.exists():
            return []
        return self.models.read(sql, params)

    def get(self, table: str, key: Sequence[Any], conn: sqlite3.Connection | None = None) -> Row | None:
        statements = self.sql(table)
        rows = self._read(statements.get, tuple(key), conn)
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
        conn: sqlite3.Connection | None = None,
    ) -> list[Row]:
        statements = self.sql(table)
        spec = statements.table
        where = [f"{k} = ?" for k in spec.partition]
        params: list[Any] = list(partition)
        if after is not None and spec.clustering:
            where.append(f"({', '.join(spec.clustering)}) > ({', '.join('?' * len(spec.clustering))})")
            params.extend(after)
        if low is not None:
            where.append(f"{spec.clustering[0]} >= ?")
            params.append(low)
        if high is not None:
            where.append(f"{spec.clustering[0]} <= ?")
            params.append(high)
        sql = f"SELECT {statements.cols} FROM {statements.name} WHERE {' AND '.join(where)}"
        if spec.clustering:
            sql += f" ORDER BY {', '.join(spec.clustering)}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [statements.row(r) for r in self._read(sql, params, conn)]

    def scan(
        self,
        table: str,
        *,
        after: Sequence[Any] | None = None,
        limit: int = 1000,
        conn: sqlite3.Connection | None = None,
    ) -> list[Row]:
        statements = self.sql(table)
        key = statements.table.key
        sql = f"SELECT {statements.cols} FROM {statements.name}"
        params: list[Any] = []
        if after is not None:
            sql += f" WHERE ({', '.join(key)}) > ({', '.join('?' * len(key))})"
            params.extend(after)
        sql += f" ORDER BY {', '.join(key)} LIMIT ?"
        params.append(limit)
        return [statements.row(r) for r in self._read(sql, params, conn)]


class _BatchWriter(Writer):
    """The writes of a batch, in the batch's transaction (so reads see them)."""

    def __init__(self, tables: _Tables, conn: sqlite3.Connection) -> None:
        self.tables, self.conn = tables, conn
        self.scrubbed = False

    def scrub(self) -> None:
        self.scrubbed = True  # the log is emptied once the batch is committed

    def put(self, table: str, key: Sequence[Any], values: Mapping[str, Any] | None = None) -> None:
        self.tables.write(self.conn, table, key, values or {})

    def delete(self, table: str, key: Sequence[Any]) -> None:
        self.conn.execute(self.tables.sql(table).delete, tuple(key))

    def get(self, table: str, key: Sequence[Any]) -> Row | None:
        return self.tables.get(table, key, self.conn)

    def select(self, table: str, partition: Sequence[Any], **options: Any) -> list[Row]:
        return self.tables.select(table, partition, conn=self.conn, **options)

    def scan(self, table: str, *, after: Sequence[Any] | None = None, limit: int = 1000) -> list[Row]:
        return self.tables.scan(table, after=after, limit=limit, conn=self.conn)


class SQLiteTableProjection(ProjectionTarget):
    """A projection version whose tables are in the read-model file; see the module docstring."""

    def __init__(self, name: str, version: int, tables: _Tables, handle: Handler) -> None:
        self.name, self.version, self.tables, self.handle = name, version, tables, handle

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    def checkpoint(self) -> int:
        rows = self.tables.models.read("SELECT seq FROM eskit_checkpoints WHERE prefix = ?", (self.tables.prefix,))
        return int(rows[0][0]) if rows else 0

    def apply(self, events: Sequence[FeedEvent], *, after: int) -> None:
        if not events:
            return
        if not self.tables.exists():
            self.tables.create()
        with self.tables.models.transaction() as conn:
            self._begin(conn, after)
            skipping = {
                str(row[0])
                for row in conn.execute("SELECT stream_id FROM eskit_skipped WHERE prefix = ?", (self.tables.prefix,))
            }
            todo = [e for e in events if e.event.stream_id not in skipping]
            self._count_skipped(conn, [e for e in events if e.event.stream_id in skipping])
            writer = _BatchWriter(self.tables, conn)
            conn.execute("SAVEPOINT eskit_batch")
            try:
                for item in todo:
                    self.handle(item.event.stream_id, item.event, writer)
            except Exception as exc:
                conn.execute("ROLLBACK TO eskit_batch")
                conn.execute("RELEASE eskit_batch")
                if not cannot_apply(exc, _DATA_ERRORS):
                    raise
                self._one_by_one(conn, writer, todo, skipping)
            else:
                conn.execute("RELEASE eskit_batch")
            self._move(conn, events[-1].sequence)
        if writer.scrubbed:
            self.tables.models.truncate_log()

    def _begin(self, conn: sqlite3.Connection, after: int) -> None:
        row = conn.execute("SELECT seq FROM eskit_checkpoints WHERE prefix = ?", (self.tables.prefix,)).fetchone()
        current = int(row[0]) if row else 0
        if current != after:
            raise CheckpointMoved(f"{self.key} is at {current}, the batch follows {after}")

    def _move(self, conn: sqlite3.Connection, sequence: int) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO eskit_checkpoints (prefix, seq) VALUES (?, ?)", (self.tables.prefix, sequence)
        )

    def _one_by_one(
        self, conn: sqlite3.Connection, writer: _BatchWriter, events: Sequence[FeedEvent], skipping: set[str]
    ) -> None:
        """Apply ``events`` each in a savepoint; skip the stream of one that cannot be applied, from it on."""
        for item in events:
            stream = item.event.stream_id
            if stream in skipping:
                self._count_skipped(conn, [item])
                continue
            conn.execute("SAVEPOINT eskit_event")
            try:
                self.handle(stream, item.event, writer)
            except Exception as exc:
                conn.execute("ROLLBACK TO eskit_event")
                conn.execute("RELEASE eskit_event")
                if not cannot_apply(exc, _DATA_ERRORS):
                    raise
                self._skip(conn, stream, item.event.position, item.sequence, exc)
                skipping.add(stream)
                continue
            conn.execute("RELEASE eskit_event")

    def _skip(self, conn: sqlite3.Connection, stream_id: str, position: int, sequence: int, exc: BaseException) -> None:
        (held,) = conn.execute("SELECT count(*) FROM eskit_skipped WHERE prefix = ?", (self.tables.prefix,)).fetchone()
        if held >= MAX_SKIPPED_STREAMS:
            raise TooManySkipped(
                f"{self.key}: more than {MAX_SKIPPED_STREAMS} streams cannot be applied (the last, {stream_id}@"
                f"{position}: {type(exc).__name__}: {exc}): this looks like a fault of the projection's code, not "
                "damage; fix it, then rebuild"
            )
        error = f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS]
        log.warning("projection %s skips stream %s from position %d: %s", self.key, stream_id, position, error)
        conn.execute(
            "INSERT INTO eskit_skipped (prefix, stream_id, position, sequence, events, error)"
            " VALUES (?, ?, ?, ?, 1, ?)",
            (self.tables.prefix, stream_id, position, sequence, error),
        )

    def _count_skipped(self, conn: sqlite3.Connection, events: Sequence[FeedEvent]) -> None:
        for item in events:
            conn.execute(
                "UPDATE eskit_skipped SET events = events + 1 WHERE prefix = ? AND stream_id = ?",
                (self.tables.prefix, item.event.stream_id),
            )

    def skip_unreadable(self, damaged: DamagedEvent, *, after: int) -> None:
        assert damaged.sequence == after + 1
        if not self.tables.exists():
            self.tables.create()
        with self.tables.models.transaction() as conn:
            self._begin(conn, after)
            known = conn.execute(
                "SELECT 1 FROM eskit_skipped WHERE prefix = ? AND stream_id = ?",
                (self.tables.prefix, damaged.stream_id),
            ).fetchone()
            if known:
                conn.execute(
                    "UPDATE eskit_skipped SET events = events + 1 WHERE prefix = ? AND stream_id = ?",
                    (self.tables.prefix, damaged.stream_id),
                )
            else:
                self._skip(conn, damaged.stream_id, damaged.position, damaged.sequence, damaged)
            self._move(conn, damaged.sequence)

    def skipped(self) -> list[SkippedStream]:
        rows = self.tables.models.read(
            "SELECT stream_id, position, events, error, sequence FROM eskit_skipped WHERE prefix = ? ORDER BY sequence",
            (self.tables.prefix,),
        )
        return [SkippedStream(str(s), int(p), int(n), str(e), None if q is None else int(q)) for s, p, n, e, q in rows]


class SQLiteSinkTarget(SQLiteTableProjection):
    """A relay's checkpoint in the read-model file: a batch is published, acknowledged, then the checkpoint moves.

    The move is the table projections' compare-and-set: when another runner moved the checkpoint
    while this one published (two runners at once, a lease lost), the batch was published twice
    and is refused here (:class:`~eskit.projection.CheckpointMoved`); the checkpoint never goes
    back and never moves past an event that was not acknowledged. Nothing is skipped.
    """

    def __init__(self, name: str, version: int, tables: _Tables, sink: Sink) -> None:
        super().__init__(name, version, tables, _no_rows)
        self.sink = sink

    def apply(self, events: Sequence[FeedEvent], *, after: int) -> None:
        if not events:
            return
        if self.checkpoint() != after:  # a stale view: do not publish what another runner already did
            raise CheckpointMoved(f"{self.key} is past {after}")
        self.sink.publish([item.event for item in events])
        with self.tables.models.transaction() as conn:
            self._begin(conn, after)
            self._move(conn, events[-1].sequence)

    def skip_unreadable(self, damaged: DamagedEvent, *, after: int) -> None:
        raise damaged  # a relay never skips: the event waits until it can be read and published

    def skipped(self) -> list[SkippedStream]:
        return []


def _no_rows(stream_id: str, event: object, writer: object) -> None:
    raise AssertionError("a sink target writes no rows")


class SQLiteReadModels(ReadModelStore):
    """The read-model file: opened (and created) on first use, shared by threads and processes."""

    follows: Literal["sequence", "streams"] = "sequence"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.db = SQLiteConnection(path, create=True, event_store=False, durable=False, secure_delete=True)
        self._ready = False

    def truncate_log(self) -> None:
        """Move the write-ahead log into the file and empty it (best effort: a reader may hold it a while)."""
        conn = self.connection()
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            log.info("could not empty the read models' log of %s yet: %s", self.path, exc)

    def connection(self) -> sqlite3.Connection:
        conn = self.db.get()
        if not self._ready:
            with translate_errors():
                marks = ", ".join("?" * len(_LEGACY))
                legacy = conn.execute(
                    f"SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ({marks})", _LEGACY
                ).fetchall()
                for (name,) in legacy:
                    conn.execute(f"DROP TABLE IF EXISTS {_quote(name)}")
                for statement in _SCHEMA:
                    conn.execute(statement)
            self._ready = True
        return conn

    def transaction(self) -> Any:
        self.connection()
        return self.db.transaction(immediate=True)

    def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read outside any transaction (never takes the write lock)."""
        conn = self.connection()
        with translate_errors():
            return [tuple(r) for r in conn.execute(sql, params).fetchall()]

    def exists(self) -> bool:
        return self.path.exists()

    # -- which store the read models follow --------------------------------------------------

    def _relation(self, store_id: str, head: int) -> str:
        """``same``: the file follows the store ``store_id`` (head ``head``); ``adopt``: it names no store and no
        checkpoint is past ``head``; ``other``: it names another store, or a checkpoint is past ``head``, a
        position the store never reached (a store made anew, or put back from an older copy of its file)."""
        (row,) = self.read("SELECT (SELECT store_id FROM eskit_identity WHERE id = 1), max(seq) FROM eskit_checkpoints")
        named, highest = row
        if (highest or 0) > head or (named is not None and named != store_id):
            return "other"
        return "same" if named is not None else "adopt"

    def belongs(self, store_id: str | None, head: int) -> bool:
        return store_id is None or self._relation(store_id, head) != "other"

    def follow(self, store_id: str | None, head: int) -> bool:
        """Make the file follow store ``store_id``; True when it had to be emptied (it was another store's).

        In one write transaction, so of several processes one does it; emptied, every projection
        version's tables, checkpoints, skips and registry entries are gone, and the runner fills
        them again from the store's first event.
        """
        if store_id is None or self._relation(store_id, head) == "same":
            return False
        with self.transaction() as conn:
            named = conn.execute("SELECT store_id FROM eskit_identity WHERE id = 1").fetchone()
            (highest,) = conn.execute("SELECT max(seq) FROM eskit_checkpoints").fetchone()
            emptied = (highest or 0) > head or (named is not None and named[0] != store_id)
            if named is not None and not emptied:
                return False  # another process did it meanwhile
            if emptied:
                tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
                for table in tables:
                    if table not in _OWN and not table.startswith("sqlite_"):
                        conn.execute(f"DROP TABLE IF EXISTS {_quote(table)}")
                for own in ("eskit_checkpoints", "eskit_projections", "eskit_skipped"):
                    conn.execute(f"DELETE FROM {own}")
            conn.execute("INSERT OR REPLACE INTO eskit_identity (id, store_id) VALUES (1, ?)", (store_id,))
        if emptied:
            log.warning(
                "the read models in %s were built from another store: emptied, they are built again from this "
                "store's first event",
                self.path,
            )
        return emptied

    # -- tables and targets ----------------------------------------------------------------

    def tables(self, name: str, version: int, tables: Sequence[Table]) -> TableSet:
        return _Tables(self, table_prefix(name, version), tables)

    def target(self, name: str, version: int, tables: TableSet, handle: Handler) -> SQLiteTableProjection:
        assert isinstance(tables, _Tables)
        return SQLiteTableProjection(name, version, tables, handle)

    def sink_target(self, name: str, version: int, tables: TableSet, sink: Sink) -> SQLiteSinkTarget:
        assert isinstance(tables, _Tables)
        return SQLiteSinkTarget(name, version, tables, sink)

    # -- the registry -----------------------------------------------------------------------

    def versions(self, names: Sequence[str]) -> dict[str, list[Version]]:
        found: dict[str, list[Version]] = {name: [] for name in names}
        rows = self.read(
            "SELECT name, version, state, layout, cursor, applied, updated_at, error FROM eskit_projections"
            " ORDER BY name, version"
        )
        for name, version, state, layout, cursor, applied, updated, error in rows:
            if name in found:
                when = from_micros(updated) if updated is not None else None
                found[name].append(Version(name, version, state, layout, cursor, applied, when, error))
        return found

    def register(self, name: str, version: int, *, state: str, layout: int) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO eskit_projections (name, version, state, layout) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (name, version) DO UPDATE SET state = excluded.state, layout = excluded.layout",
                (name, version, state, layout),
            )

    def set_cursor(self, name: str, version: int, cursor: str | None) -> None:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE eskit_projections SET cursor = ? WHERE name = ? AND version = ?", (cursor, name, version)
            )

    def report(self, progress: Sequence[Progress]) -> None:
        with self.transaction() as conn:
            for p in progress:
                when = to_micros(p.updated_at) if p.updated_at is not None else None
                conn.execute(
                    "UPDATE eskit_projections SET applied = applied + ?, updated_at = coalesce(?, updated_at),"
                    " error = ? WHERE name = ? AND version = ?",
                    (p.applied, when, p.error, p.name, p.version),
                )

    def forget(self, name: str, version: int) -> None:
        with self.transaction() as conn:
            conn.execute("DELETE FROM eskit_projections WHERE name = ? AND version = ?", (name, version))

    # -- the lease ----------------------------------------------------------------------------

    def acquire_lease(self, name: str, holder: str, *, ttl: float) -> int | None:
        now = time.time()
        with self.transaction() as conn:
            row = conn.execute("SELECT holder, token, expires_at FROM eskit_leases WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] != holder and row[2] > now:
                return None
            token = int(row[1]) if row is not None and row[0] == holder else (int(row[1]) + 1 if row else 1)
            conn.execute(
                "INSERT OR REPLACE INTO eskit_leases (name, holder, token, expires_at) VALUES (?, ?, ?, ?)",
                (name, holder, token, now + ttl),
            )
        return token

    def release_lease(self, name: str, holder: str) -> None:
        with self.transaction() as conn:
            conn.execute("UPDATE eskit_leases SET expires_at = 0 WHERE name = ? AND holder = ?", (name, holder))

    def close(self) -> None:
        self.db.close()
