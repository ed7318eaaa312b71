"""Denial logs: in memory, in a SQLite file beside the store's, and in the Cassandra keyspace.

Each keeps an account's newest denials up to a bound, newest first, with an
opaque cursor for paging. None of them touches the account's stream, so a flood
of denied commands can never make an accepted one conflict and retry.

Every record is bounded whatever the refused request said: its message and
request id are cut to :data:`MAX_DENIAL_TEXT` characters and its arguments and
details to :data:`MAX_DENIAL_FIELD_BYTES` of JSON each, with a marker that says
so. A page is bounded in count and in bytes (:data:`PAGE_BYTES`).

A denial is the member's personal data: given a :class:`KeySealer`, a log keeps
each record sealed with the member's own key (what it says cannot be read once
the key is erased), and :meth:`forget` removes an erased account's records (on
SQLite overwriting them with zeros). Records kept in clear before sealing are
read as they are.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import random
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from downloads.application.ports import Denial, DenialLog, InvalidCursor, Sealer
from eskit.privacy import DataKey, ErasedKey, KeyCache
from eskit.stores.sqlite import SQLiteConnection
from eskit.stores.sqlite.connection import translate_errors

__all__ = [
    "MAX_DENIAL_FIELD_BYTES",
    "MAX_DENIAL_TEXT",
    "PAGE_BYTES",
    "CassandraDenialLog",
    "InMemoryDenialLog",
    "KeySealer",
    "SQLiteDenialLog",
    "capped",
    "denial_log_path",
]

#: the most characters of a denial's message or request id that are kept
MAX_DENIAL_TEXT = 500
#: the most bytes of JSON a denial's arguments, or its details, are kept in
MAX_DENIAL_FIELD_BYTES = 2048
#: how many bytes of stored denials one page holds at most (it always holds one)
PAGE_BYTES = 256 * 1024

#: how much of an over-long field's JSON its marker keeps (escaped again inside the marker, at most double)
_HEAD_BYTES = 900


def _capped_text(text: str) -> str:
    if len(text) <= MAX_DENIAL_TEXT:
        return text
    return f"{text[:MAX_DENIAL_TEXT]}… (truncated, {len(text)} characters)"


def _capped_field(value: dict[str, Any]) -> dict[str, Any]:
    encoded = orjson.dumps(value, option=orjson.OPT_UTC_Z, default=str)
    if len(encoded) <= MAX_DENIAL_FIELD_BYTES:
        return value
    head = encoded[:_HEAD_BYTES].decode("utf-8", errors="ignore")  # a character cut in two is dropped
    return {"_truncated": True, "bytes": len(encoded), "head": head}


def capped(denial: Denial) -> Denial:
    """``denial`` with its free parts cut to the caps, each cut part marked (unchanged when under them).

    A field over its cap becomes ``{"_truncated": true, "bytes": <its JSON size>, "head": <the
    start of its JSON>}``; a text ends with ``… (truncated, N characters)``. Arguments cut so
    cannot be decided again: what-if reports such a command as not re-decidable.
    """
    return replace(
        denial,
        args=_capped_field(denial.args),
        details=_capped_field(denial.details),
        message=_capped_text(denial.message),
        request_id=_capped_text(denial.request_id) if denial.request_id is not None else None,
    )


_SEALED = b"\xffdenial-sealed-1\x00"


class KeySealer(Sealer):
    """Seals denial records with the member's own key (``account-<id>``'s), from a cache of keys."""

    def __init__(self, keys: KeyCache, *, prefix: str = "account-") -> None:
        self.keys, self.prefix = keys, prefix

    def seal(self, account_id: str, body: bytes) -> bytes:
        key = self.keys.key(self.prefix + account_id, create=True)
        if not isinstance(key, DataKey):  # erased: the service refuses such an account before any denial
            raise ValueError(f"the key of account {account_id!r} was erased: nothing about it is recorded")
        return _SEALED + key.seal(body, _aad(account_id))

    def open(self, account_id: str, body: bytes) -> bytes | None:
        if not body.startswith(_SEALED):
            return body  # recorded in clear, before denials were sealed
        key = self.keys.key(self.prefix + account_id)
        if isinstance(key, ErasedKey) or key is None:
            return None
        try:
            return key.open(body[len(_SEALED) :], _aad(account_id))
        except ValueError:
            return None  # sealed for another account: not this account's to show

    def forget(self, account_id: str) -> None:
        self.keys.forget(self.prefix + account_id)


def _aad(account_id: str) -> bytes:
    return b"denial\x00" + account_id.encode("utf-8")


def _page(
    rows: Iterable[tuple[str, bytes]], limit: int, opened: Callable[[bytes], bytes | None] = lambda b: b
) -> tuple[list[Denial], str | None]:
    """From ``rows`` (cursor, stored body), newest first: a page of at most ``limit`` denials and
    :data:`PAGE_BYTES` (at least one), and the cursor to go on from when more rows follow it.
    A body that does not open (its key was erased) is left out."""
    bodies: list[bytes] = []
    used = 0
    last: str | None = None
    for cursor, body in rows:
        if len(bodies) == limit or (bodies and used + len(body) > PAGE_BYTES):
            return _decoded(bodies, opened), last
        bodies.append(body)
        used += len(body)
        last = cursor
    return _decoded(bodies, opened), None


def _decoded(bodies: list[bytes], opened: Callable[[bytes], bytes | None]) -> list[Denial]:
    return [_decode(body) for raw in bodies if (body := opened(raw)) is not None]


def _counter_cursor(after: str | None) -> int | None:
    """The id below which a page of the memory or SQLite log starts (None: from the newest)."""
    if after is None:
        return None
    if not (after.isascii() and after.isdigit()):
        raise InvalidCursor(f"{after!r} is not a cursor of this denial log")
    return min(int(after), 2**62)


def _encode(denial: Denial) -> bytes:
    denial = capped(denial)
    return orjson.dumps(
        {
            "at": denial.at,
            "command": denial.command,
            "args": denial.args,
            "code": denial.code,
            "message": denial.message,
            "details": denial.details,
            "request_id": denial.request_id,
            "version": denial.version,
        },
        option=orjson.OPT_UTC_Z,
        default=str,
    )


def _decode(data: bytes) -> Denial:
    value: dict[str, Any] = orjson.loads(data)
    return Denial(
        at=datetime.fromisoformat(value["at"]),
        command=value["command"],
        args=value["args"],
        code=value["code"],
        message=value["message"],
        details=value["details"],
        request_id=value["request_id"],
        version=value.get("version"),
    )


class InMemoryDenialLog(DenialLog):
    """Denials in this process (memory stores, tests)."""

    def __init__(self, *, kept: int = 1000, sealer: Sealer | None = None) -> None:
        self.kept = kept
        self.sealer = sealer
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._by_account: dict[str, collections.deque[tuple[int, bytes]]] = {}

    def record(self, account_id: str, denial: Denial) -> None:
        body = _sealed(self.sealer, account_id, _encode(denial))
        with self._lock:
            held = self._by_account.setdefault(account_id, collections.deque(maxlen=self.kept))
            held.append((next(self._ids), body))

    def page(self, account_id: str, *, after: str | None, limit: int) -> tuple[list[Denial], str | None]:
        below = _counter_cursor(after)
        with self._lock:
            rows = [r for r in reversed(self._by_account.get(account_id, ())) if below is None or r[0] < below]
        return _page(((str(n), body) for n, body in rows), limit, _opener(self.sealer, account_id))

    def forget(self, account_id: str) -> None:
        with self._lock:
            self._by_account.pop(account_id, None)
        if self.sealer is not None:
            self.sealer.forget(account_id)

    def close(self) -> None:
        """Nothing to release."""


def _sealed(sealer: Sealer | None, account_id: str, body: bytes) -> bytes:
    return body if sealer is None else sealer.seal(account_id, body)


def _opener(sealer: Sealer | None, account_id: str) -> Callable[[bytes], bytes | None]:
    if sealer is None:
        return lambda body: body
    return lambda body: sealer.open(account_id, body)


def denial_log_path(store_path: str) -> Path:
    """``x.denials.db`` beside a store's ``x.db``."""
    path = Path(store_path)
    return path.with_name(path.stem + ".denials" + (path.suffix or ".db"))


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS denials (id INTEGER PRIMARY KEY AUTOINCREMENT, account_id TEXT NOT NULL,"
    " body BLOB NOT NULL)",
    "CREATE INDEX IF NOT EXISTS denials_by_account ON denials (account_id, id)",
)


