"""Streams' keys in the keyspace (``eskit_keys``), replicated to every data centre with the events.

Every write is a lightweight transaction at the keyspace's serial level (the
same as appends: ``SERIAL``, a global Paxos quorum, when the keyspace spans
regions), committed at its write level: a key is made once whatever the number
of writers, and an erasure, once acknowledged, survives the loss of any one
region and is what every later serial read sees. A timed-out write is read back
at the serial level, which settles it. Reads of a key use the session's level
(local to the region): a region that was cut off may serve a key erased
elsewhere until it catches up, exactly as it serves the stream's events, where
the erasure is also recorded.

On disk an erasure is a tombstone over the key's cells: the bytes of the
wrapped key stay in the SSTables that held them until compaction merges them
with it (after ``gc_grace_seconds``, 3 hours here). They stay wrapped by the
master key meanwhile; rotating the master key (and destroying the old one)
makes any such copy useless. See docs/privacy.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from eskit.exceptions import OperationalError, QuorumUnreachable
from eskit.privacy.keys import KeyRecord, KeyStore
from eskit.stores.cassandra.gate import QuorumGate
from eskit.stores.cassandra.session import CassandraSession, Deadline, applied, translated
from eskit.stores.timestamps import from_micros, to_micros

__all__ = ["KEYS_TABLE", "CassandraKeyStore"]

#: the table's definition (``{ks}`` is the keyspace)
KEYS_TABLE = (
    "CREATE TABLE IF NOT EXISTS {ks}.eskit_keys (subject text PRIMARY KEY, master_id text, wrapped blob,"
    " created_at bigint, erased_at bigint) WITH gc_grace_seconds = 10800"
)

_COLUMNS = "subject, master_id, wrapped, created_at, erased_at"


def _record(row: Any) -> KeyRecord:
    return KeyRecord(
        row.subject,
        row.master_id,
        bytes(row.wrapped) if row.wrapped is not None else None,
        from_micros(row.created_at),
        from_micros(row.erased_at) if row.erased_at is not None else None,
    )


class CassandraKeyStore(KeyStore):
    """Key records in the keyspace, written with lightweight transactions (see the module docstring)."""

    def __init__(self, connection: CassandraSession, gate: QuorumGate | None = None) -> None:
        self.db = connection
        #: the event store's gate: a region cut off refuses key writes at once, as it refuses appends
        self.gate = gate
        ks = connection.settings.keyspace
        p = connection.prepare
        with translated("cannot prepare the key statements"):
            self._get = p(f"SELECT {_COLUMNS} FROM {ks}.eskit_keys WHERE subject = ?")
            self._create = p(
                f"INSERT INTO {ks}.eskit_keys (subject, master_id, wrapped, created_at) VALUES (?, ?, ?, ?)"
                " IF NOT EXISTS"
            )
            self._tombstone = p(
                f"INSERT INTO {ks}.eskit_keys (subject, created_at, erased_at) VALUES (?, ?, ?) IF NOT EXISTS"
            )
            self._erase = p(
                f"UPDATE {ks}.eskit_keys SET master_id = null, wrapped = null, erased_at = ? WHERE subject = ?"
                " IF erased_at = null"
            )
            self._rewrap = p(
                f"UPDATE {ks}.eskit_keys SET master_id = ?, wrapped = ? WHERE subject = ?"
                " IF wrapped = ? AND erased_at = null"
            )
            self._first = p(f"SELECT {_COLUMNS} FROM {ks}.eskit_keys LIMIT ?")
            self._next = p(f"SELECT {_COLUMNS} FROM {ks}.eskit_keys WHERE token(subject) > token(?) LIMIT ?")

    def _conditional(self, statement: Any, params: Sequence[Any]) -> bool:
        """Run a lightweight transaction; whether it applied (a timeout is retried, then read back by the caller)."""
        bound = statement.bind(params)
        bound.consistency_level = self.db.write_cl
        bound.serial_consistency_level = self.db.serial_cl
        return applied(self._guarded(lambda deadline: self.db.query(bound, deadline=deadline)))

    def _read(self, subject: str, *, serial: bool) -> KeyRecord | None:
        if serial:
            row = self._guarded(lambda deadline: self.db.query(self._get, (subject,), serial=True, deadline=deadline))
        else:
            row = self.db.query(self._get, (subject,))
        found = row.one()
        return _record(found) if found is not None else None

    def _guarded(self, run: Callable[[Deadline], Any]) -> Any:
        """A request that needs a global quorum: refused at once while the gate is closed, bounded by
        the store's command timeout like an append, and its failure tells the gate."""
        if self.gate is None:
            return run(Deadline.for_command(self.db.settings.command_timeout))
        self.gate.check()
        try:
            result = run(Deadline.for_command(self.db.settings.command_timeout))
        except OperationalError as exc:
            if not isinstance(exc, QuorumUnreachable):
                self.gate.failed(f"{type(exc).__name__} on a key record")
            raise
        self.gate.succeeded()
        return result

    def get(self, subject: str) -> KeyRecord | None:
        return self._read(subject, serial=False)

    def create(self, record: KeyRecord) -> KeyRecord:
        self._conditional(
            self._create, (record.subject, record.master_id, record.wrapped, to_micros(record.created_at))
        )
        found = self._read(record.subject, serial=True)
        assert found is not None, "a key record made by a lightweight transaction reads back serially"
        return found

    def erase(self, subject: str, at: datetime) -> KeyRecord:
        micros = to_micros(at)
        if not self._conditional(self._tombstone, (subject, micros, micros)):
            self._conditional(self._erase, (micros, subject))
        found = self._read(subject, serial=True)
        assert found is not None and found.erased, "an erasure reads back serially"
        return found

    def rewrap(self, old: KeyRecord, master_id: str, wrapped: bytes) -> bool:
        return self._conditional(self._rewrap, (master_id, wrapped, old.subject, old.wrapped))

    def scan(self, *, after: str | None = None, limit: int = 1000) -> list[KeyRecord]:
        rows = self.db.query(self._first, (limit,)) if after is None else self.db.query(self._next, (after, limit))
        return [_record(row) for row in rows]

    def load(self, records: Sequence[KeyRecord]) -> int:
        changed = 0
        for record in records:
            if record.erased:
                assert record.erased_at is not None
                micros = to_micros(record.erased_at)
                applied = self._conditional(self._tombstone, (record.subject, to_micros(record.created_at), micros))
                changed += applied or self._conditional(self._erase, (micros, record.subject))
            else:
                changed += self._conditional(
                    self._create, (record.subject, record.master_id, record.wrapped, to_micros(record.created_at))
                )
        return changed

    def close(self) -> None:
        """The session is the event store's, which closes it."""
