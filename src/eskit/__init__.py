"""eskit: a small event-sourcing kit.

Events and their codec, aggregates, a repository with snapshots and time
travel, a command runner, and the persistence ports. Importing eskit loads no
store adapter: open stores by URL with :func:`open_stores`, or import an
adapter from :mod:`eskit.stores` (memory, SQLite, Cassandra).
"""

from eskit.aggregate import Aggregate
from eskit.codec import EventCodec, OrjsonSerializer, Serializer, Upcaster, Upcasters
from eskit.commands import CommandRunner
from eskit.events import ERASED, DomainEvent, Erased, EventMetadata, NewEvent, Snapshot, StoredEvent, is_erased
from eskit.exceptions import (
    AggregateError,
    AggregateNotFound,
    ConcurrencyError,
    DamagedEvent,
    EskitError,
    IntegrityError,
    InterfaceError,
    KeyErased,
    MasterKeyError,
    OperationalError,
    PrivacyError,
    QuorumUnreachable,
    SchemaError,
    SerializationError,
    StoreError,
    StoreUnavailable,
    UnknownEventType,
    UnknownOutcome,
    UpcastError,
)
from eskit.ports import EventFeed, EventStore, FeedEvent, SnapshotStore
from eskit.repository import RecordedEvent, Repository, SnapshotPolicy
from eskit.stores.registry import Stores, open_stores

__all__ = [
    "ERASED",
    "Aggregate",
    "AggregateError",
    "AggregateNotFound",
    "CommandRunner",
    "ConcurrencyError",
    "DamagedEvent",
    "DomainEvent",
    "Erased",
    "EskitError",
    "EventCodec",
    "EventFeed",
    "EventMetadata",
    "EventStore",
    "FeedEvent",
    "IntegrityError",
    "InterfaceError",
    "KeyErased",
    "MasterKeyError",
    "NewEvent",
    "OperationalError",
    "OrjsonSerializer",
    "PrivacyError",
    "QuorumUnreachable",
    "RecordedEvent",
    "Repository",
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
    "is_erased",
    "open_stores",
]
