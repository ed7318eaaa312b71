"""In-memory event and snapshot stores, and both kinds of feed: thread-safe, gone with the process."""

from __future__ import annotations

import bisect
import threading
import uuid
import zlib
from collections.abc import Sequence
from datetime import datetime

from eskit.events import NewEvent, Snapshot, StoredEvent
from eskit.exceptions import ConcurrencyError
from eskit.ports import EventFeed, EventStore, FeedEvent, SnapshotStore, StreamFeed
from eskit.stores.checks import check_append, check_read

__all__ = ["InMemoryEventFeed", "InMemoryEventStore", "InMemorySnapshotStore", "InMemoryStreamFeed"]


class InMemoryEventStore(EventStore):
    """Streams kept in a dict of lists, guarded by one lock."""

    def __init__(self, *, shards: int = 4) -> None:
        self._lock = threading.Lock()
        self._streams: dict[str, list[StoredEvent]] = {}
        self._log: list[StoredEvent] = []  # every event in commit order: the feed (sequence = index + 1)
        #: the stream feed's hints: per shard, stream -> {head: recorded time}, written with each append
        self.shards = shards
        self._hints: list[dict[str, dict[int, datetime]]] = [{} for _ in range(shards)]
        self.store_id = uuid.uuid4().hex  # the feed's store_id: each in-memory store is a store of its own

    def append(self, stream_id: str, events: Sequence[NewEvent], *, expected_version: int) -> int:
        check_append(stream_id, events, expected_version)
        with self._lock:
            stream = self._streams.setdefault(stream_id, [])
            if len(stream) != expected_version:
                raise ConcurrencyError(stream_id, expected_version, len(stream))
            for offset, event in enumerate(events, start=1):
                stored = StoredEvent(
                    stream_id=stream_id,
                    position=expected_version + offset,
                    type_name=event.type_name,
                    schema_version=event.schema_version,
                    data=event.data,
                    metadata=event.metadata,
                    recorded_at=event.recorded_at,
                    event_id=event.event_id,
                )
                stream.append(stored)
                self._log.append(stored)
            # The hint and the append are one step under the lock: no hint of a refused append.
            hints = self._hints[zlib.crc32(stream_id.encode("utf-8")) % self.shards].setdefault(stream_id, {})
            hints[len(stream)] = events[0].recorded_at
            return len(stream)

    def read(
        self,
        stream_id: str,
        *,
        gt: int = 0,
        lte: int | None = None,
        limit: int | None = None,
        desc: bool = False,
    ) -> list[StoredEvent]:
        check_read(gt, lte, limit)
        with self._lock:
            stream = self._streams.get(stream_id, [])
            upper = len(stream) if lte is None else min(lte, len(stream))
            selected = stream[gt:upper] if gt < upper else []
        if desc:
            selected = selected[::-1]
        return selected if limit is None else selected[:limit]

    def stream_ids(self, *, after: str | None = None, limit: int = 1000) -> list[str]:
        with self._lock:
            ids = sorted(self._streams)  # a test store: sorting on each page is fine
        start = 0 if after is None else bisect.bisect_right(ids, after)
        return ids[start : start + limit]

    def version(self, stream_id: str) -> int:
        with self._lock:
            return len(self._streams.get(stream_id, []))

    def recorded_times(self, stream_id: str, positions: Sequence[int]) -> dict[int, datetime]:
        with self._lock:
            stream = self._streams.get(stream_id, [])
            return {p: stream[p - 1].recorded_at for p in positions}


class InMemoryEventFeed(EventFeed):
    """The feed of an in-memory store: its events in the order they were appended, one shard.

    Appends and the log are changed under the store's one lock, so the sequence
    has no gap and a refused append takes no number.
    """

    def __init__(self, store: InMemoryEventStore) -> None:
        self.store = store

    def read(self, *, shard: int = 0, after: int = 0, limit: int = 1000) -> list[FeedEvent]:
        if shard != 0:
            raise ValueError(f"the in-memory feed has one shard (0), not {shard}")
        with self.store._lock:
            selected = self.store._log[after : after + limit]
        return [FeedEvent(0, after + n, event) for n, event in enumerate(selected, start=1)]

    def head(self, *, shard: int = 0) -> int:
        with self.store._lock:
            return len(self.store._log)

    def store_id(self) -> str | None:
        return self.store.store_id


class InMemoryStreamFeed(StreamFeed):
    """The stream feed of an in-memory store: the hints its appends leave, per shard (``crc32(stream) mod shards``).

    Each append leaves its hint under the store's lock, so the feed behaves as
    Cassandra's "hint, then append" with nothing in between; it lets the
    followers that stores without one commit order need run in unit tests.
    """

    def __init__(self, store: InMemoryEventStore) -> None:
        self.store = store

    @property
    def shards(self) -> int:
        return self.store.shards

    def pending(self, *, shard: int, limit: int = 1000, after: str | None = None) -> dict[str, int]:
        with self.store._lock:
            hinted = self.store._hints[shard]
            streams = sorted(s for s in hinted if after is None or s > after)[:limit]
            return {s: max(hinted[s]) for s in streams}

    def settle(self, *, shard: int, stream_id: str, upto: int) -> None:
        with self.store._lock:
            hinted = self.store._hints[shard]
            heads = hinted.get(stream_id, {})
            for head in [h for h in heads if h <= upto]:
                del heads[head]
            if not heads:
                hinted.pop(stream_id, None)

    def backlog(self, *, limit: int = 10_000) -> tuple[int, datetime | None]:
        with self.store._lock:
            times = [t for shard in self.store._hints for heads in shard.values() for t in heads.values()]
        return min(len(times), limit * self.shards), min(times, default=None)


class InMemorySnapshotStore(SnapshotStore):
    """Snapshots per stream, keyed by version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots: dict[str, dict[int, Snapshot]] = {}

    def save(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._snapshots.setdefault(snapshot.stream_id, {})[snapshot.version] = snapshot

    def load(self, stream_id: str, *, lte: int | None = None) -> Snapshot | None:
        with self._lock:
            versions = [v for v in self._snapshots.get(stream_id, {}) if lte is None or v <= lte]
            return self._snapshots[stream_id][max(versions)] if versions else None

    def versions(self, stream_id: str) -> list[int]:
        with self._lock:
            return sorted(self._snapshots.get(stream_id, {}))

    def delete(self, stream_id: str, versions: Sequence[int]) -> None:
        with self._lock:
            held = self._snapshots.get(stream_id, {})
            for version in versions:
                held.pop(version, None)
