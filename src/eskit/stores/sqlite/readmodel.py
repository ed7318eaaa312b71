"""Read models in a SQLite file of their own, each projection's rows and checkpoint changed in one transaction.

The file sits beside the event store's (so read models never take the store's
write lock) and holds, besides the projections' tables:

* ``checkpoints``: per projection version, the feed sequence applied up to;
* ``versions``: which version of each projection answers reads (a rebuild fills
  a new version while the old one serves, then switches);
* ``leases``: which runner may apply, with a fencing token that grows with every
  change of holder. :meth:`SQLiteProjection.apply` checks, in the transaction
  that writes, that the checkpoint is still where the batch starts (so two
  runners cannot both apply it) and, when the projection was given a token, that
  the token is still the lease's (so a runner that was paused past its lease
  cannot write at all);
* ``store_identity``: the id of the store the read models follow (see
  :meth:`SQLiteReadModels.follow`): read models never follow a store from a
  position that store never reached;
* ``skipped``: per projection version, the streams it skips because it cannot
  apply them (:class:`~eskit.projection.SkippedStream`), changed in the same
  transaction as the checkpoint, so a skip is recorded exactly when the
  checkpoint moves past it.

A batch is applied whole when it can be. When it raises an error the events'
own content causes (:func:`~eskit.projection.cannot_apply`), it is undone and
applied again event by event, each in a savepoint: the event that fails is
undone alone, its stream is recorded as skipped, and the rest goes on.
"""

from __future__ import annotations

import abc
import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from eskit.exceptions import DamagedEvent, EskitError
from eskit.ports import FeedEvent
from eskit.projection import (
    MAX_SKIPPED_STREAMS,
    CheckpointMoved,
    ProjectionTarget,
    SkippedStream,
    TooManySkipped,
    cannot_apply,
)
from eskit.stores.sqlite.connection import SQLiteConnection, translate_errors

__all__ = ["LeaseLost", "SQLiteProjection", "SQLiteReadModels"]

log = logging.getLogger(__name__)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS checkpoints (name TEXT PRIMARY KEY, seq INTEGER NOT NULL, updated_at INTEGER)",
    "CREATE TABLE IF NOT EXISTS versions (name TEXT PRIMARY KEY, active INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, token INTEGER NOT NULL,"
    " expires_at REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS skipped (name TEXT NOT NULL, stream_id TEXT NOT NULL, position INTEGER NOT NULL,"
    " sequence INTEGER, events INTEGER NOT NULL, error TEXT NOT NULL, PRIMARY KEY (name, stream_id))",
    "CREATE TABLE IF NOT EXISTS store_identity (id INTEGER PRIMARY KEY CHECK (id = 1), store_id TEXT NOT NULL)",
)
#: the read-model file's own tables; every other table is a projection version's
_OWN_TABLES = frozenset({"checkpoints", "versions", "leases", "skipped", "store_identity"})

#: errors of SQLite's that an event's values cause (a constraint or a type they break): skipped, not retried
_DATA_ERRORS: tuple[type[Exception], ...] = (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError)
#: how much of an error's text a skip keeps
_ERROR_CHARS = 500


class LeaseLost(EskitError):
    """The runner's lease was taken over: it must not apply anything more."""


