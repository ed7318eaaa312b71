"""The prepared CQL statements the stores run, prepared once per connection."""

from __future__ import annotations

from eskit.stores.cassandra.session import CassandraSession, translated

__all__ = ["Statements"]


class Statements:
    """Every statement the stores run, prepared on one session's keyspace."""

    def __init__(self, session: CassandraSession) -> None:
        ks = session.settings.keyspace
        p = session.prepare
        with translated("cannot prepare statements"):
            self.insert_event = p(
                f"INSERT INTO {ks}.events (stream_id, bucket, position, event_id, type_name, schema_version,"
                " data, metadata, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            )
            self.set_head_if = p(f"UPDATE {ks}.events SET head = ? WHERE stream_id = ? AND bucket = ? IF head = ?")
            self.set_head_if_null = p(
                f"UPDATE {ks}.events SET head = ? WHERE stream_id = ? AND bucket = ? IF head = null"
            )
            self.select_head = p(f"SELECT head FROM {ks}.events WHERE stream_id = ? AND bucket = ? LIMIT 1")
            columns = "position, event_id, type_name, schema_version, data, metadata, recorded_at"
            self.select_range = p(
                f"SELECT {columns} FROM {ks}.events WHERE stream_id = ? AND bucket = ?"
                " AND position > ? AND position <= ? LIMIT ?"
            )
            self.select_range_desc = p(
                f"SELECT {columns} FROM {ks}.events WHERE stream_id = ? AND bucket = ?"
                " AND position > ? AND position <= ? ORDER BY position DESC LIMIT ?"
            )
            self.select_times = p(
                f"SELECT position, recorded_at FROM {ks}.events WHERE stream_id = ? AND bucket = ? AND position IN ?"
            )
            self.first_partitions = p(f"SELECT DISTINCT stream_id, bucket FROM {ks}.events LIMIT ?")
            self.next_partitions = p(
                f"SELECT DISTINCT stream_id, bucket FROM {ks}.events"
                " WHERE token(stream_id, bucket) > token(?, ?) LIMIT ?"
            )
            # The gate's probe (see gate.py): a tiny row every keyspace has.
            self.probe = p(f"SELECT value FROM {ks}.eskit_settings WHERE name = 'bucket_size'")
            self.insert_time = p(f"INSERT INTO {ks}.event_times (stream_id, position, recorded_at) VALUES (?, ?, ?)")
            self.select_indexed_times = p(
                f"SELECT position, recorded_at FROM {ks}.event_times WHERE stream_id = ? AND position IN ?"
            )
            self.insert_snapshot = p(
                f"INSERT INTO {ks}.snapshots (stream_id, version, type_name, schema_version, state, recorded_at)"
                " VALUES (?, ?, ?, ?, ?, ?)"
            )
            self.select_snapshot_versions = p(f"SELECT version FROM {ks}.snapshots WHERE stream_id = ?")
            self.delete_snapshot = p(f"DELETE FROM {ks}.snapshots WHERE stream_id = ? AND version = ?")
            self.select_snapshot = p(
                f"SELECT version, type_name, schema_version, state, recorded_at FROM {ks}.snapshots"
                " WHERE stream_id = ? AND version <= ? LIMIT 1"
            )
