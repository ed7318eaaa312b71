"""The SQLite connection: one per thread, WAL, durable commits, and a file that cannot vanish.

Durability: every connection runs ``journal_mode=WAL`` with ``synchronous=FULL``,
so a committed transaction is fsynced to the write-ahead log before the commit
returns; it survives a crash of the process and of the machine. ``busy_timeout``
makes a writer wait for the database's one write lock instead of failing.

The file: a connection records the database file's identity (device and inode)
when it first opens it and checks it again before every write commit and on
ping. A file that was removed or replaced while the store runs makes every write
fail with :class:`~eskit.exceptions.StoreUnavailable` instead of going, unnoticed,
into a new empty database; the file is created only by the first open of a
connection made with ``create=True``, never later.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from eskit.exceptions import (
    InterfaceError,
    OperationalError,
    SchemaError,
    StoreError,
    StoreUnavailable,
)
from eskit.stores.sqlite.migrations import add_feed_sequence, snapshots_in_rowid_table
from eskit.stores.sqlite.schema import PRAGMAS, SCHEMA, SELECT_STORE_ID

__all__ = ["SQLiteConnection", "translate_errors"]


class SQLiteConnection:
    """One connection per thread (and per process, after a fork) to one database file.

    ``create`` allows the first open to create the file; every later open, and
    every open when ``create`` is false, requires the file to exist already.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        event_store: bool = True,
        durable: bool = True,
        secure_delete: bool = False,
    ) -> None:
        self.path = str(path)
        self.create = create
        self.event_store = event_store  # False: a file of read models, without the event store's tables
        #: False: ``synchronous=NORMAL`` (a crash may lose the newest commits, whole): for derived data only
        self.durable = durable
        #: True: what a write deletes or replaces is overwritten with zeros (``PRAGMA secure_delete``), never
        #: left in free space: for files that hold personal data a member may have erased
        self.secure_delete = secure_delete
        #: the last failed write to the file by the store's writers (appends, keys), as (monotonic time,
        #: what failed), cleared by one that succeeds: what the event store's ``ping`` reports
        self.failed_write: tuple[float, str] | None = None
        self._local = threading.local()
        self._closed = False
        self._schema_ready = False
        self._schema_lock = threading.Lock()
        self._identity: tuple[int, int] | None = None
        #: told the seconds each write transaction's COMMIT took (with ``synchronous=FULL``, the fsync)
        self.commit_observer: Callable[[float], None] | None = None

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
                    if self.event_store and not self._schema_ready:
                        self._refuse_foreign(conn)  # before the pragmas: WAL mode would change the file
                    for pragma in PRAGMAS:
                        conn.execute(pragma)
                    if not self.durable:
                        conn.execute("PRAGMA synchronous=NORMAL")
                    if self.secure_delete:
                        conn.execute("PRAGMA secure_delete=ON")
                    with self._schema_lock:
                        if not self._schema_ready:
                            if self.event_store:
                                for statement in SCHEMA:
                                    conn.execute(statement)
                                add_feed_sequence(conn, path=self.path)
                                snapshots_in_rowid_table(conn, path=self.path)
                                _give_identity(conn)
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

    def _refuse_foreign(self, conn: sqlite3.Connection) -> None:
        """Refuse a file that holds tables but not the event store's: another application's database."""
        tables = sorted(row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'"))
        if tables and "events" not in tables:
            shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
            raise SchemaError(
                f"{self.path!r} is not an eskit store: it holds other tables ({shown}); name a store's file, "
                "or a file that does not exist yet"
            )

    @contextmanager
    def all_or_nothing(self) -> Iterator[None]:
        """Make every transaction of this thread inside the block part of one, committed when it ends.

        The block takes the write lock at once and keeps it; a transaction inside it is a
        savepoint of the block's (a failed one is undone alone, as it would be on its own). If
        the block raises, nothing it wrote stays. Other writers wait for the lock meanwhile (and
        fail after the busy timeout), so it is for bulk loads into a store nothing else writes to.
        """
        if getattr(self._local, "outer", False):
            raise InterfaceError("an all-or-nothing block is already open in this thread")
        conn = self.get()
        with translate_errors():
            conn.execute("BEGIN IMMEDIATE")
        self._local.outer = True
        try:
            yield
            self.check_file()  # never commit into a file that is not the store's any more
            with translate_errors():
                conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        finally:
            self._local.outer = False
        with contextlib.suppress(sqlite3.Error):  # a large load leaves a large log: give the space back
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    @contextmanager
    def transaction(self, *, immediate: bool = False) -> Iterator[sqlite3.Connection]:
        """Run the block in one transaction; driver errors become eskit errors.

        Inside :meth:`all_or_nothing` the block is a savepoint of the enclosing transaction.
        """
        conn = self.get()
        if getattr(self._local, "outer", False):
            with translate_errors():
                conn.execute("SAVEPOINT eskit_step")
                try:
                    yield conn
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK TO eskit_step")
                        conn.execute("RELEASE eskit_step")
                    raise
                conn.execute("RELEASE eskit_step")
            return
        with translate_errors():
            conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            try:
                yield conn
                if immediate:
                    self.check_file()  # never commit into a file that is not the store's any more
                observer = self.commit_observer
                if observer is None or not immediate:
                    conn.execute("COMMIT")
                else:
                    started = time.perf_counter()
                    conn.execute("COMMIT")
                    observer(time.perf_counter() - started)
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


def _give_identity(conn: sqlite3.Connection) -> None:
    """Write the store's id if it has none (a new file, or one made before ids): once, never changed."""
    if conn.execute(SELECT_STORE_ID).fetchone() is None:
        # OR IGNORE: two processes opening a new file at once both try; the first one's id stays.
        conn.execute("INSERT OR IGNORE INTO eskit_store (name, value) VALUES ('store_id', ?)", (uuid.uuid4().hex,))


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