class SQLiteDenialLog(DenialLog):
    """Denials in their own SQLite file: its write lock is not the store's, so denials never slow appends."""

    def __init__(self, path: str | Path, *, kept: int = 1000, sealer: Sealer | None = None) -> None:
        self.kept = kept
        self.sealer = sealer
        self.db = SQLiteConnection(path, create=True, event_store=False)
        self._ready = False  # the file is made by the first denial or read, not by opening the log

    def _schema(self) -> None:
        if not self._ready:
            with self.db.transaction(immediate=True) as conn:
                for statement in _SCHEMA:
                    conn.execute(statement)
            self._ready = True

    def record(self, account_id: str, denial: Denial) -> None:
        body = _sealed(self.sealer, account_id, _encode(denial))
        self._schema()
        with self.db.transaction(immediate=True) as conn:
            conn.execute("INSERT INTO denials (account_id, body) VALUES (?, ?)", (account_id, body))
            oldest_kept = conn.execute(
                "SELECT id FROM denials WHERE account_id = ? ORDER BY id DESC LIMIT 1 OFFSET ?",
                (account_id, self.kept - 1),
            ).fetchone()
            if oldest_kept is not None:
                conn.execute("DELETE FROM denials WHERE account_id = ? AND id < ?", (account_id, oldest_kept[0]))

    def page(self, account_id: str, *, after: str | None, limit: int) -> tuple[list[Denial], str | None]:
        below = _counter_cursor(after)
        if not self._ready and not Path(self.db.path).exists():
            return [], None  # nothing was ever denied here: reading makes no file
        self._schema()
        conn = self.db.get()
        with translate_errors():
            rows = conn.execute(
                "SELECT id, body FROM denials WHERE account_id = ? AND id < ? ORDER BY id DESC LIMIT ?",
                (account_id, 2**62 if below is None else below, limit + 1),
            )
            # Read row by row: a page cut by its byte budget reads no further than the row after it.
            return _page(((str(n), bytes(body)) for n, body in rows), limit, _opener(self.sealer, account_id))

    def forget(self, account_id: str) -> None:
        if self.sealer is not None:
            self.sealer.forget(account_id)
        if not self._ready and not Path(self.db.path).exists():
            return
        self._schema()
        conn = self.db.get()
        with translate_errors():
            conn.execute("PRAGMA secure_delete = ON")  # records kept in clear before sealing: zeros, not free space
        try:
            with self.db.transaction(immediate=True) as tx:
                tx.execute("DELETE FROM denials WHERE account_id = ?", (account_id,))
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA secure_delete = OFF")
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        self.db.close()


