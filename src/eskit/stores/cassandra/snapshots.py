"""Snapshots in Cassandra: one partition per stream, newest version first."""

from __future__ import annotations

from collections.abc import Sequence

from eskit.events import Snapshot
from eskit.ports import SnapshotStore
from eskit.stores.cassandra.session import CassandraSession
from eskit.stores.timestamps import from_micros, to_micros

__all__ = ["CassandraSnapshotStore"]


class CassandraSnapshotStore(SnapshotStore):
    """Snapshots in Cassandra, newest first in each stream's partition."""

    deferred_writes = True  # written after the command's answer (see Repository.take_snapshot)

    def __init__(self, connection: CassandraSession) -> None:
        self.db = connection
        assert connection.statements is not None, "the session's statements are prepared by open_stores"
        self.sql = connection.statements

    def save(self, snapshot: Snapshot) -> None:
        self.db.query(
            self.sql.insert_snapshot,
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
        row = self.db.query(self.sql.select_snapshot, (stream_id, lte if lte is not None else 2**62)).one()
        if row is None:
            return None
        return Snapshot(
            stream_id, row.version, row.type_name, row.schema_version, bytes(row.state), from_micros(row.recorded_at)
        )

    def versions(self, stream_id: str) -> list[int]:
        return sorted(int(row.version) for row in self.db.query(self.sql.select_snapshot_versions, (stream_id,)))

    def delete(self, stream_id: str, versions: Sequence[int]) -> None:
        for version in versions:
            self.db.query(self.sql.delete_snapshot, (stream_id, version))

    def close(self) -> None:
        """The connection is shared with the event store, which closes it."""
