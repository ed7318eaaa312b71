"""Store URLs: one string selects a backend and its settings.

Each backend is a module with an ``open_stores(url, **options) -> Stores``
function, named here by the URL scheme it serves. Adding a store means adding
its subpackage and one line to :data:`ADAPTERS`; an adapter module is imported
only when a URL names it, so importing eskit loads no driver.

* ``memory://`` — events and snapshots in this process (tests, demos).
* ``sqlite:///relative.db`` or ``sqlite:////absolute/path.db`` — one SQLite file.
* ``cassandra://host1,host2[:port]/keyspace?dc=...`` — Apache Cassandra (needs
  the ``cassandra`` extra; see :mod:`eskit.stores.cassandra`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast
from urllib.parse import urlsplit

from eskit.exceptions import InterfaceError
from eskit.ports import EventFeed, EventStore, SnapshotStore, StreamFeed

if TYPE_CHECKING:
    from eskit.privacy.keys import KeyStore
    from eskit.readmodel.store import ReadModelStore

__all__ = ["ADAPTERS", "Adapter", "Stores", "open_read_models", "open_stores"]


@dataclass(frozen=True)
class Stores:
    """An event store, the snapshot and key stores that go with it, and its feed where it has one."""

    url: str
    events: EventStore
    snapshots: SnapshotStore
    feed: EventFeed | None = None
    #: the feed of a store without one commit order (Cassandra): which streams to look at
    stream_feed: StreamFeed | None = None
    #: streams' keys, wrapped (:mod:`eskit.privacy`), in the same file or keyspace as the events
    keys: KeyStore | None = None

    def close(self) -> None:
        """Close the stores."""
        if self.keys is not None:
            self.keys.close()
        if self.feed is not None:
            self.feed.close()
        if self.stream_feed is not None:
            self.stream_feed.close()
        self.snapshots.close()
        self.events.close()


@dataclass(frozen=True)
class Adapter:
    """Where a backend lives: its module, an example URL, and the driver it needs installed (if any) and how."""

    module: str
    example: str
    driver: str = ""
    install: str = ""


#: URL scheme -> backend; one line per store
ADAPTERS: dict[str, Adapter] = {
    "memory": Adapter("eskit.stores.memory", "memory://"),
    "sqlite": Adapter("eskit.stores.sqlite", "sqlite:///path.db"),
    "cassandra": Adapter(
        "eskit.stores.cassandra",
        "cassandra://hosts/keyspace",
        driver="cassandra",
        install="pip install 'downloads[cassandra]'",
    ),
}


class _Opener(Protocol):
    def __call__(self, url: str, **options: Any) -> Stores: ...


class _ReadModelsOpener(Protocol):
    def __call__(self, stores: Stores, **options: Any) -> ReadModelStore: ...


def open_stores(url: str, **options: Any) -> Stores:
    """Open the stores a URL names; raise :class:`InterfaceError` for a bad URL or a missing driver.

    ``options`` are passed to the backend (all take ``create_schema``: None keeps
    the backend's default, False requires an existing store).
    """
    scheme = urlsplit(url).scheme
    adapter = ADAPTERS.get(scheme)
    if adapter is None:
        *others, last = (a.example for a in ADAPTERS.values())
        raise InterfaceError(f"unknown store URL {url!r}: use {', '.join(others)} or {last}")
    try:
        opener = cast(_Opener, importlib.import_module(adapter.module).open_stores)
        return opener(url, **options)
    except ModuleNotFoundError as exc:
        if adapter.driver and (exc.name or "").split(".")[0] == adapter.driver:
            raise InterfaceError(f"the {scheme} store needs its driver: {adapter.install}") from exc
        raise


def open_read_models(stores: Stores, **options: Any) -> ReadModelStore:
    """The read-model store that goes with ``stores`` (beside a SQLite file, in a keyspace, in memory).

    ``options`` are passed to the backend. Raises :class:`InterfaceError` for a store whose
    backend keeps no read models, and the backend's errors (a read-model file that belongs to
    another store is a :class:`~eskit.exceptions.SchemaError`).
    """
    scheme = urlsplit(stores.url).scheme
    adapter = ADAPTERS.get(scheme)
    module = importlib.import_module(adapter.module) if adapter is not None else None
    opener = cast(_ReadModelsOpener | None, getattr(module, "open_read_models", None))
    if opener is None:
        raise InterfaceError(f"the {scheme} store keeps no read models")
    return opener(stores, **options)
