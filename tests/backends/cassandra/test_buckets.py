"""How the Cassandra store cuts streams into buckets (a real 1-node cluster, bucket size 10)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest

from eskit import ConcurrencyError, OperationalError, SchemaError, open_stores
from eskit.stores.cassandra import CassandraEventStore
from eskit.testing.contract import T0, new_event
from eskit.timetravel import TIME_STRIDE
from tests.support.cassandra import ClusterPool, fresh_keyspace, store_url

pytestmark = [pytest.mark.cassandra, pytest.mark.cluster(nodes=1)]


@pytest.fixture(scope="module")
def keyspace_url(cluster_pool: ClusterPool) -> str:
    return store_url(cluster_pool.get(1), fresh_keyspace("buckets"), bucket_size="10")


@pytest.fixture(scope="module")
def store(keyspace_url: str) -> Iterator[CassandraEventStore]:
    events = open_stores(keyspace_url).events
    yield events
    events.close()


def stream() -> str:
    return f"s-{uuid.uuid4().hex}"


def test_an_append_that_spills_past_a_bucket_end_is_followed_correctly(store: CassandraEventStore) -> None:
    s = stream()
    store.append(s, [new_event(1)], expected_version=0)
    store.append(s, [new_event(i) for i in range(2, 12)], expected_version=1)  # 2..11: spills past 10
    assert store.version(s) == 11
    store.append(s, [new_event(12)], expected_version=11)  # first append of bucket 1
    store.append(s, [new_event(13)], expected_version=12)
    with pytest.raises(ConcurrencyError):
        store.append(s, [new_event(99)], expected_version=12)
    with pytest.raises(ConcurrencyError):
        store.append(s, [new_event(99)], expected_version=11)
    for n in range(14, 25):
        store.append(s, [new_event(n)], expected_version=n - 1)
    assert [e.position for e in store.read(s)] == list(range(1, 25))
    assert [e.data for e in store.read(s, gt=9, lte=14)] == [b'{"n":%d}' % n for n in range(10, 15)]
    assert [e.position for e in store.read(s, gt=11, limit=3)] == [12, 13, 14]
    assert [e.position for e in store.read(s, desc=True, limit=4)] == [24, 23, 22, 21]
    assert store.version(s) == 24


def test_an_expected_version_ahead_of_the_stream_is_a_conflict_in_any_bucket(store: CassandraEventStore) -> None:
    s = stream()
    store.append(s, [new_event(i) for i in range(1, 6)], expected_version=0)
    for ahead in (6, 10, 20, 35):
        with pytest.raises(ConcurrencyError):
            store.append(s, [new_event(99)], expected_version=ahead)
    assert store.version(s) == 5


def test_a_keyspace_refuses_to_open_with_another_bucket_size(keyspace_url: str, store: CassandraEventStore) -> None:
    with pytest.raises(SchemaError, match="bucket_size"):
        open_stores(keyspace_url.replace("bucket_size=10", "bucket_size=100"))


def test_a_missing_keyspace_is_refused_with_a_hint_to_create_it(keyspace_url: str) -> None:
    missing = keyspace_url.replace("create_schema=true", "create_schema=false").split("/")
    missing[3] = "no_such_keyspace?" + missing[3].split("?", 1)[1]
    with pytest.raises(SchemaError, match="store init"):
        open_stores("/".join(missing))


def test_a_read_bounded_far_beyond_the_head_stops_at_the_head(store: CassandraEventStore) -> None:
    """Time travel to version 2**62 must not walk 2**62 / bucket_size empty buckets."""
    s = stream()
    store.append(s, [new_event(i) for i in range(1, 4)], expected_version=0)
    assert [e.position for e in store.read(s, lte=2**62)] == [1, 2, 3]
    assert [e.position for e in store.read(s, gt=1, lte=2**62, desc=True)] == [3, 2]


def test_a_read_never_returns_fewer_events_than_the_head_it_reports(store: CassandraEventStore) -> None:
    s = stream()
    store.append(s, [new_event(i) for i in range(1, 4)], expected_version=0)
    # What a reader meets when a commit reached some replicas only: a head past the rows it can see.
    keyspace = store.db.settings.keyspace
    store.db.session.execute(f"UPDATE {keyspace}.events SET head = 4 WHERE stream_id = %s AND bucket = 0", (s,))
    assert store.version(s) == 4

    with pytest.raises(OperationalError, match="disagree"):
        store.read(s)
    with pytest.raises(OperationalError, match="disagree"):
        store.read(s, gt=2)
    assert [e.position for e in store.read(s, lte=3)] == [1, 2, 3]  # what exists can still be read


def test_time_travel_over_a_long_stream_uses_and_repairs_the_time_index(keyspace_url: str) -> None:
    # Buckets of 1,000: long appends, so 70,000 events take 700 appends; the stream crosses 70 partitions.
    url = keyspace_url.replace("bucket_size=10", "bucket_size=1000").replace("/buckets_", "/times_")
    events = open_stores(url).events
    try:
        s = stream()
        length = 70_000  # past TIME_STRIDE * 64, where time travel probes strided positions
        times = [T0 + timedelta(milliseconds=i) for i in range(length)]
        for start in range(0, length, 100):
            events.append(
                s, [new_event(i, at=times[i - 1]) for i in range(start + 1, start + 101)], expected_version=start
            )
        keyspace = events.db.settings.keyspace
        indexed = events.db.session.execute(f"SELECT position FROM {keyspace}.event_times WHERE stream_id = %s", (s,))
        assert [row.position for row in indexed] == list(range(1, length + 1, TIME_STRIDE))

        events.db.session.execute(f"DELETE FROM {keyspace}.event_times WHERE stream_id = %s AND position = 33793", (s,))
        for position in [1, TIME_STRIDE + 1, 33_793, 33_794, 65_537, length]:
            assert events.version_at(s, times[position - 1]) == position
            assert events.version_at(s, times[position - 1] - timedelta(microseconds=1)) == position - 1
        again = events.db.session.execute(
            f"SELECT position FROM {keyspace}.event_times WHERE stream_id = %s AND position = 33793", (s,)
        )
        assert again.one() is not None  # the read put the missing entry back
    finally:
        events.close()
