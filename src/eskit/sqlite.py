"""SQLite stores: one file, WAL, durable on acknowledgement, many threads and processes.

Durability: the connection runs ``journal_mode=WAL`` with ``synchronous=FULL``,
so every committed append is fsynced to the write-ahead log before
:meth:`SQLiteEventStore.append` returns; it survives a crash of the process and
of the machine. Appends run in ``BEGIN IMMEDIATE`` transactions, which take the
database's single write lock up front, so the version check and the inserts of
one append are atomic across threads and processes; ``busy_timeout`` makes a
writer wait for the lock instead of failing.

The file: a connection records the database file's identity (device and inode)
when it first opens it and checks it again before every commit and on
:meth:`SQLiteEventStore.ping`. A file that was removed or replaced while the
store runs makes every write fail with :class:`StoreUnavailable` instead of
going, unnoticed, into a new empty database; the file is created only by the
first open of a store made with ``create=True``, never later.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from eskit.events import NewEvent, Snapshot, StoredEvent
from eskit.exceptions import (
    ConcurrencyError,
    InterfaceError,
    OperationalError,
    StoreError,
    StoreUnavailable,
)
from eskit.store import EventStore, SnapshotStore
from eskit.timeutil import from_micros, to_micros
from eskit.validation import check_append, check_read

__all__ = ["SQLiteConnection", "SQLiteEventStore", "SQLiteSnapshotStore", "PRAGMAS"]

#: The pragmas every connection runs; benchmarks use the same ones for raw sqlite3.
PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA busy_timeout=30000",
)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        stream_id TEXT NOT NULL,
        position INTEGER NOT NULL,
        event_id BLOB NOT NULL,
        type_name TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        data BLOB NOT NULL,
        metadata BLOB NOT NULL,
        recorded_at INTEGER NOT NULL,
        PRIMARY KEY (stream_id, position)
    ) WITHOUT ROWID""",
    "CREATE TABLE IF NOT EXISTS eskit_health (id INTEGER PRIMARY KEY, checked_at INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS snapshots (
        stream_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        type_name TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        state BLOB NOT NULL,
        recorded_at INTEGER NOT NULL,
        PRIMARY KEY (stream_id, version)
    ) WITHOUT ROWID""",
)

INSERT_EVENT = (
    "INSERT INTO events (stream_id, position, event_id, type_name, schema_version,"
    " data, metadata, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
SELECT_VERSION = "SELECT max(position) FROM events WHERE stream_id = ?"


class SQLiteConnection:
    """One connection per thread (and per process, after a fork) to one database file.

    ``create`` allows the first open to create the file; every later open, and
    every open when ``create`` is false, requires the file to exist already.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = str(path)
        self.create = create
        self._local = threading.local()
        self._closed = False
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._identity: tuple[int, int] | None = None

    def get(self) -> sqlite3.Connection:
        """Return this thread's connection, opening it (and the schema) on first use."""
        if self._closed:
            raise InterfaceError("the SQLite store is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "pid", None) == os.getpid():
            return conn
        conn = self._open()
        self._local.conn = conn
        self._local.pid = os.getpid()
        return conn

    @property
    def _on_disk(self) -> bool:
        return self.path != ":memory:" and not self.path.startswith("file:")

    def _file_identity(self) -> tuple[int, int] | None:
        try:
            found = os.stat(self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreUnavailable(f"cannot look at SQLite store {self.path!r}: {exc}") from exc
        return found.st_dev, found.st_ino

    def check_file(self) -> None:
        """Raise :class:`StoreUnavailable` if the database file is gone or is another file now."""
        if not self._on_disk or self._identity is None:
            return
        now = self._file_identity()
        if now is None:
            raise StoreUnavailable(f"the SQLite store {self.path!r} was removed while in use; restore it and restart")
        if now != self._identity:
            raise StoreUnavailable(f"the SQLite store {self.path!r} was replaced by another file while in use; restart")

    def _open(self) -> sqlite3.Connection:
        target = self.path
        if self._on_disk:
            parent = Path(self.path).parent
            if not parent.is_dir():
                raise StoreUnavailable(f"cannot open SQLite store {self.path!r}: no folder {str(parent)!r}")
            may_create = self.create and self._identity is None
            if not may_create:
                if self._identity is None and self._file_identity() is None:
                    raise StoreUnavailable(f"no SQLite store at {self.path!r} (create it with `downloads store init`)")
                self.check_file()
                target = Path(self.path).resolve().as_uri() + "?mode=rw"  # never creates the file
        for attempt in range(50):
            try:
                conn = sqlite3.connect(
                    target, isolation_level=None, check_same_thread=False, timeout=30, uri=target.startswith("file:")
                )
                try:
                    for pragma in PRAGMAS:
                        conn.execute(pragma)
                    with self._schema_lock:
                        if not self._schema_ready:
                            for statement in _SCHEMA:
                                conn.execute(statement)
                            self._schema_ready = True
                except BaseException:
                    conn.close()
                    raise
                if self._on_disk and self._identity is None:
                    self._identity = self._file_identity()
                return conn
            except sqlite3.OperationalError as exc:
                # Switching a new file to WAL needs an exclusive lock and may answer "locked"
                # without waiting when several processes open the file at once: try again.
                if "locked" not in str(exc) or attempt == 49:
                    raise StoreUnavailable(f"cannot open SQLite store {self.path!r}: {exc}") from exc
                time.sleep(0.02 + 0.01 * attempt)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"cannot open SQLite store {self.path!r}: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def transaction(self, *, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        """Run the block in one transaction; driver errors become eskit errors."""
        conn = self.get()
        with translate_errors():
            conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            try:
                yield conn
                if immediate:
                    self.check_file()  # never commit into a file that is not the store's any more
                conn.execute("COMMIT")
            except BaseException:
                # Also after a failed COMMIT: SQLite may keep the transaction (and the write lock) open.
                if conn.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        """Close this thread's connection; other threads' close when they are collected."""
        self._closed = True
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


@contextmanager
def translate_errors() -> Iterator[None]:
    """Translate ``sqlite3`` errors into the eskit hierarchy at the adapter boundary."""
    try:
        yield
    except StoreError:
        raise
    except sqlite3.OperationalError as exc:
        raise OperationalError(f"SQLite: {exc}") from exc
    except sqlite3.IntegrityError as exc:
        raise OperationalError(f"SQLite integrity: {exc}") from exc
    except sqlite3.Error as exc:
        raise OperationalError(f"SQLite: {exc}") from exc


def _row_to_event(stream_id: str, row: tuple[int, bytes, str, int, bytes, bytes, int]) -> StoredEvent:
    position, event_id, type_name, schema_version, data, metadata, recorded_at = row
    return StoredEvent(
        stream_id=stream_id,
        position=position,
        type_name=type_name,
        schema_version=schema_version,
        data=bytes(data),
        metadata=bytes(metadata),
        recorded_at=from_micros(recorded_at),
        event_id=uuid.UUID(bytes=bytes(event_id)),
    )


@dataclass
class _Append:
    """One caller's append, waiting to be written in some group's transaction."""

    stream_id: str
    expected_version: int
    rows: Sequence[tuple[object, ...]]
    wake: threading.Event | None = None  # made only for a caller that has to wait
    finished: bool = False
    lead: bool = False
    error: BaseException | None = None


class _GroupCommitter:
    """Group commit: appends that arrive while a commit is under way share the next one.

    Every commit waits for an fsync, which costs far more than the inserts. A
    caller that finds no commit under way leads: it writes every append waiting
    at that moment in one ``BEGIN IMMEDIATE`` transaction, each checked against
    its expected version (and so against the appends before it in the group),
    commits once, wakes their callers, and hands the lead to the first caller
    still waiting. A caller is answered only after the commit holding its
    events returned, so acknowledged still means durable; if that commit fails,
    every append in it fails and none is stored.
    """

    def __init__(self, db: SQLiteConnection, *, max_group: int = 64) -> None:
        self.db = db
        self.max_group = max_group
        self._lock = threading.Lock()
        self._waiting: list[_Append] = []
        self._leading = False
        self._pid = os.getpid()
        #: when the last group failed in the backend (full disk, I/O error) with no commit since
        self.failed_at: float | None = None
        self.failure = ""

    def submit(self, append: _Append) -> int:
        if self._pid != os.getpid():  # a forked child starts with no commit under way
            self._lock, self._waiting, self._leading, self._pid = threading.Lock(), [], False, os.getpid()
        with self._lock:
            self._waiting.append(append)
            if not self._leading:
                self._leading = append.lead = True
            else:
                append.wake = threading.Event()
        while not append.finished:
            if append.lead:
                self._lead(append)
            else:
                assert append.wake is not None
                append.wake.wait()
                append.wake.clear()
        if append.error is not None:
            raise append.error
        return append.expected_version + len(append.rows)

    def _lead(self, me: _Append) -> None:
        while not me.finished:
            with self._lock:
                group, self._waiting = self._waiting[: self.max_group], self._waiting[self.max_group :]
            try:
                self._write(group)
                self.failed_at = None
            except BaseException as exc:  # the group's transaction failed: none of its events are stored
                if isinstance(exc, OperationalError):
                    self.failed_at, self.failure = time.monotonic(), str(exc)
                for append in group:
                    append.error = append.error or exc
            for append in group:
                append.finished = True
                if append.wake is not None:
                    append.wake.set()
        with self._lock:
            if self._waiting:
                successor = self._waiting[0]
                successor.lead = True
                assert successor.wake is not None  # everyone queued behind a leader has one
                successor.wake.set()
            else:
                self._leading = False

    def _write(self, group: list[_Append]) -> None:
        with self.db.transaction(immediate=True) as conn:
            for append in group:
                (current,) = conn.execute(SELECT_VERSION, (append.stream_id,)).fetchone()
                current = current or 0
                if current != append.expected_version:
                    append.error = ConcurrencyError(append.stream_id, append.expected_version, current)
                    continue
                conn.executemany(INSERT_EVENT, append.rows)


class SQLiteEventStore(EventStore):
    """Event streams in one SQLite file; see the module docstring for the guarantees."""

    def __init__(self, path: str | os.PathLike[str] | SQLiteConnection) -> None:
        self.db = path if isinstance(path, SQLiteConnection) else SQLiteConnection(path)
        self._committer = _GroupCommitter(self.db)

    def append(self, stream_id: str, events: Sequence[NewEvent], *, expected_version: int) -> int:
        check_append(stream_id, events, expected_version)
        rows = [
            (
                stream_id,
                expected_version + offset,
                event.event_id.bytes,
                event.type_name,
                event.schema_version,
                event.data,
                event.metadata,
                to_micros(event.recorded_at),
            )
            for offset, event in enumerate(events, start=1)
        ]
        return self._committer.submit(_Append(stream_id, expected_version, rows))

    def read(
        self,
        stream_id: str,
        *,
        gt: int = 0,
        lte: int | None = None,
        limit: int | None = None,
        desc: bool = False,
    ) -> list[StoredEvent]:
        check_read(gt, lte, limit)
        sql = (
            "SELECT position, event_id, type_name, schema_version, data, metadata, recorded_at"
            " FROM events WHERE stream_id = ? AND position > ?"
        )
        params: list[object] = [stream_id, gt]
        if lte is not None:
            sql += " AND position <= ?"
            params.append(lte)
        sql += " ORDER BY position DESC" if desc else " ORDER BY position"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        conn = self.db.get()
        with translate_errors():
            rows = conn.execute(sql, params).fetchall()
        return [_row_to_event(stream_id, row) for row in rows]

    def version(self, stream_id: str) -> int:
        conn = self.db.get()
        with translate_errors():
            (current,) = conn.execute(SELECT_VERSION, (stream_id,)).fetchone()
        return int(current or 0)

    def recorded_times(self, stream_id: str, positions: Sequence[int]) -> dict[int, datetime]:
        marks = ",".join("?" * len(positions))
        conn = self.db.get()
        with translate_errors():
            rows = conn.execute(
                f"SELECT position, recorded_at FROM events WHERE stream_id = ? AND position IN ({marks})",
                (stream_id, *positions),
            ).fetchall()
        return {position: from_micros(at) for position, at in rows}

    #: after a failed append, how long ``ping`` reports the failure unless an append succeeds meanwhile
    FAILURE_MEMORY = 30.0
    #: ``ping`` proves a write at most this often (seconds); in between it checks the file only
    PROBE_EVERY = 1.0
    _probed_at = float("-inf")

    def ping(self) -> None:
        """Check that the store's file is still its own and takes a durable write (one row, rewritten).

        A recent failed append (full disk, I/O error) with no successful one since also fails
        the check: a probe of one small row can slip into the last free bytes that an append
        did not fit in.
        """
        failed_at = self._committer.failed_at
        if failed_at is not None and time.monotonic() - failed_at < self.FAILURE_MEMORY:
            raise StoreUnavailable(f"the last append to {self.db.path!r} failed: {self._committer.failure}")
        self.db.check_file()
        if time.monotonic() - self._probed_at < self.PROBE_EVERY:
            return  # a write proven this recently: probes cannot be used to load the write lock
        with self.db.transaction(immediate=True) as conn:
            conn.execute("INSERT OR REPLACE INTO eskit_health (id, checked_at) VALUES (1, ?)", (time.time_ns(),))
        self._probed_at = time.monotonic()

    def close(self) -> None:
        self.db.close()


class SQLiteSnapshotStore(SnapshotStore):
    """Snapshots in the same SQLite file (or another), newest found by index."""

    def __init__(self, path: str | os.PathLike[str] | SQLiteConnection) -> None:
        self.db = path if isinstance(path, SQLiteConnection) else SQLiteConnection(path)

    def save(self, snapshot: Snapshot) -> None:
        with self.db.transaction(immediate=True) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO snapshots (stream_id, version, type_name, schema_version,"
                " state, recorded_at) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    snapshot.stream_id,
                    snapshot.version,
                    snapshot.type_name,
                    snapshot.schema_version,
                    snapshot.state,
                    to_micros(snapshot.recorded_at),
                ),
            )

    def load(self, stream_id: str, *, lte: int | None = None) -> Snapshot | None:
        sql = (
            "SELECT version, type_name, schema_version, state, recorded_at FROM snapshots"
            " WHERE stream_id = ? AND version <= ? ORDER BY version DESC LIMIT 1"
        )
        conn = self.db.get()
        with translate_errors():
            row = conn.execute(sql, (stream_id, lte if lte is not None else 2**62)).fetchone()
        if row is None:
            return None
        version, type_name, schema_version, state, recorded_at = row
        return Snapshot(
            stream_id=stream_id,
            version=version,
            type_name=type_name,
            schema_version=schema_version,
            state=bytes(state),
            recorded_at=from_micros(recorded_at),
        )

    def close(self) -> None:
        self.db.close()
