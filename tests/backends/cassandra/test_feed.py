"""The Cassandra feed on a real node: hints before appends, and followers that miss nothing under load."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from eskit import ConcurrencyError, EskitError, NewEvent, StoredEvent, Stores, open_stores
from eskit.projection import StreamFollower
from eskit.stores.cassandra.readmodel import CassandraProjection, CassandraReadModels, Effects
from eskit.testing.contract import new_event
from tests.support.cassandra import ClusterPool, keyspace_url

pytestmark = [pytest.mark.cassandra, pytest.mark.cluster(nodes=1)]


def event(n: int = 0) -> NewEvent:
    return new_event(n)


def hints(stores: Stores) -> dict[str, list[int]]:
    """Every hint standing, by stream (read straight from the table)."""
    db = stores.events.db  # type: ignore[attr-defined]
    found: dict[str, list[int]] = {}
    for row in db.session.execute(f"SELECT stream_id, head FROM {db.settings.keyspace}.feed_hints"):
        found.setdefault(row.stream_id, []).append(row.head)
    return {k: sorted(v) for k, v in found.items()}


@pytest.fixture
def stores(cluster_pool: ClusterPool) -> Iterator[Stores]:
    with keyspace_url(cluster_pool.get(1), "feed") as url:
        opened = open_stores(url)
        try:
            yield opened
        finally:
            opened.close()


class Recorded(CassandraProjection):
    """A test projection: one row per applied event (its id, at its position) and the stream's last position."""

    name = "recorded"

    def tables(self) -> Sequence[str]:
        return [
            "CREATE TABLE IF NOT EXISTS {p}events (stream_id text, position bigint, event_id uuid,"
            " PRIMARY KEY ((stream_id), position))",
            "CREATE TABLE IF NOT EXISTS {p}last (stream_id text PRIMARY KEY, position bigint)",
        ]

    def handle(self, stream_id: str, events: Sequence[StoredEvent], effects: Effects) -> None:
        for e in events:
            effects.write(
                "INSERT INTO {p}events (stream_id, position, event_id) VALUES (?, ?, ?) USING TIMESTAMP ?".replace(
                    "{p}", self.prefix
                ),
                (stream_id, e.position, e.event_id, e.position),
            )
            effects.write(
                "INSERT INTO {p}last (stream_id, position) VALUES (?, ?) USING TIMESTAMP ?".replace("{p}", self.prefix),
                (stream_id, e.position, e.position),
            )

    def rows(self) -> dict[str, list[tuple[int, Any]]]:
        found: dict[str, list[tuple[int, Any]]] = {}
        for row in self.query("SELECT stream_id, position, event_id FROM {p}events"):
            found.setdefault(row.stream_id, []).append((row.position, row.event_id))
        return {k: sorted(v) for k, v in found.items()}

    def lasts(self) -> dict[str, int]:
        return {row.stream_id: row.position for row in self.query("SELECT stream_id, position FROM {p}last")}


def test_every_append_leaves_a_hint_and_a_refused_one_takes_its_own_back(stores: Stores) -> None:
    store = stores.events
    store.append("s", [event(1), event(2)], expected_version=0)
    assert hints(stores) == {"s": [2]}
    with pytest.raises(ConcurrencyError):
        store.append("s", [event(3)], expected_version=0)  # hints head 1, then is refused
    assert hints(stores) == {"s": [2]}  # its own hint is gone; the committed append's stays
    store.append("s", [event(3)], expected_version=2)
    assert hints(stores) == {"s": [2, 3]}
    assert stores.stream_feed is not None
    shard = stores.stream_feed.shard("s")  # type: ignore[attr-defined]
    assert stores.stream_feed.pending(shard=shard) == {"s": 3}
    stores.stream_feed.settle(shard=shard, stream_id="s", upto=2)
    assert hints(stores) == {"s": [3]}  # only those at or below the head settled
    count, oldest = stores.stream_feed.backlog()
    assert count == 1 and oldest is not None


