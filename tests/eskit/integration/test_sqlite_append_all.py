"""The SQLite store's ``append_all``: appends of several streams and a tracking position, all or nothing.

A process that turns another sequence's events into appends (an ``eventsourcing`` process
application, a policy) needs its appends and its place in that sequence to commit together:
otherwise a crash between them loses events or makes it redo work. These tests hold the
store to that, and to the feed staying one gap-free sequence in which each call's events
stand together.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from eskit import ConcurrencyError, IntegrityError, InterfaceError, NewEvent
from eskit.stores.sqlite import SQLiteEventFeed, SQLiteEventStore
from eskit.testing.contract import read_whole_feed

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def events(*names: str) -> list[NewEvent]:
    return [NewEvent("test.Happened", 1, name.encode(), b"{}", T0) for name in names]


@pytest.fixture
def store(tmp_path: Path) -> SQLiteEventStore:
    return SQLiteEventStore(tmp_path / "events.db")


def test_appends_of_several_streams_commit_together_and_say_which_feed_sequences_they_took(
    store: SQLiteEventStore,
) -> None:
    store.append("a", events("a1"), expected_version=0)

    taken = store.append_all([("a", events("a2", "a3"), 1), ("b", events("b1"), 0)])

    assert taken == [range(2, 4), range(4, 5)]
    assert [e.data for e in store.read("a")] == [b"a1", b"a2", b"a3"]
    feed = SQLiteEventFeed(store.db)
    assert [(f.sequence, f.event.stream_id, f.event.data) for f in feed.read(after=1)] == [
        (2, "a", b"a2"),
        (3, "a", b"a3"),
        (4, "b", b"b1"),
    ]


def test_one_stale_append_writes_nothing_of_any(store: SQLiteEventStore) -> None:
    store.append("a", events("a1"), expected_version=0)

    with pytest.raises(ConcurrencyError) as refused:
        store.append_all([("b", events("b1"), 0), ("a", events("a2"), 0)], tracking=("upstream", 7))

    assert refused.value.stream_id == "a"
    assert store.read("b") == []
    assert store.version("a") == 1
    assert store.tracked("upstream") is None
    assert SQLiteEventFeed(store.db).head() == 1


def test_a_tracking_position_is_recorded_with_the_appends_and_only_moves_forward(store: SQLiteEventStore) -> None:
    assert store.tracked("upstream") is None

    store.append_all([("a", events("a1"), 0)], tracking=("upstream", 5))
    assert store.tracked("upstream") == 5
    store.append_all([], tracking=("upstream", 9))  # a position alone: an upstream event that caused nothing
    assert store.tracked("upstream") == 9
    assert store.tracked("other") is None

    for stale in (9, 3):
        with pytest.raises(IntegrityError) as refused:
            store.append_all([("b", events("b1"), 0)], tracking=("upstream", stale))
        assert not isinstance(refused.value, ConcurrencyError)
        assert "upstream" in str(refused.value)
    assert store.read("b") == []
    assert store.tracked("upstream") == 9


def test_positions_of_different_upstreams_are_kept_apart(store: SQLiteEventStore) -> None:
    store.append_all([], tracking=("one", 21))
    store.append_all([], tracking=("two", 3))
    store.append_all([], tracking=("one", 22))

    assert (store.tracked("one"), store.tracked("two")) == (22, 3)


def test_bad_calls_are_refused_before_anything_is_written(store: SQLiteEventStore) -> None:
    with pytest.raises(InterfaceError, match="twice"):
        store.append_all([("a", events("a1"), 0), ("a", events("a2"), 1)])
    with pytest.raises(InterfaceError):
        store.append_all([("a", [], 0)])
    with pytest.raises(InterfaceError):
        store.append_all([], tracking=("", 1))
    with pytest.raises(InterfaceError):
        store.append_all([], tracking=("upstream", -1))
    assert store.append_all([]) == []
    assert SQLiteEventFeed(store.db).head() == 0
    assert store.tracked("upstream") is None


def test_under_concurrent_writers_each_calls_events_stand_together_in_a_gap_free_feed(
    store: SQLiteEventStore,
) -> None:
    writers, calls, streams_per_call = 6, 15, 3
    errors: list[BaseException] = []
    taken: list[list[range]] = []
    lock = threading.Lock()

    def write(w: int) -> None:
        try:
            for c in range(calls):
                appends = [(f"w{w}-c{c}-s{s}", events("x", "y"), 0) for s in range(streams_per_call)]
                got = store.append_all(appends, tracking=(f"upstream-{w}", c + 1))
                store.append(f"single-{w}-{c}", events("z"), expected_version=0)  # grouped appends interleave
                with lock:
                    taken.append(got)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert not any(thread.is_alive() for thread in threads)

    feed = read_whole_feed(SQLiteEventFeed(store.db))
    assert [f.sequence for f in feed] == list(range(1, len(feed) + 1))
    assert len(feed) == writers * calls * (streams_per_call * 2 + 1)
    by_sequence = {f.sequence: f.event for f in feed}
    for got in taken:
        numbers = [n for r in got for n in r]
        assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # one unbroken run per call
        assert {by_sequence[n].stream_id.rsplit("-", 1)[0] for n in numbers} == {
            by_sequence[numbers[0]].stream_id.rsplit("-", 1)[0]
        }
    assert all(store.tracked(f"upstream-{w}") == calls for w in range(writers))


def test_a_store_file_made_before_tracking_gets_its_table_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    SQLiteEventStore(path).append("a", events("a1"), expected_version=0)
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE eskit_tracking")

    reopened = SQLiteEventStore(path)
    assert reopened.tracked("upstream") is None
    reopened.append_all([("a", events("a2"), 1)], tracking=("upstream", 1))
    assert reopened.tracked("upstream") == 1
