"""The contract every feed and its follower must meet, on every store (a TCK for the read side's footing).

Each backend's test module subclasses :class:`FollowerContract` and gives its
stores; the tests follow the feed the way the backend's read models do (a
:class:`~eskit.projection.Projector` over one sequence, a
:class:`~eskit.projection.StreamFollower` over a stream feed) into a real
target of the backend's :class:`~eskit.readmodel.ReadModelStore`, whose effect
records every event it applies. What must hold:

* every accepted event is applied, none that was refused, each stream's events
  in position order with none skipped;
* a follower that dies part-way (its last batch unfinished) is replaced by a
  new one that goes on from the checkpoints: nothing lost, no effect doubled;
* two followers at once, and writers racing on the same streams meanwhile,
  change none of that.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence

import pytest

from eskit.events import NewEvent, StoredEvent
from eskit.exceptions import ConcurrencyError, EskitError
from eskit.ports import EventStore
from eskit.projection import ProjectionTarget, Projector, StreamFollower, StreamTarget
from eskit.readmodel import ReadModelStore, Table, TableSet, Writer
from eskit.stores.registry import Stores
from eskit.testing.contract import new_event

__all__ = ["FollowerContract", "Killed", "OutOfOrder"]

#: what the contract's projection keeps: every event it applied, and each stream's last position
SEEN = Table(
    "seen", partition=("stream_id",), clustering=("position",), values=("event_id",), kinds={"position": "int"}
)
LAST = Table("last", partition=("stream_id",), values=("position",), kinds={"position": "int"})


class Killed(BaseException):
    """A follower dies here (not an ``Exception``: nothing on the way catches it)."""


class OutOfOrder(AssertionError):
    """An event came after a gap in its stream: a follower skipped one."""


class _Recorder:
    """The projection under test: records each event, and checks that none of its stream was skipped before it."""

    def __init__(self, *, die_after: int | None = None) -> None:
        self.die_after = die_after
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, stream_id: str, stored: StoredEvent, writer: Writer) -> None:
        with self.lock:
            self.calls += 1
            if self.die_after is not None and self.calls > self.die_after:
                raise Killed()
        last = writer.get("last", (stream_id,))
        before = last["position"] if last is not None and last["position"] is not None else 0
        if stored.position > before + 1:
            raise OutOfOrder(f"{stream_id}: position {stored.position} applied after {before}")
        writer.put("seen", (stream_id, stored.position), {"event_id": str(stored.event_id)})
        writer.put("last", (stream_id,), {"position": max(before, stored.position)})


class _AppendAfterHead(EventStore):
    """A store that, once, appends to a stream just after a follower read that stream's head."""

    def __init__(self, inner: EventStore, stream_id: str) -> None:
        self.inner, self.stream_id, self.done = inner, stream_id, False

    def version(self, stream_id: str) -> int:
        head = self.inner.version(stream_id)
        if stream_id == self.stream_id and not self.done:
            self.done = True
            self.inner.append(stream_id, [new_event(head + 1)], expected_version=head)
        return head

    def append(self, stream_id: str, events: Sequence[NewEvent], *, expected_version: int) -> int:
        return self.inner.append(stream_id, events, expected_version=expected_version)

    def read(
        self, stream_id: str, *, gt: int = 0, lte: int | None = None, limit: int | None = None, desc: bool = False
    ) -> list[StoredEvent]:
        return self.inner.read(stream_id, gt=gt, lte=lte, limit=limit, desc=desc)

    def stream_ids(self, *, after: str | None = None, limit: int = 1000) -> list[str]:
        return self.inner.stream_ids(after=after, limit=limit)

    def append_many(self, appends: Sequence[tuple[str, Sequence[NewEvent], int]]) -> list[int | EskitError]:
        return self.inner.append_many(appends)