def test_an_append_whose_hint_cannot_be_written_is_not_made(stores: Stores) -> None:
    db = stores.events.db  # type: ignore[attr-defined]
    stores.events.append("kept", [event()], expected_version=0)
    db.session.execute(f"DROP TABLE {db.settings.keyspace}.feed_hints", timeout=60)
    with pytest.raises(EskitError):
        stores.events.append("lost", [event()], expected_version=0)
    assert stores.events.version("lost") == 0  # no hint, no append: a follower could not have found it


def test_two_followers_apply_every_event_once_while_writers_race_on_hot_and_cold_streams(stores: Stores) -> None:
    assert stores.stream_feed is not None
    models = CassandraReadModels(stores.events.db)  # type: ignore[attr-defined]
    target = Recorded(models, version=1)
    target.create_tables()
    store, feed = stores.events, stores.stream_feed
    hot, cold = ["hot-0", "hot-1"], [f"cold-{n:02d}" for n in range(30)]
    stop = threading.Event()
    failures: list[BaseException] = []
    appended = {"count": 0, "refused": 0}
    lock = threading.Lock()

    def write(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(150):
                stream = rng.choice(hot) if rng.random() < 0.6 else rng.choice(cold)
                expected = store.version(stream)
                try:
                    store.append(stream, [event(i) for i in range(rng.randint(1, 3))], expected_version=expected)
                    with lock:
                        appended["count"] += 1
                except ConcurrencyError:
                    with lock:
                        appended["refused"] += 1
        except BaseException as exc:
            failures.append(exc)

    def follow(follower: StreamFollower) -> None:
        try:
            while not stop.is_set():
                if follower.round() == 0:
                    time.sleep(0.05)
        except BaseException as exc:
            failures.append(exc)

    followers = [StreamFollower(store, feed, lambda: [target], streams=20, workers=4) for _ in range(2)]
    threads = [threading.Thread(target=follow, args=(f,)) for f in followers]
    writers = [threading.Thread(target=write, args=(seed,)) for seed in range(4)]
    for t in threads + writers:
        t.start()
    for t in writers:
        t.join(timeout=300)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and feed.backlog()[0] and not failures:
        time.sleep(0.2)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    for follower in followers:
        follower.close()
    assert not failures, failures
    assert appended["count"] > 0 and appended["refused"] > 0  # the hot streams did race
    assert feed.backlog()[0] == 0  # every hint settled

    rows, lasts = target.rows(), target.lasts()
    checkpoints = target.checkpoints(hot + cold)
    for stream in hot + cold:
        events = store.read(stream)
        assert rows.get(stream, []) == [(e.position, e.event_id) for e in events], stream  # each once, none else
        assert lasts.get(stream, 0) == len(events) == checkpoints[stream]
    assert sum(f.stats[target.key].applied for f in followers) >= sum(len(v) for v in rows.values())


def test_hints_above_their_streams_heads_neither_hide_other_streams_nor_keep_a_follower_busy(stores: Stores) -> None:
    """Hints whose appends never happened (a writer killed after its hint) stay: they must not starve the rest."""
    assert stores.stream_feed is not None
    feed = stores.stream_feed
    models = CassandraReadModels(stores.events.db)  # type: ignore[attr-defined]
    target = Recorded(models, version=1)
    target.create_tables()
    shard = feed.shard("z-real")  # type: ignore[attr-defined]
    stale = [s for s in (f"a-stale-{n:03d}" for n in range(400)) if feed.shard(s) == shard][:12]  # type: ignore[attr-defined]
    assert len(stale) == 12
    for stream in stale:  # sorted before the real stream, in the same shard
        feed.hint(stream, 1, uuid.uuid4(), 0)  # type: ignore[attr-defined]
    stores.events.append("z-real", [event(1), event(2)], expected_version=0)
    follower = StreamFollower(stores.events, feed, lambda: [target], streams=5, workers=2)
    try:
        for _ in range(6):
            follower.round()
        assert target.checkpoints(["z-real"]) == {"z-real": 2}  # reached past the twelve stale ones
        assert follower.round() == 0  # nothing left but hints above their heads: no work, so the runner rests
        assert sorted(feed.pending(shard=shard, limit=100)) == sorted(stale)  # and they are kept
    finally:
        follower.close()
