"""Snapshots in the SQLite store's file, beside the events."""

from __future__ import annotations

import os
from collections.abc import Sequence

from eskit.events import Snapshot
from eskit.ports import SnapshotStore
from eskit.stores.sqlite.connection import SQLiteConnection, translate_errors
from eskit.stores.timestamps import from_micros, to_micros

__all__ = ["SQLiteSnapshotStore"]


class SQLiteSnapshotStore(SnapshotStore):
    """Snapshots in the same SQLite file (or another), found through a unique index on (stream, version).

    A lookup reads a few index pages and the one state it returns, whatever the
    size of other streams' states (see :data:`~eskit.stores.sqlite.schema.SNAPSHOTS_TABLE`).
    """

    def __init__(self, path: str | os.PathLike[str] | SQLiteConnection) -> None:
        self.db = path if isinstance(path, SQLiteConnection) else SQLiteConnection(path)

    def save(self, snapshot: Snapshot) -> None:
        with self.db.transaction(immediate=True) as conn:
            conn.execute(
                "INSERT OR REPLACE INTO snapshots (stream_id, version, type_name, schema_version,"
                " recorded_at, state) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    snapshot.stream_id,
                    snapshot.version,
                    snapshot.type_name,
                    snapshot.schema_version,
                    to_micros(snapshot.recorded_at),
                    snapshot.state,
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

    def versions(self, stream_id: str) -> list[int]:
        conn = self.db.get()
        with translate_errors():
            rows = conn.execute("SELECT version FROM snapshots WHERE stream_id = ? ORDER BY version", (stream_id,))
            return [int(row[0]) for row in rows.fetchall()]

    def delete(self, stream_id: str, versions: Sequence[int]) -> None:
        if not versions:
            return
        with self.db.transaction(immediate=True) as conn:
            conn.executemany(
                "DELETE FROM snapshots WHERE stream_id = ? AND version = ?", [(stream_id, v) for v in versions]
            )

    def close(self) -> None:
        self.db.close()
