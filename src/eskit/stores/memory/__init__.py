"""In-memory stores (``memory://``): the default for tests and demos, gone with the process.

Events, snapshots, both kinds of feed (one sequence, and the stream feed that
stores without one commit order have), and read models kept the way Cassandra
keeps them (:mod:`eskit.stores.memory.readmodel`).
"""

from __future__ import annotations

import weakref
from typing import Any

from eskit.stores.memory.events import (
    InMemoryEventFeed,
    InMemoryEventStore,
    InMemorySnapshotStore,
    InMemoryStreamFeed,
)
from eskit.stores.memory.keys import InMemoryKeyStore
from eskit.stores.memory.readmodel import InMemoryReadModels
from eskit.stores.registry import Stores

__all__ = [
    "InMemoryEventFeed",
    "InMemoryEventStore",
    "InMemoryKeyStore",
    "InMemoryReadModels",
    "InMemorySnapshotStore",
    "InMemoryStreamFeed",
    "open_read_models",
    "open_stores",
]

#: each in-memory store's read models, for as long as the store lives
_READ_MODELS: weakref.WeakKeyDictionary[InMemoryEventStore, InMemoryReadModels] = weakref.WeakKeyDictionary()


def open_stores(url: str, **_: Any) -> Stores:
    """New, empty in-memory stores (``memory://``); every call gets its own."""
    events = InMemoryEventStore()
    return Stores(
        url,
        events,
        InMemorySnapshotStore(),
        InMemoryEventFeed(events),
        InMemoryStreamFeed(events),
        keys=InMemoryKeyStore(),
    )


def open_read_models(stores: Stores, **_: Any) -> InMemoryReadModels:
    """The read models of an in-memory store (the same object for every call on the same store)."""
    events = stores.events
    if not isinstance(events, InMemoryEventStore):
        raise TypeError("not an in-memory store")
    found = _READ_MODELS.get(events)
    if found is None:
        found = _READ_MODELS[events] = InMemoryReadModels()
    return found
