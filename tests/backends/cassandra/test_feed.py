"""The Cassandra feed on a real node: hints before appends, and the follower contract (nothing missed under load)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from eskit import ConcurrencyError, EskitError, NewEvent, StoredEvent, Stores, open_stores
from eskit.projection import StreamFollower, StreamTarget
from eskit.readmodel import Table, Writer, open_read_models
from eskit.testing.contract import new_event
from eskit.testing.feeds import FollowerContract
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


RECORDED = Table("recorded", partition=("stream_id",), clustering=("position",), kinds={"position": "int"})


def record(stream_id: str, stored: StoredEvent, writer: Writer) -> None:
    writer.put("recorded", (stream_id, stored.position))


class TestCassandraFollower(FollowerContract):
    """The feed and follower contract on one node (one keyspace for the module's tests: each uses its own streams)."""

    writers = 3
    appends = 25

    @pytest.fixture(autouse=True)
    def _shared(self, shared_stores: Stores) -> None:
        self.shared = shared_stores

    def make_stores(self) -> Stores:
        return self.shared

    def release_stores(self, stores: Stores) -> None:
        """The module's keyspace stays open for the next test."""


@pytest.fixture(scope="module")
def shared_stores(cluster_pool: ClusterPool) -> Iterator[Stores]:
    with keyspace_url(cluster_pool.get(1), "followers") as url:
        opened = open_stores(url)
        try:
            yield opened
        finally:
            opened.close()


def test_every_append_leaves_a_hint_and_a_refused_one_takes_its_own_back(stores: Stores) -> None:
    store = stores.events
    store.append("s", [event(1), event(2)], expected_version=0)
    assert hints(stores) == {"s": [2]}
    with pytest.raises(ConcurrencyError):
        store.append("s", [event(3)], expected_version=0)  # hints head 1, then is refused
    # Its own hint goes (deleted without the refused command waiting); the committed append's stays.
    deadline = time.monotonic() + 10
    while hints(stores) != {"s": [2]} and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hints(stores) == {"s": [2]}
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


def test_hints_above_their_streams_heads_neither_hide_other_streams_nor_keep_a_follower_busy(stores: Stores) -> None:
    """Hints whose appends never happened (a writer killed after its hint) stay: they must not starve the rest."""
    assert stores.stream_feed is not None
    feed = stores.stream_feed
    models = open_read_models(stores)
    tables = models.tables("recorded", 1, [RECORDED])
    tables.create()
    target = models.target("recorded", 1, tables, record)
    assert isinstance(target, StreamTarget)
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
