"""The contract every event store and snapshot store must meet (a TCK).

Each backend's test module subclasses :class:`EventStoreContract` and
:class:`SnapshotStoreContract` and provides a factory; pytest then runs every
test here against it. Backends that cannot do something set a capability flag
rather than deleting a test.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from eskit.events import NewEvent, Snapshot
from eskit.exceptions import ConcurrencyError, InterfaceError
from eskit.ports import EventFeed, EventStore, FeedEvent, SnapshotStore
from eskit.stores.registry import Stores
from eskit.timetravel import TIME_STRIDE, search_version_at

__all__ = [
    "T0",
    "EventFeedContract",
    "EventStoreContract",
    "SnapshotStoreContract",
    "new_event",
    "read_whole_feed",
    "unique_stream",
]

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def new_event(n: int = 0, *, payload: bytes | None = None, at: datetime | None = None) -> NewEvent:
    """A small encoded event for store tests; ``n`` makes its payload recognisable."""
    return NewEvent(
        type_name="Tested",
        schema_version=1,
        data=payload if payload is not None else b'{"n":%d}' % n,
        metadata=b'{"request_id":"r-%d"}' % n,
        recorded_at=at or T0 + timedelta(seconds=n),
    )


def unique_stream() -> str:
    return f"stream-{uuid.uuid4().hex}"


class EventStoreContract:
    """Behaviour every :class:`EventStore` adapter must show."""

    #: how many threads race in the concurrency test
    racers: int = 8
    #: how many appends each racer attempts
    race_rounds: int = 10
    #: the most events one append of the long-stream tests holds (a backend's batch limit)
    max_append: int = 1000
    #: whether to build streams long enough for the strided rounds of time travel (70,000 events)
    long_streams: bool = True

    def make_event_store(self) -> EventStore:
        raise NotImplementedError

    def release_event_store(self, store: EventStore) -> None:
        """Called after each test; backends that share one connection per module override it."""
        store.close()

    @pytest.fixture
    def store(self) -> Iterator[EventStore]:
        store = self.make_event_store()
        try:
            yield store
        finally:
            self.release_event_store(store)

    def test_an_unknown_stream_reads_empty_at_version_zero(self, store: EventStore) -> None:
        stream = unique_stream()
        assert store.read(stream) == []
        assert store.version(stream) == 0

    def test_appended_events_read_back_in_order_with_positions(self, store: EventStore) -> None:
        stream = unique_stream()
        events = [new_event(i) for i in range(1, 4)]
        assert store.append(stream, events, expected_version=0) == 3
        stored = store.read(stream)
        assert [e.position for e in stored] == [1, 2, 3]
        assert [e.data for e in stored] == [e.data for e in events]
        assert [e.event_id for e in stored] == [e.event_id for e in events]
        assert [e.metadata for e in stored] == [e.metadata for e in events]
        assert [e.recorded_at for e in stored] == [e.recorded_at for e in events]
        assert all(e.stream_id == stream and e.type_name == "Tested" for e in stored)
        assert store.version(stream) == 3

    def test_appends_continue_from_the_expected_version(self, store: EventStore) -> None:
        stream = unique_stream()
        store.append(stream, [new_event(1)], expected_version=0)
        assert store.append(stream, [new_event(2), new_event(3)], expected_version=1) == 3
        assert [e.data for e in store.read(stream)] == [b'{"n":1}', b'{"n":2}', b'{"n":3}']

    def test_reads_honour_bounds_limit_and_direction(self, store: EventStore) -> None:
        stream = unique_stream()
        store.append(stream, [new_event(i) for i in range(1, 11)], expected_version=0)
        assert [e.position for e in store.read(stream, gt=3)] == list(range(4, 11))
        assert [e.position for e in store.read(stream, lte=4)] == [1, 2, 3, 4]
        assert [e.position for e in store.read(stream, gt=2, lte=5)] == [3, 4, 5]
        assert [e.position for e in store.read(stream, gt=2, limit=3)] == [3, 4, 5]
        assert [e.position for e in store.read(stream, desc=True, limit=2)] == [10, 9]
        assert [e.position for e in store.read(stream, gt=5, lte=8, desc=True)] == [8, 7, 6]
        assert store.read(stream, gt=10) == []
        assert store.read(stream, limit=0) == []

    def test_a_stale_expected_version_conflicts_and_writes_nothing(self, store: EventStore) -> None:
        stream = unique_stream()
        store.append(stream, [new_event(1), new_event(2)], expected_version=0)
        for stale in (0, 1, 3):
            with pytest.raises(ConcurrencyError):
                store.append(stream, [new_event(9), new_event(10)], expected_version=stale)
        assert [e.position for e in store.read(stream)] == [1, 2]
        assert store.version(stream) == 2

    def test_a_multi_event_append_is_all_or_nothing(self, store: EventStore) -> None:
        stream = unique_stream()
        store.append(stream, [new_event(1)], expected_version=0)
        batch = [new_event(i) for i in range(2, 12)]
        with pytest.raises(ConcurrencyError):
            store.append(stream, batch, expected_version=0)
        assert store.version(stream) == 1
        store.append(stream, batch, expected_version=1)
        assert [e.position for e in store.read(stream)] == list(range(1, 12))

    def test_streams_are_independent(self, store: EventStore) -> None:
        a, b = unique_stream(), unique_stream()
        store.append(a, [new_event(1), new_event(2)], expected_version=0)
        store.append(b, [new_event(3)], expected_version=0)
        assert [e.data for e in store.read(a)] == [b'{"n":1}', b'{"n":2}']
        assert [e.data for e in store.read(b)] == [b'{"n":3}']

    def test_bad_arguments_are_refused(self, store: EventStore) -> None:
        stream = unique_stream()
        with pytest.raises(InterfaceError):
            store.append(stream, [], expected_version=0)
        with pytest.raises(InterfaceError):
            store.append(stream, [new_event(1)], expected_version=-1)
        with pytest.raises(InterfaceError):
            store.read(stream, gt=-1)
        assert store.version(stream) == 0

    def test_large_and_unicode_payloads_round_trip(self, store: EventStore) -> None:
        stream = unique_stream()
        big = b'{"blob":"' + b"x" * 1_000_000 + b'"}'
        text = '{"name":"Zoë 🎬 東京 \\u0000 ok"}'.encode()
        store.append(stream, [new_event(1, payload=big), new_event(2, payload=text)], expected_version=0)
        stored = store.read(stream)
        assert stored[0].data == big
        assert stored[1].data == text

    def test_unicode_stream_ids_are_kept_apart(self, store: EventStore) -> None:
        base = unique_stream()
        store.append(base + "-é", [new_event(1)], expected_version=0)
        store.append(base + "-e", [new_event(2)], expected_version=0)
        assert store.read(base + "-é")[0].data == b'{"n":1}'
        assert store.read(base + "-e")[0].data == b'{"n":2}'

    def test_version_at_a_time_is_the_last_event_recorded_by_then(self, store: EventStore) -> None:
        stream = unique_stream()
        store.append(stream, [new_event(i) for i in range(1, 6)], expected_version=0)
        assert store.version_at(stream, T0) == 0
        assert store.version_at(stream, T0 + timedelta(seconds=3)) == 3
        assert store.version_at(stream, T0 + timedelta(seconds=3, microseconds=999)) == 3
        assert store.version_at(stream, T0 + timedelta(days=1)) == 5

    def test_version_at_finds_the_last_event_recorded_by_then_in_a_long_stream(self, store: EventStore) -> None:
        stream = unique_stream()
        times = [T0 + timedelta(seconds=3 * (i // 2)) for i in range(1, 1201)]  # pairs share a time
        for start in range(0, len(times), 7):  # appends of 7: some straddle a store's partitions
            batch = [new_event(i, at=times[i - 1]) for i in range(start + 1, min(start + 8, len(times) + 1))]
            store.append(stream, batch, expected_version=start)
        for probe in [T0 - timedelta(seconds=1), *times[::37], times[-1] + timedelta(seconds=1)]:
            for when in (probe, probe + timedelta(microseconds=1), probe - timedelta(microseconds=1)):
                expected = max((i for i, t in enumerate(times, start=1) if t <= when), default=0)
                assert store.version_at(stream, when) == expected

    def test_version_at_in_a_stream_long_enough_for_strided_rounds(self, store: EventStore) -> None:
        if not self.long_streams:
            pytest.skip("this binding covers long streams in a test of its own")
        stream = unique_stream()
        length = TIME_STRIDE * 64 + 4000
        times = [T0 + timedelta(milliseconds=i) for i in range(length)]
        for start in range(0, length, self.max_append):
            batch = [new_event(i, at=times[i - 1]) for i in range(start + 1, min(start + self.max_append, length) + 1)]
            store.append(stream, batch, expected_version=start)
        for position in [1, 2, TIME_STRIDE, TIME_STRIDE + 1, 33_333, 65_537, length - 1, length]:
            at = times[position - 1]
            assert store.version_at(stream, at) == position
            assert store.version_at(stream, at - timedelta(microseconds=1)) == position - 1
        assert store.version_at(stream, times[-1] + timedelta(days=1)) == length

    def test_version_at_gives_the_same_answer_on_every_store_when_times_go_backwards(self, store: EventStore) -> None:
        # Written by processes whose clocks disagreed, before decision times were kept monotonic.
        offsets = [0, 5, 3, 9, 1, 12, 12, 4, 20, 15, 30, 2, 31, 40, 33, 50, 41, 60, 7, 70, 71, 65, 80]
        times = [T0 + timedelta(seconds=s) for s in offsets]
        stream = unique_stream()
        events = [new_event(i, at=t) for i, t in enumerate(times, start=1)]
        for start in range(0, len(events), 5):
            store.append(stream, events[start : start + 5], expected_version=start)
        for seconds in range(-1, 82):
            when = T0 + timedelta(seconds=seconds)
            reference = search_version_at(len(times), when, lambda ps: {p: times[p - 1] for p in ps})
            assert store.version_at(stream, when) == reference

    def test_a_walk_over_stream_ids_meets_every_stream_once(self, store: EventStore) -> None:
        mine = {unique_stream() for _ in range(23)}
        for n, stream in enumerate(sorted(mine)):
            store.append(stream, [new_event(k) for k in range(1 + n % 3)], expected_version=0)
        met: list[str] = []
        after: str | None = None
        while page := store.stream_ids(after=after, limit=5):
            assert len(page) <= 5
            met.extend(page)
            after = page[-1]
        assert len(met) == len(set(met)), "a stream met twice"
        assert mine <= set(met)
        assert store.stream_ids(after=met[-1]) == []
        assert store.stream_ids(limit=0) == []

    def test_append_many_makes_each_append_and_answers_each(self, store: EventStore) -> None:
        a, b, c = unique_stream(), unique_stream(), unique_stream()
        store.append(b, [new_event(0)], expected_version=0)
        assert store.append_many([(a, [new_event(1), new_event(2)], 0), (b, [new_event(3)], 1)]) == [2, 2]
        answers = store.append_many([(c, [new_event(4)], 0), (a, [new_event(5)], 0), (b, [new_event(6)], 2)])
        assert answers[0] == 1 and answers[2] == 3
        assert isinstance(answers[1], ConcurrencyError)
        # every append was attempted: the one that conflicted wrote nothing, the others stand
        assert [e.data for e in store.read(a)] == [new_event(1).data, new_event(2).data]
        assert store.version(b) == 3
        assert [e.data for e in store.read(c)] == [new_event(4).data]
        assert store.append_many([]) == []

    def test_concurrent_appenders_get_one_winner_per_version(self, store: EventStore) -> None:
        stream = unique_stream()
        wins: list[tuple[int, bytes]] = []
        errors: list[BaseException] = []
        lock = threading.Lock()
        start = threading.Barrier(self.racers)

        def racer(who: int) -> None:
            try:
                start.wait()
                for round_ in range(self.race_rounds):
                    event = new_event(who * 1000 + round_)
                    for _ in range(200):
                        expected = store.version(stream)
                        try:
                            store.append(stream, [event], expected_version=expected)
                        except ConcurrencyError:
                            continue
                        with lock:
                            wins.append((expected + 1, event.data))
                        break
            except BaseException as exc:  # reported below, so a failure is not swallowed
                errors.append(exc)

        threads = [threading.Thread(target=racer, args=(i,)) for i in range(self.racers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors
        stored = store.read(stream)
        total = self.racers * self.race_rounds
        assert [e.position for e in stored] == list(range(1, total + 1))
        assert len(wins) == total
        assert sorted(wins) == [(e.position, e.data) for e in stored]


class SnapshotStoreContract:
    """Behaviour every :class:`SnapshotStore` adapter must show."""

    def make_snapshot_store(self) -> SnapshotStore:
        raise NotImplementedError

    def release_snapshot_store(self, store: SnapshotStore) -> None:
        """Called after each test; backends that share one connection per module override it."""
        store.close()

    @pytest.fixture
    def snapshots(self) -> Iterator[SnapshotStore]:
        store = self.make_snapshot_store()
        try:
            yield store
        finally:
            self.release_snapshot_store(store)

    @staticmethod
    def snap(stream: str, version: int, state: bytes = b"{}") -> Snapshot:
        return Snapshot(stream, version, "State", 1, state, T0 + timedelta(seconds=version))

    def test_no_snapshot_loads_as_none(self, snapshots: SnapshotStore) -> None:
        assert snapshots.load(unique_stream()) is None

    def test_the_latest_snapshot_at_or_below_a_version_is_loaded(self, snapshots: SnapshotStore) -> None:
        stream = unique_stream()
        for version in (10, 30, 20):
            snapshots.save(self.snap(stream, version, b'{"v":%d}' % version))
        latest = snapshots.load(stream)
        assert latest is not None and latest.version == 30 and latest.state == b'{"v":30}'
        at_25 = snapshots.load(stream, lte=25)
        assert at_25 is not None and at_25.version == 20
        at_20 = snapshots.load(stream, lte=20)
        assert at_20 is not None and at_20.version == 20
        assert snapshots.load(stream, lte=9) is None

    def test_snapshot_fields_round_trip(self, snapshots: SnapshotStore) -> None:
        stream = unique_stream()
        original = Snapshot(stream, 7, "Account", 3, '{"zoë":"🎬"}'.encode(), T0)
        snapshots.save(original)
        assert snapshots.load(stream) == original

    def test_saving_a_version_again_replaces_it(self, snapshots: SnapshotStore) -> None:
        stream = unique_stream()
        snapshots.save(self.snap(stream, 5, b'{"a":1}'))
        snapshots.save(self.snap(stream, 5, b'{"a":2}'))
        loaded = snapshots.load(stream)
        assert loaded is not None and loaded.state == b'{"a":2}'

    def test_versions_list_and_delete_removes_only_what_it_names(self, snapshots: SnapshotStore) -> None:
        stream, other = unique_stream(), unique_stream()
        for version in (30, 10, 20, 40):
            snapshots.save(self.snap(stream, version))
        snapshots.save(self.snap(other, 10))
        assert snapshots.versions(stream) == [10, 20, 30, 40]
        snapshots.delete(stream, [10, 30, 99])
        assert snapshots.versions(stream) == [20, 40]
        assert snapshots.load(stream, lte=35) == self.snap(stream, 20)
        assert snapshots.versions(other) == [10]
        assert snapshots.versions(unique_stream()) == []
        snapshots.delete(stream, [])

    def test_snapshots_of_streams_are_independent(self, snapshots: SnapshotStore) -> None:
        a, b = unique_stream(), unique_stream()
        snapshots.save(self.snap(a, 3))
        assert snapshots.load(b) is None


def read_whole_feed(feed: EventFeed, *, shard: int = 0, page: int = 7) -> list[FeedEvent]:
    """Every event of a shard, read in small pages as a follower would, checking each page continues the last."""
    found: list[FeedEvent] = []
    after = 0
    while True:
        batch = feed.read(shard=shard, after=after, limit=page)
        if not batch:
            return found
        assert [e.sequence for e in batch] == list(range(after + 1, after + 1 + len(batch))), "a gap in the feed"
        found.extend(batch)
        after = batch[-1].sequence


class EventFeedContract:
    """Behaviour every :class:`EventFeed` adapter with one total order (memory, SQLite) must show.

    A follower never misses an event, sees each stream's events in order, and never sees an
    event whose append was refused; the sequence is 1, 2, 3 ... with no gap, in commit order.
    """

    #: writer threads in the concurrent test, and appends each tries
    writers: int = 4
    appends_each: int = 25

    def make_stores(self) -> Stores:
        """Open stores whose ``feed`` is set."""
        raise NotImplementedError

    @pytest.fixture
    def stores(self) -> Iterator[Stores]:
        stores = self.make_stores()
        assert stores.feed is not None, "these stores have no feed"
        try:
            yield stores
        finally:
            stores.close()

    def test_an_empty_store_has_an_empty_feed_at_head_zero(self, stores: Stores) -> None:
        assert stores.feed is not None
        assert stores.feed.read(after=0) == []
        assert stores.feed.head() == 0

    def test_every_appended_event_appears_once_in_commit_order(self, stores: Stores) -> None:
        assert stores.feed is not None
        a, b = unique_stream(), unique_stream()
        stores.events.append(a, [new_event(1), new_event(2)], expected_version=0)
        stores.events.append(b, [new_event(3)], expected_version=0)
        stores.events.append(a, [new_event(4)], expected_version=2)

        seen = read_whole_feed(stores.feed, page=2)

        assert [(e.sequence, e.event.stream_id, e.event.position, e.event.data) for e in seen] == [
            (1, a, 1, b'{"n":1}'),
            (2, a, 2, b'{"n":2}'),
            (3, b, 1, b'{"n":3}'),
            (4, a, 3, b'{"n":4}'),
        ]
        assert stores.feed.head() == 4
        assert seen[0].event == stores.events.read(a)[0]

    def test_a_refused_append_takes_no_place_in_the_feed(self, stores: Stores) -> None:
        assert stores.feed is not None
        stream = unique_stream()
        stores.events.append(stream, [new_event(1)], expected_version=0)
        with pytest.raises(ConcurrencyError):
            stores.events.append(stream, [new_event(2), new_event(3)], expected_version=0)
        stores.events.append(stream, [new_event(4)], expected_version=1)

        assert [(e.sequence, e.event.data) for e in read_whole_feed(stores.feed)] == [
            (1, b'{"n":1}'),
            (2, b'{"n":4}'),
        ]

    def test_reading_after_the_head_or_with_a_limit_is_bounded(self, stores: Stores) -> None:
        assert stores.feed is not None
        stream = unique_stream()
        stores.events.append(stream, [new_event(n) for n in range(5)], expected_version=0)

        assert [e.sequence for e in stores.feed.read(after=1, limit=2)] == [2, 3]
        assert stores.feed.read(after=5) == []
        assert stores.feed.read(after=50) == []

    def test_a_follower_reading_during_concurrent_appends_misses_nothing(self, stores: Stores) -> None:
        feed = stores.feed
        assert feed is not None
        shared = unique_stream()
        own = [unique_stream() for _ in range(self.writers)]
        done = threading.Event()
        errors: list[BaseException] = []
        followed: list[FeedEvent] = []

        def writer(i: int) -> None:
            try:
                for n in range(self.appends_each):
                    stores.events.append(own[i], [new_event(n)], expected_version=n)
                    while True:  # and one event on the contended stream, retried on conflict
                        try:
                            stores.events.append(shared, [new_event(n)], expected_version=stores.events.version(shared))
                            break
                        except ConcurrencyError:
                            continue
            except BaseException as exc:
                errors.append(exc)

        def follower() -> None:
            after = 0
            while not done.is_set() or feed.head() > after:
                batch = feed.read(after=after, limit=5)
                if batch and batch[0].sequence != after + 1:
                    errors.append(AssertionError(f"the follower at {after} was shown {batch[0].sequence} next"))
                    return
                followed.extend(batch)
                after = batch[-1].sequence if batch else after

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(self.writers)]
        watcher = threading.Thread(target=follower)
        watcher.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        done.set()
        watcher.join(timeout=120)

        assert errors == []
        total = 2 * self.writers * self.appends_each
        assert [e.sequence for e in followed] == list(range(1, total + 1))
        stored = {(e.stream_id, e.position): e for s in [*own, shared] for e in stores.events.read(s)}
        assert {(e.event.stream_id, e.event.position): e.event for e in followed} == stored
        for stream in [*own, shared]:
            positions = [e.event.position for e in followed if e.event.stream_id == stream]
            assert positions == list(range(1, len(positions) + 1)), f"{stream} out of order in the feed"
