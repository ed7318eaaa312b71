"""The library's tracking and process recorders on eskit's SQLite store.

A tracking record says how far an application has processed another application's
notifications. The SQLite store keeps one position per upstream application name (its
``tracked`` table) and moves it only forward; a process recorder writes it in the same
``append_all`` transaction as the events that processing made, so the two never part:
after a crash either both are stored or neither is, and the notification is processed again.

A Cassandra store offers neither (see ``docs/eventsourcing.md``): it has no transaction
that could hold a tracking record with events in other partitions.
"""

from __future__ import annotations

from eventsourcing import persistence as es

from eskit.interop.eventsourcing.errors import translated
from eskit.interop.eventsourcing.recorders import SQLiteApplicationRecorder, sqlite_event_store
from eskit.interop.eventsourcing.streams import OriginatorIds
from eskit.stores.registry import Stores

__all__ = ["SQLiteProcessRecorder", "SQLiteTrackingRecorder"]


class SQLiteTrackingRecorder(es.TrackingRecorder):
    """Tracking records in eskit's SQLite store: one forward-only position per upstream application."""

    def __init__(self, stores: Stores, ids: OriginatorIds) -> None:
        self.stores = stores
        self.sqlite = sqlite_event_store(stores)

    def insert_tracking(self, tracking: es.Tracking) -> None:
        """Record ``tracking``; ``IntegrityError`` when its id is not above the one recorded."""
        with translated():
            self.sqlite.append_all([], tracking=(tracking.application_name, tracking.notification_id))

    def max_tracking_id(self, application_name: str) -> int | None:
        with translated():
            return self.sqlite.tracked(application_name)


class SQLiteProcessRecorder(SQLiteTrackingRecorder, SQLiteApplicationRecorder, es.ProcessRecorder):
    """Events and the tracking record they were made for (``insert_events(..., tracking=t)``) in one transaction."""

    def __init__(self, stores: Stores, ids: OriginatorIds) -> None:
        SQLiteTrackingRecorder.__init__(self, stores, ids)
        SQLiteApplicationRecorder.__init__(self, stores, ids)