class FollowerContract:
    """Behaviour of a store's feed and follower; subclasses give :meth:`make_stores`."""

    #: writer threads in the racing tests, appends each, and how many of the streams are hot
    writers: int = 4
    appends: int = 40
    hot_streams: int = 3

    def make_stores(self) -> Stores:
        raise NotImplementedError

    def release_stores(self, stores: Stores) -> None:
        stores.close()

    def read_models(self, stores: Stores) -> ReadModelStore:
        from eskit.readmodel import open_read_models

        return open_read_models(stores)

    @pytest.fixture
    def stores(self) -> Iterator[Stores]:
        stores = self.make_stores()
        try:
            yield stores
        finally:
            self.release_stores(stores)

    # -- the harness ---------------------------------------------------------------------------

    def _tables(self, stores: Stores) -> tuple[ReadModelStore, TableSet]:
        models = self.read_models(stores)
        tables = models.tables(f"contract{uuid.uuid4().hex[:8]}", 1, [SEEN, LAST])
        tables.create()
        return models, tables

    def _follower(
        self,
        stores: Stores,
        models: ReadModelStore,
        tables: TableSet,
        recorder: _Recorder,
        *,
        events: EventStore | None = None,
    ) -> Callable[[], int]:
        """One step of a follower over the backend's own target (reading ``events`` if given); how much it did."""
        target = models.target("contract", 1, tables, recorder)
        if models.follows == "sequence":
            assert isinstance(target, ProjectionTarget) and stores.feed is not None
            projector = Projector(stores.feed, target, batch=7)
            return projector.step
        assert isinstance(target, StreamTarget) and stores.stream_feed is not None
        follower = StreamFollower(
            events or stores.events, stores.stream_feed, lambda: [target], streams=5, page=7, workers=2
        )
        return follower.round

    def _catch_up(self, step: Callable[[], int], stores: Stores) -> None:
        for _ in range(10_000):
            if step() == 0 and self._idle(stores):
                return
        raise AssertionError("the follower never caught up")

    @staticmethod
    def _idle(stores: Stores) -> bool:
        feed = stores.stream_feed
        if feed is None:
            return True
        return not any(feed.pending(shard=shard, limit=1) for shard in range(feed.shards))

    @staticmethod
    def _append(stores: Stores, stream_id: str, n: int) -> None:
        """Append one event (or two) to ``stream_id``, retrying on conflict as a command runner would."""
        for _ in range(1000):
            version = stores.events.version(stream_id)
            try:
                events = [new_event(n)] if n % 3 else [new_event(n), new_event(n + 1)]
                stores.events.append(stream_id, events, expected_version=version)
                return
            except ConcurrencyError:
                time.sleep(random.uniform(0, 0.002))
        raise AssertionError(f"no append to {stream_id} got through")

    def _expected(self, stores: Stores, streams: Sequence[str]) -> dict[tuple[str, int], str]:
        found: dict[tuple[str, int], str] = {}
        for stream_id in streams:
            for event in stores.events.read(stream_id):
                found[(stream_id, event.position)] = str(event.event_id)
        return found

    @staticmethod
    def _seen(tables: TableSet, streams: Sequence[str]) -> dict[tuple[str, int], str]:
        return {(r["stream_id"], r["position"]): r["event_id"] for s in streams for r in tables.select("seen", (s,))}

    def _race(self, stores: Stores, followers: Sequence[Callable[[], int]], streams: Sequence[str]) -> None:
        """Writers race on ``streams`` while ``followers`` run; each follower's errors are raised at the end."""
        stop = threading.Event()
        errors: list[BaseException] = []

        def write(worker: int) -> None:
            rng = random.Random(worker)
            for n in range(self.appends):
                self._append(stores, rng.choice(streams), n)

        def follow(step: Callable[[], int]) -> None:
            try:
                while not stop.is_set():
                    if step() == 0:
                        time.sleep(0.001)
            except BaseException as exc:
                errors.append(exc)

        running = [threading.Thread(target=follow, args=(f,)) for f in followers]
        writing = [threading.Thread(target=write, args=(w,)) for w in range(self.writers)]
        for thread in running + writing:
            thread.start()
        for thread in writing:
            thread.join(timeout=120)
        stop.set()
        for thread in running:
            thread.join(timeout=60)
        if errors:
            raise errors[0]

    def _streams(self, count: int) -> list[str]:
        tag = uuid.uuid4().hex[:8]
        return [f"feed-{tag}-{i}" for i in range(count)]

    # -- the contract ----------------------------------------------------------------------------

    def test_a_follower_applies_every_accepted_event_in_stream_order_while_writers_race(self, stores: Stores) -> None:
        models, tables = self._tables(stores)
        streams = self._streams(self.hot_streams)
        step = self._follower(stores, models, tables, _Recorder())
        self._race(stores, [step], streams)
        self._catch_up(step, stores)
        assert self._seen(tables, streams) == self._expected(stores, streams)

    def test_a_refused_append_is_never_followed(self, stores: Stores) -> None:
        models, tables = self._tables(stores)
        (stream,) = self._streams(1)
        stores.events.append(stream, [new_event(1)], expected_version=0)
        with pytest.raises(ConcurrencyError):
            stores.events.append(stream, [new_event(99)], expected_version=0)
        step = self._follower(stores, models, tables, _Recorder())
        self._catch_up(step, stores)
        assert self._seen(tables, [stream]) == self._expected(stores, [stream])
        assert len(self._seen(tables, [stream])) == 1

    def test_an_append_made_between_reading_a_head_and_settling_it_is_still_followed(self, stores: Stores) -> None:
        models, tables = self._tables(stores)
        (stream,) = self._streams(1)
        self._append(stores, stream, 1)
        racing = _AppendAfterHead(stores.events, stream)
        self._catch_up(self._follower(stores, models, tables, _Recorder(), events=racing), stores)
        assert racing.done or models.follows == "sequence"
        assert self._seen(tables, [stream]) == self._expected(stores, [stream])

    def test_a_follower_killed_part_way_is_replaced_and_nothing_is_lost_or_doubled(self, stores: Stores) -> None:
        models, tables = self._tables(stores)
        streams = self._streams(6)
        for n in range(30):
            self._append(stores, streams[n % len(streams)], n)
        dying = self._follower(stores, models, tables, _Recorder(die_after=11))
        with pytest.raises(Killed):
            self._catch_up(dying, stores)
        assert len(self._seen(tables, streams)) < len(self._expected(stores, streams))
        for n in range(30, 40):  # more events arrive before the new follower starts
            self._append(stores, streams[n % len(streams)], n)
        self._catch_up(self._follower(stores, models, tables, _Recorder()), stores)
        assert self._seen(tables, streams) == self._expected(stores, streams)
        for stream_id in streams:
            last = tables.get("last", (stream_id,))
            assert last is not None and last["position"] == stores.events.version(stream_id)

    def test_two_followers_at_once_apply_every_event_once_while_writers_race(self, stores: Stores) -> None:
        models, tables = self._tables(stores)
        streams = self._streams(self.hot_streams + 3)
        followers = [self._follower(stores, models, tables, _Recorder()) for _ in range(2)]
        self._race(stores, followers, streams)
        for step in followers:
            self._catch_up(step, stores)
        assert self._seen(tables, streams) == self._expected(stores, streams)
        for stream_id in streams:
            last = tables.get("last", (stream_id,))
            assert last is not None and last["position"] == stores.events.version(stream_id)
