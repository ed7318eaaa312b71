"""The infrastructure factory the library finds through ``PERSISTENCE_MODULE=eskit.interop.eventsourcing``.

Settings (read from the application's environment, each also as ``<APP NAME>_<KEY>``):

* ``ESKIT_STORE_URL`` (required): the eskit store, ``sqlite:///path.db`` or
  ``cassandra://hosts/keyspace?...`` (every option of eskit's Cassandra URLs holds);
* ``ORIGINATOR_ID_TYPE``: ``uuid`` (default) or ``text``, as in the library's SQLite module;
* ``CREATE_TABLE``: when false, the store must exist already (eskit's ``create_schema=False``);
* ``APPLICATION_RECORDER_TOPIC``, ``TRACKING_RECORDER_TOPIC``, ``PROCESS_RECORDER_TOPIC``:
  subclasses of this module's recorders to construct instead.

A factory opens the store once; every recorder it makes shares it, and ``close`` closes it.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar, cast
from urllib.parse import urlsplit

from eventsourcing import persistence as es
from eventsourcing.utils import Environment, EnvType, resolve_topic, strtobool

from eskit.interop.eventsourcing.errors import translated
from eskit.interop.eventsourcing.recorders import (
    CassandraAggregateRecorder,
    CassandraApplicationRecorder,
    SnapshotRecorder,
    SQLiteAggregateRecorder,
    SQLiteApplicationRecorder,
)
from eskit.interop.eventsourcing.streams import OriginatorIds
from eskit.interop.eventsourcing.tracking import SQLiteProcessRecorder, SQLiteTrackingRecorder
from eskit.stores.registry import Stores, open_stores

__all__ = ["Factory"]

R = TypeVar("R")

#: why a Cassandra store offers no tracking or process recorder (the message of its NotSupportedError)
NO_TRACKING = (
    "a Cassandra store cannot write a tracking record atomically with events (no transaction across "
    "partitions): run processes and tracked views on eskit's SQLite store (see docs/eventsourcing.md)"
)


class Factory(es.InfrastructureFactory[SQLiteTrackingRecorder]):
    """Recorders on one eskit store: SQLite (every recorder) or Cassandra (aggregates and snapshots)."""

    ESKIT_STORE_URL = "ESKIT_STORE_URL"
    ORIGINATOR_ID_TYPE = "ORIGINATOR_ID_TYPE"
    CREATE_TABLE = "CREATE_TABLE"

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        url = self.env.get(self.ESKIT_STORE_URL)
        if not url:
            keys = ", ".join(self.env.create_keys(self.ESKIT_STORE_URL))
            raise OSError(f"eskit store URL not found in environment with keys: {keys}")
        kind = self.env.get(self.ORIGINATOR_ID_TYPE, "uuid").lower()
        if kind not in ("uuid", "text"):
            raise OSError(f"invalid {self.ORIGINATOR_ID_TYPE} {kind!r}: must be 'uuid' or 'text'")
        self.ids = OriginatorIds(cast(Literal["uuid", "text"], kind))
        self.scheme = urlsplit(url).scheme
        if self.scheme not in ("sqlite", "cassandra"):
            raise OSError(f"{self.ESKIT_STORE_URL} must name a sqlite:// or cassandra:// store, not {url!r}")
        create = strtobool(self.env.get(self.CREATE_TABLE, "yes") or "yes")
        with translated():
            self.stores: Stores = open_stores(url, create_schema=None if create else False)

    @property
    def on_sqlite(self) -> bool:
        return self.scheme == "sqlite"

    def aggregate_recorder(self, purpose: str = "events") -> es.AggregateRecorder:
        """Events (``purpose="events"``) in the event store, snapshots (``"snapshots"``) in the snapshot store."""
        if purpose == "snapshots":
            return SnapshotRecorder(self.stores, self.ids)
        if purpose != "events":
            raise es.InterfaceError(f"no recorder for {purpose!r}: an eskit store keeps 'events' and 'snapshots'")
        if self.on_sqlite:
            return SQLiteAggregateRecorder(self.stores, self.ids)
        return CassandraAggregateRecorder(self.stores, self.ids)

    def application_recorder(self) -> es.ApplicationRecorder:
        if self.on_sqlite:
            return self._construct(self.APPLICATION_RECORDER_TOPIC, SQLiteApplicationRecorder)
        return self._construct(self.APPLICATION_RECORDER_TOPIC, CassandraApplicationRecorder)

    def tracking_recorder(
        self, tracking_recorder_class: type[SQLiteTrackingRecorder] | None = None
    ) -> SQLiteTrackingRecorder:
        if not self.on_sqlite:
            raise es.NotSupportedError(NO_TRACKING)
        if tracking_recorder_class is not None:
            return self._checked(tracking_recorder_class, SQLiteTrackingRecorder)
        return self._construct(self.TRACKING_RECORDER_TOPIC, SQLiteTrackingRecorder)

    def process_recorder(self) -> es.ProcessRecorder:
        if not self.on_sqlite:
            raise es.NotSupportedError(NO_TRACKING)
        return self._construct(self.PROCESS_RECORDER_TOPIC, SQLiteProcessRecorder)

    def _construct(self, key: str, default: type[R]) -> R:
        """A ``default`` recorder, or one of the subclass the setting ``key`` names."""
        topic = self.env.get(key)
        return self._checked(resolve_topic(topic) if topic else default, default)

    def _checked(self, cls: Any, base: type[R]) -> R:
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise es.InterfaceError(f"{cls!r} is not a subclass of {base.__qualname__}")
        constructor: Any = cls  # every recorder of this module takes (stores, ids)
        made: R = constructor(self.stores, self.ids)
        return made

    def close(self) -> None:
        self.stores.close()