class SQLiteReadModels:
    """The read-model file: opened (and created) on first use, shared by threads and processes."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.db = SQLiteConnection(path, create=True, event_store=False)
        self._ready = False

    def connection(self) -> sqlite3.Connection:
        conn = self.db.get()
        if not self._ready:
            with translate_errors():
                for statement in _SCHEMA:
                    conn.execute(statement)
            self._ready = True
        return conn

    def active_version(self, name: str) -> int:
        """The version of projection ``name`` that answers reads (1 until a rebuild switches)."""
        with translate_errors():
            row = self.connection().execute("SELECT active FROM versions WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 1

    def switch(self, name: str, version: int) -> None:
        """Make ``version`` the one that answers reads."""
        self.connection()
        with self.db.transaction(immediate=True) as conn:
            conn.execute("INSERT OR REPLACE INTO versions (name, active) VALUES (?, ?)", (name, version))

    def acquire_lease(self, name: str, holder: str, *, ttl: float) -> int | None:
        """Take or renew lease ``name`` for ``holder``; return its fencing token, or None while another holds it."""
        self.connection()
        now = time.time()
        with self.db.transaction(immediate=True) as conn:
            row = conn.execute("SELECT holder, token, expires_at FROM leases WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] != holder and row[2] > now:
                return None
            token = int(row[1]) if row is not None and row[0] == holder else (int(row[1]) + 1 if row else 1)
            conn.execute(
                "INSERT OR REPLACE INTO leases (name, holder, token, expires_at) VALUES (?, ?, ?, ?)",
                (name, holder, token, now + ttl),
            )
        return token

    # -- which store the read models follow -------------------------------------------

    def relation(self, store_id: str, head: int) -> str:
        """How this file stands to the store with ``store_id`` whose feed's head is ``head``.

        ``same``: it follows that store. ``adopt``: it names no store (made before stores had an
        identity, or new) and no checkpoint is past ``head``, so it can be that store's. ``other``:
        it follows another store, or a checkpoint is past ``head``, a position the store never
        reached (a store made anew, or put back from an older copy of its file).
        """
        conn = self.connection()
        with translate_errors():
            row = conn.execute("SELECT store_id FROM store_identity WHERE id = 1").fetchone()
            (highest,) = conn.execute("SELECT max(seq) FROM checkpoints").fetchone()
        if (highest or 0) > head or (row is not None and row[0] != store_id):
            return "other"
        return "same" if row is not None else "adopt"

    def follow(self, store_id: str, head: int) -> bool:
        """Make this file follow the store with ``store_id``; True when it had to be emptied for that.

        A file that names no store and is not past ``head`` adopts the store as it stands; a file
        of another store, or past ``head``, loses every projection's tables, checkpoints, versions
        and skips (the projections then fill again from the store's first event) and takes the
        store's id. In one write transaction, so of several processes one does it.
        """
        if self.relation(store_id, head) == "same":
            return False
        with self.db.transaction(immediate=True) as conn:
            row = conn.execute("SELECT store_id FROM store_identity WHERE id = 1").fetchone()
            (highest,) = conn.execute("SELECT max(seq) FROM checkpoints").fetchone()
            emptied = (highest or 0) > head or (row is not None and row[0] != store_id)
            if row is not None and not emptied:
                return False  # another process did it meanwhile
            if emptied:
                tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
                for table in tables:
                    if table not in _OWN_TABLES and not table.startswith("sqlite_"):
                        conn.execute(f'DROP TABLE IF EXISTS "{table}"')
                for own in ("checkpoints", "versions", "skipped"):
                    conn.execute(f"DELETE FROM {own}")
            conn.execute("INSERT OR REPLACE INTO store_identity (id, store_id) VALUES (1, ?)", (store_id,))
        if emptied:
            log.warning(
                "the read models in %s were built from another store: emptied, they are built again from this "
                "store's first event",
                self.db.path,
            )
        return emptied

    def release_lease(self, name: str, holder: str) -> None:
        self.connection()
        with self.db.transaction(immediate=True) as conn:
            conn.execute("UPDATE leases SET expires_at = 0 WHERE name = ? AND holder = ?", (name, holder))

    def close(self) -> None:
        self.db.close()


class SQLiteProjection(ProjectionTarget):
    """A projection whose tables live in a :class:`SQLiteReadModels` file.

    Subclasses set ``name``, give their tables' DDL (:meth:`tables`, with ``{p}``
    for the version's table prefix) and apply a batch (:meth:`handle`) with the
    connection of the transaction that also moves the checkpoint.
    """

    name: str = ""

    def __init__(
        self, models: SQLiteReadModels, *, version: int | None = None, lease: tuple[str, int] | None = None
    ) -> None:
        self.models = models
        self.version = version if version is not None else models.active_version(self.name)
        #: (lease name, fencing token): when set, a batch is applied only while the token is the lease's
        self.lease = lease
        self._created = False

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def prefix(self) -> str:
        return f"{self.name}_v{self.version}_"

    @abc.abstractmethod
    def tables(self) -> Sequence[str]:
        """The DDL of this projection's tables, ``{p}`` standing for :attr:`prefix`."""

    @abc.abstractmethod
    def handle(self, conn: sqlite3.Connection, events: Sequence[FeedEvent]) -> None:
        """Apply ``events`` to the tables, inside the transaction that moves the checkpoint."""

    def _ensure_tables(self) -> None:
        if self._created:
            return
        self.models.connection()
        with self.models.db.transaction(immediate=True) as conn:
            for ddl in self.tables():
                conn.execute(ddl.format(p=self.prefix))
        self._created = True

    def query(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read on this version's tables, ``[]`` before they exist; never takes the write lock."""
        conn = self.models.connection()
        with translate_errors():
            if not self._created:
                (found,) = conn.execute(
                    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND substr(name, 1, ?) = ?",
                    (len(self.prefix), self.prefix),
                ).fetchone()
                if not found:
                    return []
            return [tuple(row) for row in conn.execute(sql, params).fetchall()]

    def checkpoint(self) -> int:
        with translate_errors():
            row = self.models.connection().execute("SELECT seq FROM checkpoints WHERE name = ?", (self.key,)).fetchone()
        return int(row[0]) if row else 0

    def _begin(self, conn: sqlite3.Connection, after: int) -> None:
        """In the writing transaction: the lease is still ours and the checkpoint still at ``after``."""
        if self.lease is not None:
            lease_name, token = self.lease
            row = conn.execute("SELECT token FROM leases WHERE name = ?", (lease_name,)).fetchone()
            if row is None or int(row[0]) != token:
                raise LeaseLost(f"lease {lease_name!r} is held with another token: stopping")
        row = conn.execute("SELECT seq FROM checkpoints WHERE name = ?", (self.key,)).fetchone()
        current = int(row[0]) if row else 0
        if current != after:
            raise CheckpointMoved(f"{self.key} is at {current}, the batch follows {after}")

    def _move(self, conn: sqlite3.Connection, sequence: int) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO checkpoints (name, seq, updated_at) VALUES (?, ?, ?)",
            (self.key, sequence, time.time_ns()),
        )

    def apply(self, events: Sequence[FeedEvent], *, after: int) -> None:
        if not events:
            return
        self._ensure_tables()
        with self.models.db.transaction(immediate=True) as conn:
            self._begin(conn, after)
            skipping = {
                str(row[0]) for row in conn.execute("SELECT stream_id FROM skipped WHERE name = ?", (self.key,))
            }
            todo = [e for e in events if e.event.stream_id not in skipping]
            self._count_skipped(conn, [e for e in events if e.event.stream_id in skipping])
            conn.execute("SAVEPOINT eskit_batch")
            try:
                self.handle(conn, todo)
            except Exception as exc:
                conn.execute("ROLLBACK TO eskit_batch")
                conn.execute("RELEASE eskit_batch")
                if not cannot_apply(exc, _DATA_ERRORS):
                    raise
                self._one_by_one(conn, todo, skipping)
            else:
                conn.execute("RELEASE eskit_batch")
            self._move(conn, events[-1].sequence)

    def _one_by_one(self, conn: sqlite3.Connection, events: Sequence[FeedEvent], skipping: set[str]) -> None:
        """Apply ``events`` each in a savepoint; skip the stream of one that cannot be applied, from it on."""
        for item in events:
            stream = item.event.stream_id
            if stream in skipping:
                self._count_skipped(conn, [item])
                continue
            conn.execute("SAVEPOINT eskit_event")
            try:
                self.handle(conn, [item])
            except Exception as exc:
                conn.execute("ROLLBACK TO eskit_event")
                conn.execute("RELEASE eskit_event")
                if not cannot_apply(exc, _DATA_ERRORS):
                    raise
                self._skip(conn, item.event.stream_id, item.event.position, item.sequence, exc)
                skipping.add(stream)
                continue
            conn.execute("RELEASE eskit_event")

    def _skip(self, conn: sqlite3.Connection, stream_id: str, position: int, sequence: int, exc: Exception) -> None:
        (held,) = conn.execute("SELECT count(*) FROM skipped WHERE name = ?", (self.key,)).fetchone()
        if held >= MAX_SKIPPED_STREAMS:
            raise TooManySkipped(
                f"{self.key}: more than {MAX_SKIPPED_STREAMS} streams cannot be applied (the last, {stream_id}@"
                f"{position}: {type(exc).__name__}: {exc}): this looks like a fault of the projection's code, not "
                "damage; fix it, then rebuild"
            )
        error = f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS]
        log.warning("projection %s skips stream %s from position %d: %s", self.key, stream_id, position, error)
        conn.execute(
            "INSERT INTO skipped (name, stream_id, position, sequence, events, error) VALUES (?, ?, ?, ?, 1, ?)",
            (self.key, stream_id, position, sequence, error),
        )

    def _count_skipped(self, conn: sqlite3.Connection, events: Sequence[FeedEvent]) -> None:
        for item in events:
            conn.execute(
                "UPDATE skipped SET events = events + 1 WHERE name = ? AND stream_id = ?",
                (self.key, item.event.stream_id),
            )

    def skip_unreadable(self, damaged: DamagedEvent, *, after: int) -> None:
        assert damaged.sequence == after + 1
        self._ensure_tables()
        with self.models.db.transaction(immediate=True) as conn:
            self._begin(conn, after)
            known = conn.execute(
                "SELECT 1 FROM skipped WHERE name = ? AND stream_id = ?", (self.key, damaged.stream_id)
            ).fetchone()
            if known:
                conn.execute(
                    "UPDATE skipped SET events = events + 1 WHERE name = ? AND stream_id = ?",
                    (self.key, damaged.stream_id),
                )
            else:
                self._skip(conn, damaged.stream_id, damaged.position, damaged.sequence, damaged)
            self._move(conn, damaged.sequence)

    def skipped(self) -> list[SkippedStream]:
        rows = self.query(
            "SELECT stream_id, position, events, error, sequence FROM skipped WHERE name = ? ORDER BY sequence",
            (self.key,),
        )
        return [SkippedStream(str(s), int(p), int(n), str(e), None if q is None else int(q)) for s, p, n, e, q in rows]

    def drop(self) -> None:
        """Remove this version's tables and checkpoint (an old version after a rebuild switched)."""
        self.models.connection()
        with self.models.db.transaction(immediate=True) as conn:
            names = conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND substr(name, 1, ?) = ?",
                (len(self.prefix), self.prefix),
            ).fetchall()
            for (table,) in names:
                conn.execute(f'DROP TABLE IF EXISTS "{table}"')
            conn.execute("DELETE FROM checkpoints WHERE name = ?", (self.key,))
            conn.execute("DELETE FROM skipped WHERE name = ?", (self.key,))
