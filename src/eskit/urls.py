"""Store URLs: one string selects a backend and its settings.

* ``memory://`` — :class:`~eskit.memory.InMemoryEventStore` (tests, demos).
* ``sqlite:///relative.db`` or ``sqlite:////absolute/path.db`` — one SQLite file.
* ``cassandra://host1,host2[:port]/keyspace?dc=...&consistency=...`` — Apache
  Cassandra (needs the ``cassandra`` extra; see :mod:`eskit.cassandra`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from eskit.exceptions import InterfaceError
from eskit.memory import InMemoryEventStore, InMemorySnapshotStore
from eskit.sqlite import SQLiteConnection, SQLiteEventStore, SQLiteSnapshotStore
from eskit.store import EventStore, SnapshotStore

__all__ = ["Stores", "open_stores", "sqlite_path"]


@dataclass(frozen=True)
class Stores:
    """An event store and the snapshot store that goes with it."""

    url: str
    events: EventStore
    snapshots: SnapshotStore

    def close(self) -> None:
        """Close both stores."""
        self.snapshots.close()
        self.events.close()


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:///path`` URL (relative after three slashes, absolute after four)."""
    if not url.startswith("sqlite:///"):
        raise InterfaceError(f"not a SQLite URL: {url!r} (expected sqlite:///path.db)")
    path = url[len("sqlite:///") :].split("?", 1)[0]
    if not path or path.endswith("/"):
        raise InterfaceError(f"SQLite URL {url!r} names no file")
    return path


def open_stores(url: str, **options: Any) -> Stores:
    """Open the stores a URL names; raise :class:`InterfaceError` for a bad URL.

    ``options`` are passed to backends that take them (Cassandra: ``create_schema``).
    """
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return Stores(url, InMemoryEventStore(), InMemorySnapshotStore())
    if scheme == "sqlite":
        # The file is created only when asked (None: yes); otherwise it must exist.
        db = SQLiteConnection(sqlite_path(url), create=options.get("create_schema") is not False)
        db.get()  # open now, so a bad path fails at start rather than at first request
        return Stores(url, SQLiteEventStore(db), SQLiteSnapshotStore(db))
    if scheme == "cassandra":
        try:
            from eskit.cassandra import open_cassandra_stores
        except ImportError as exc:
            raise InterfaceError(
                "the Cassandra store needs the cassandra extra: pip install 'eskit[cassandra]'"
            ) from exc
        events, snapshots = open_cassandra_stores(url, **options)
        return Stores(url, events, snapshots)
    raise InterfaceError(f"unknown store URL {url!r}: use memory://, sqlite:///path.db or cassandra://hosts/keyspace")
