"""The SQLite stores: events and snapshots in one file, safe across threads and processes.

``sqlite:///relative.db`` or ``sqlite:////absolute/path.db`` names the file.
"""

from __future__ import annotations

from typing import Any

from eskit.exceptions import InterfaceError
from eskit.stores.registry import Stores
from eskit.stores.sqlite.connection import SQLiteConnection
from eskit.stores.sqlite.events import SQLiteEventStore
from eskit.stores.sqlite.feed import SQLiteEventFeed
from eskit.stores.sqlite.keys import SQLiteKeyStore
from eskit.stores.sqlite.readmodel import SQLiteReadModels, read_models_path
from eskit.stores.sqlite.snapshots import SQLiteSnapshotStore

__all__ = [
    "SQLiteConnection",
    "SQLiteEventFeed",
    "SQLiteEventStore",
    "SQLiteKeyStore",
    "SQLiteReadModels",
    "SQLiteSnapshotStore",
    "open_read_models",
    "open_stores",
    "read_models_path",
    "sqlite_path",
]


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:///path`` URL (relative after three slashes, absolute after four)."""
    if not url.startswith("sqlite:///"):
        raise InterfaceError(f"not a SQLite URL: {url!r} (expected sqlite:///path.db)")
    path = url[len("sqlite:///") :].split("?", 1)[0]
    if not path or path.endswith("/"):
        raise InterfaceError(f"SQLite URL {url!r} names no file")
    return path


def open_stores(url: str, *, create_schema: bool | None = None, **_: Any) -> Stores:
    """Open the file a ``sqlite:///`` URL names; it is created only when ``create_schema`` is not False."""
    db = SQLiteConnection(sqlite_path(url), create=create_schema is not False)
    db.get()  # open now, so a bad path fails at start rather than at first request
    return Stores(url, SQLiteEventStore(db), SQLiteSnapshotStore(db), SQLiteEventFeed(db), keys=SQLiteKeyStore(db))


def open_read_models(stores: Stores, **_: Any) -> SQLiteReadModels:
    """The read models of a SQLite store: a file of their own beside the store's (created on first use)."""
    return SQLiteReadModels(read_models_path(sqlite_path(stores.url)))
