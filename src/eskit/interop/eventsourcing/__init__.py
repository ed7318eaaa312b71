"""A persistence module for the ``eventsourcing`` library on eskit's SQLite and Cassandra stores.

An application chooses it with ``PERSISTENCE_MODULE=eskit.interop.eventsourcing`` and names
its store with ``ESKIT_STORE_URL`` (see :mod:`eskit.interop.eventsourcing.factory` for every
setting, and ``docs/eventsourcing.md`` for what differs from the library's own stores).
Needs the library (the ``eventsourcing`` extra); importing eskit does not import this module.

This module holds exactly one infrastructure factory class, :class:`Factory`, as the
library requires of a persistence module.
"""

from eskit.interop.eventsourcing.factory import Factory
from eskit.interop.eventsourcing.recorders import (
    CassandraAggregateRecorder,
    CassandraApplicationRecorder,
    SnapshotRecorder,
    SQLiteAggregateRecorder,
    SQLiteApplicationRecorder,
)
from eskit.interop.eventsourcing.tracking import SQLiteProcessRecorder, SQLiteTrackingRecorder

__all__ = [
    "CassandraAggregateRecorder",
    "CassandraApplicationRecorder",
    "Factory",
    "SQLiteAggregateRecorder",
    "SQLiteApplicationRecorder",
    "SQLiteProcessRecorder",
    "SQLiteTrackingRecorder",
    "SnapshotRecorder",
]
