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
  cannot write at all).
"""

from __future__ import annotations

import abc
import os
import sqlite3
import time
from collections.abc import Sequence
from typing import Any

from eskit.exceptions import EskitError
from eskit.ports import FeedEvent
from eskit.projection import CheckpointMoved, ProjectionTarget
from eskit.stores.sqlite.connection import SQLiteConnection, translate_errors

__all__ = ["LeaseLost", "SQLiteProjection", "SQLiteReadModels"]

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS checkpoints (name TEXT PRIMARY KEY, seq INTEGER NOT NULL, updated_at INTEGER)",
    "CREATE TABLE IF NOT EXISTS versions (name TEXT PRIMARY KEY, active INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, token INTEGER NOT NULL,"
    " expires_at REAL NOT NULL)",
)


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

    def apply(self, events: Sequence[FeedEvent], *, after: int) -> None:
        if not events:
            return
        self._ensure_tables()
        with self.models.db.transaction(immediate=True) as conn:
            if self.lease is not None:
                lease_name, token = self.lease
                row = conn.execute("SELECT token FROM leases WHERE name = ?", (lease_name,)).fetchone()
                if row is None or int(row[0]) != token:
                    raise LeaseLost(f"lease {lease_name!r} is held with another token: stopping")
            row = conn.execute("SELECT seq FROM checkpoints WHERE name = ?", (self.key,)).fetchone()
            current = int(row[0]) if row else 0
            if current != after:
                raise CheckpointMoved(f"{self.key} is at {current}, the batch follows {after}")
            self.handle(conn, events)
            conn.execute(
                "INSERT OR REPLACE INTO checkpoints (name, seq, updated_at) VALUES (?, ?, ?)",
                (self.key, events[-1].sequence, time.time_ns()),
            )

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