class CassandraDenialLog(DenialLog):
    """Denials in the keyspace, one partition per account, newest first, each kept at most 90 days.

    The count bound is kept by a range delete below the account's ``kept``-th newest
    denial, run on about one record in 20 (so a partition holds at most about
    ``kept + 20`` rows), instead of a read on every record.
    """

    TTL = 90 * 86400

    def __init__(self, connection: Any, *, kept: int = 1000, sealer: Sealer | None = None) -> None:
        """``connection``: the store's :class:`~eskit.stores.cassandra.session.CassandraSession` (retries, errors)."""
        self.kept = kept
        self.sealer = sealer
        self.db = connection
        session = connection.session
        keyspace = connection.settings.keyspace
        table = f"{keyspace}.denials"
        known = session.cluster.metadata.keyspaces.get(keyspace)
        if known is None or "denials" not in known.tables:
            # Made once, by the first process of a deployment that needs it; schema changes are not
            # free of races between clients, so a process that finds the table leaves it alone.
            session.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (account_id text, id timeuuid, body blob,"
                " PRIMARY KEY (account_id, id)) WITH CLUSTERING ORDER BY (id DESC)",
                timeout=60,
            )
            session.cluster.control_connection.wait_for_schema_agreement(wait_time=60)
        self._insert = connection.prepare(
            f"INSERT INTO {table} (account_id, id, body) VALUES (?, ?, ?) USING TTL {self.TTL}"
        )
        self._nth = connection.prepare(f"SELECT id FROM {table} WHERE account_id = ? LIMIT ?")
        self._prune = connection.prepare(f"DELETE FROM {table} WHERE account_id = ? AND id < ?")
        self._first = connection.prepare(f"SELECT id, body FROM {table} WHERE account_id = ? LIMIT ?")
        self._next = connection.prepare(f"SELECT id, body FROM {table} WHERE account_id = ? AND id < ? LIMIT ?")
        self._forget = connection.prepare(f"DELETE FROM {table} WHERE account_id = ?")

    def record(self, account_id: str, denial: Denial) -> None:
        body = _sealed(self.sealer, account_id, _encode(denial))
        self.db.query(self._insert, (account_id, uuid.uuid1(), body), idempotent=False)
        if random.random() < 0.05:
            rows = list(self.db.query(self._nth, (account_id, self.kept)))
            if len(rows) == self.kept:
                self.db.query(self._prune, (account_id, rows[-1].id))

    def page(self, account_id: str, *, after: str | None, limit: int) -> tuple[list[Denial], str | None]:
        if after is not None:
            try:
                cursor = uuid.UUID(after)
            except ValueError:
                raise InvalidCursor(f"{after!r} is not a cursor of this denial log") from None
            if cursor.version != 1:  # not a cursor this log gives (they are time-based ids)
                raise InvalidCursor(f"{after!r} is not a cursor of this denial log")
            rows = self.db.query(self._next, (account_id, cursor, limit + 1))
        else:
            rows = self.db.query(self._first, (account_id, limit + 1))
        # Read row by row, as the SQLite log does: a page cut by its byte budget stops there.
        return _page(((str(row.id), bytes(row.body)) for row in rows), limit, _opener(self.sealer, account_id))

    def forget(self, account_id: str) -> None:
        """A partition tombstone at the store's write level (the rows leave the disks at compaction)."""
        if self.sealer is not None:
            self.sealer.forget(account_id)
        bound = self._forget.bind((account_id,))
        bound.consistency_level = self.db.write_cl
        self.db.query(bound)

    def close(self) -> None:
        """The session is the store's, which closes it."""
