"""The one exception hierarchy of eskit.

Every store adapter translates its driver's errors into these classes at its
boundary, so callers never catch ``sqlite3`` or Cassandra driver exceptions.
The classes defined elsewhere name their module::

    EskitError
    ├── StoreError                  (PEP 249 style, raised by event and snapshot stores)
    │   ├── InterfaceError          the store was used wrongly (closed, bad URL, bad argument)
    │   ├── IntegrityError          the stored data disagrees with a precondition
    │   │   ├── ConcurrencyError    the stream moved past the expected version
    │   │   └── DamagedEvent        a stored event cannot be read back (a damaged or forged row)
    │   ├── OperationalError        the backend failed while working (I/O, timeout, busy)
    │   │   ├── StoreUnavailable    the backend cannot be reached at all
    │   │   │   └── QuorumUnreachable  reads answer, but writes cannot be made durable from here
    │   │   └── UnknownOutcome      a write may or may not have happened and could not be resolved
    │   └── SchemaError             the store's schema is missing or incompatible
    ├── SerializationError          a payload could not be encoded or decoded
    │   ├── UnknownEventType        no class is registered for a stored type name
    │   └── UpcastError             an upcaster is missing or failed
    ├── AggregateError
    │   └── AggregateNotFound       the stream has no events (at the requested point)
    ├── PrivacyError                personal fields cannot be sealed or opened
    │   ├── MasterKeyError          no master key, or not the one a stream's key was wrapped with
    │   └── KeyErased               the stream's key was erased: nothing personal can be written to it
    ├── CheckpointMoved             a projection's batch lost to another runner's     eskit.projection
    ├── TooManySkipped              more streams fail than damage explains            eskit.projection
    ├── ArchiveError                an archive that cannot be trusted or loaded       eskit.transfer
    ├── NotEmpty                    an import's or copy's target holds events         eskit.transfer
    ├── Diverged                    a copy's target holds other events than its source eskit.transfer
    └── MissingEvents               a copy's target lacks events no source can fill   eskit.transfer
"""

from __future__ import annotations

__all__ = [
    "AggregateError",
    "AggregateNotFound",
    "ConcurrencyError",
    "DamagedEvent",
    "EskitError",
    "IntegrityError",
    "InterfaceError",
    "KeyErased",
    "MasterKeyError",
    "OperationalError",
    "PrivacyError",
    "QuorumUnreachable",
    "SchemaError",
    "SerializationError",
    "StoreError",
    "StoreUnavailable",
    "UnknownEventType",
    "UnknownOutcome",
    "UpcastError",
]


class EskitError(Exception):
    """Base class of every error eskit raises on purpose."""


class StoreError(EskitError):
    """Base class of errors raised by event and snapshot stores."""


class InterfaceError(StoreError):
    """The store was used wrongly: closed, misconfigured or given a bad argument."""


class IntegrityError(StoreError):
    """A write was refused because it would break a stored invariant."""


class ConcurrencyError(IntegrityError):
    """The stream's version is not the expected one: another writer appended first.

    Nothing of the refused append was written. ``expected`` is the version the
    caller expected; ``actual`` the version found, when the store knows it.
    """

    def __init__(self, stream_id: str, expected: int, actual: int | None = None) -> None:
        found = "unknown" if actual is None else str(actual)
        super().__init__(f"stream {stream_id!r} is at version {found}, expected {expected}")
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class DamagedEvent(IntegrityError):
    """A stored event cannot be read back: its row holds what no append writes (damaged, or forged).

    Raised by reads that meet it, naming the event, so a reader can report it and go
    on: ``stream_id`` and ``position`` say which event, ``sequence`` its place in the
    store's feed where there is one (None otherwise).
    """

    def __init__(self, stream_id: str, position: int, reason: str, *, sequence: int | None = None) -> None:
        super().__init__(f"{stream_id}@{position}: cannot be read back: {reason}")
        self.stream_id = stream_id
        self.position = position
        self.reason = reason
        self.sequence = sequence


class OperationalError(StoreError):
    """The backend failed while working (I/O error, timeout, busy, overloaded)."""


class StoreUnavailable(OperationalError):
    """The backend cannot be reached (file not openable, no live node)."""


class QuorumUnreachable(StoreUnavailable):
    """This process cannot reach enough replicas to make a write durable; reads still answer.

    Raised at once, without a request, while the store knows it is cut off (a Cassandra region
    that cannot reach a quorum of the other regions' replicas). Nothing was written.
    """


class UnknownOutcome(OperationalError):
    """A write may or may not have been applied, and the store could not find out.

    Stores try hard to resolve such outcomes before raising this; callers that
    see it should retry the command with the same request id.
    """


class SchemaError(StoreError):
    """The store's schema is missing, or was created with incompatible settings."""


class SerializationError(EskitError):
    """A payload could not be encoded or decoded."""


class UnknownEventType(SerializationError):
    """A stored event or snapshot names a type that no registered class has."""

    def __init__(self, type_name: str) -> None:
        super().__init__(f"no event class is registered for type {type_name!r}")
        self.type_name = type_name


class UpcastError(SerializationError):
    """A stored payload of an older schema version could not be brought up to date."""


class AggregateError(EskitError):
    """Base class of repository errors about aggregates."""


class AggregateNotFound(AggregateError):
    """The aggregate's stream has no events (before the requested version or time)."""

    def __init__(self, stream_id: str) -> None:
        super().__init__(f"aggregate {stream_id!r} not found")
        self.stream_id = stream_id


class PrivacyError(EskitError):
    """Base class of errors about sealing personal fields with a stream's key (:mod:`eskit.privacy`)."""


class MasterKeyError(PrivacyError):
    """No master key is configured, it is malformed, or a stream's key was wrapped by another one."""


class KeyErased(PrivacyError):
    """The stream's key was erased: its personal fields can be neither written nor read again."""

    def __init__(self, stream_id: str) -> None:
        super().__init__(f"the key of {stream_id!r} was erased: nothing personal can be written to it")
        self.stream_id = stream_id
