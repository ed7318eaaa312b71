"""eskit: a small event-sourcing kit.

Events and their codec, aggregates, a repository with snapshots and time
travel, and event stores behind one port (in memory, SQLite, Cassandra).
"""

from eskit.aggregate import Aggregate
from eskit.events import DomainEvent, EventMetadata, NewEvent, Snapshot, StoredEvent
from eskit.exceptions import (
    AggregateError,
    AggregateNotFound,
    ConcurrencyError,
    EskitError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    SchemaError,
    SerializationError,
    StoreError,
    StoreUnavailable,
    UnknownEventType,
    UnknownOutcome,
    UpcastError,
)
from eskit.memory import InMemoryEventStore, InMemorySnapshotStore
from eskit.repository import RecordedEvent, Repository, SnapshotPolicy
from eskit.serialization import EventCodec, OrjsonSerializer, Serializer, Upcaster, Upcasters
from eskit.sqlite import SQLiteEventStore, SQLiteSnapshotStore
from eskit.store import EventStore, SnapshotStore
from eskit.urls import Stores, open_stores

__all__ = [
    "Aggregate",
    "AggregateError",
    "AggregateNotFound",
    "ConcurrencyError",
    "DomainEvent",
    "EskitError",
    "EventCodec",
    "EventMetadata",
    "EventStore",
    "InMemoryEventStore",
    "InMemorySnapshotStore",
    "IntegrityError",
    "InterfaceError",
    "NewEvent",
    "OperationalError",
    "OrjsonSerializer",
    "RecordedEvent",
    "Repository",
    "SQLiteEventStore",
    "SQLiteSnapshotStore",
    "SchemaError",
    "SerializationError",
    "Serializer",
    "Snapshot",
    "SnapshotPolicy",
    "SnapshotStore",
    "StoreError",
    "StoreUnavailable",
    "StoredEvent",
    "Stores",
    "UnknownEventType",
    "UnknownOutcome",
    "UpcastError",
    "Upcaster",
    "Upcasters",
    "open_stores",
]
