"""Streams' keys in the SQLite store's own file (``eskit_keys``), beside the events.

An erasure overwrites the key in place: it runs with ``secure_delete`` on, so
the page that held the wrapped key is rewritten with zeros where the key was,
and then checkpoints the write-ahead log into the file and truncates it, so no
older copy of that page stays in the log (a reader holding an old snapshot of
the log may delay the truncation until the next erasure's).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator, Sequence
from datetime import datetime

from eskit.exceptions import OperationalError
from eskit.privacy.keys import KeyRecord, KeyStore
from eskit.stores.sqlite.connection import SQLiteConnection, translate_errors
from eskit.stores.timestamps import from_micros, to_micros

__all__ = ["SQLiteKeyStore"]

_COLUMNS = "subject, master_id, wrapped, created_at, erased_at"


def _record(row: tuple[str, str | None, bytes | None, int, int | None]) -> KeyRecord:
    subject, master_id, wrapped, created_at, erased_at = row
    return KeyRecord(
        subject,
        master_id,
        bytes(wrapped) if wrapped is not None else None,
        from_micros(created_at),
        from_micros(erased_at) if erased_at is not None else None,
    )


class SQLiteKeyStore(KeyStore):
    """Key records in the store's file; each write is one transaction, ordered with the appends."""

    def __init__(self, db: SQLiteConnection) -> None:
        self.db = db

    def get(self, subject: str) -> KeyRecord | None:
        conn = self.db.get()
        with translate_errors():
            row = conn.execute(f"SELECT {_COLUMNS} FROM eskit_keys WHERE subject = ?", (subject,)).fetchone()
        return _record(row) if row is not None else None

    def create(self, record: KeyRecord) -> KeyRecord:
        with self._noted(), self.db.transaction(immediate=True) as conn:
            conn.execute(
                f"INSERT OR IGNORE INTO eskit_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, NULL)",
                (record.subject, record.master_id, record.wrapped, to_micros(record.created_at)),
            )
            row = conn.execute(f"SELECT {_COLUMNS} FROM eskit_keys WHERE subject = ?", (record.subject,)).fetchone()
        return _record(row)

    def erase(self, subject: str, at: datetime) -> KeyRecord:
        with self._noted(), self._secure_delete(), self.db.transaction(immediate=True) as conn:
            conn.execute(
                f"INSERT INTO eskit_keys ({_COLUMNS}) VALUES (?, NULL, NULL, ?, ?) ON CONFLICT (subject) DO UPDATE"
                " SET master_id = NULL, wrapped = NULL, erased_at = coalesce(erased_at, excluded.erased_at)",
                (subject, to_micros(at), to_micros(at)),
            )
            row = conn.execute(f"SELECT {_COLUMNS} FROM eskit_keys WHERE subject = ?", (subject,)).fetchone()
        self._truncate_log()
        return _record(row)

    def rewrap(self, old: KeyRecord, master_id: str, wrapped: bytes) -> bool:
        with self._secure_delete(), self.db.transaction(immediate=True) as conn:
            changed = conn.execute(
                "UPDATE eskit_keys SET master_id = ?, wrapped = ? WHERE subject = ? AND wrapped = ?"
                " AND erased_at IS NULL",
                (master_id, wrapped, old.subject, old.wrapped),
            ).rowcount
        return bool(changed)

    def scan(self, *, after: str | None = None, limit: int = 1000) -> list[KeyRecord]:
        conn = self.db.get()
        with translate_errors():
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM eskit_keys WHERE subject > ? ORDER BY subject LIMIT ?",
                ("" if after is None else after, limit),
            ).fetchall()
        return [_record(row) for row in rows]

    def load(self, records: Sequence[KeyRecord]) -> int:
        changed = 0
        with self._secure_delete(), self.db.transaction(immediate=True) as conn:
            for record in records:
                if record.erased:
                    assert record.erased_at is not None
                    changed += conn.execute(
                        f"INSERT INTO eskit_keys ({_COLUMNS}) VALUES (?, NULL, NULL, ?, ?) ON CONFLICT (subject)"
                        " DO UPDATE SET master_id = NULL, wrapped = NULL, erased_at = excluded.erased_at"
                        " WHERE erased_at IS NULL",
                        (record.subject, to_micros(record.created_at), to_micros(record.erased_at)),
                    ).rowcount
                else:
                    changed += conn.execute(
                        f"INSERT OR IGNORE INTO eskit_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, NULL)",
                        (record.subject, record.master_id, record.wrapped, to_micros(record.created_at)),
                    ).rowcount
        return changed

    @contextlib.contextmanager
    def _noted(self) -> Iterator[None]:
        """A failed write is the file's failed write too: the event store's health check reports it (a
        command whose key could not be made fails before its append, which would otherwise not tell)."""
        try:
            yield
        except OperationalError as exc:
            self.db.failed_write = (time.monotonic(), f"a key's write failed: {exc}")
            raise

    @contextlib.contextmanager
    def _secure_delete(self) -> Iterator[None]:
        """Overwrite with zeros what this thread's writes delete or replace, for the block's length."""
        conn = self.db.get()
        with translate_errors():
            conn.execute("PRAGMA secure_delete = ON")
        try:
            yield
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA secure_delete = OFF")

    def _truncate_log(self) -> None:
        """Move the log into the file and empty it, so no page image from before the erasure stays there.

        Best effort: a reader holding an older snapshot keeps the log a while (the next checkpoint goes
        on). Inside a bulk load's transaction it is skipped (the load's own end truncates the log).
        """
        conn = self.db.get()
        if conn.in_transaction:
            return
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
