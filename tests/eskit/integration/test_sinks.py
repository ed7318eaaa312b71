"""A follower whose effect is a publication (a relay), run by the projections' runner on memory and SQLite.

The destination here is a list behind eskit's :class:`~eskit.readmodel.Sink` port: eskit has no
broker of its own (the service's Kafka sink is tested against a real broker in
``tests/downloads/integration/test_relay_kafka.py``). What is checked is the seam's contract:
every accepted event is published, each stream in order, the checkpoint moves only after an
acknowledgement, a failing destination stops nothing else and loses nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from eskit import StoredEvent, Stores, open_stores
from eskit.projection import ProjectionTarget, StreamTarget
from eskit.readmodel import ProjectionRunner, ProjectionSpec, RunnerSettings, Sink, Table, Writer, open_read_models
from eskit.testing.contract import new_event

EVENTS = Table("events", partition=("stream_id",), clustering=("position",), kinds={"position": "int"})


class Refused(ConnectionError):
    """The destination did not acknowledge."""


class ListSink(Sink):
    """A destination that acknowledges by returning: what it received, in order.

    ``fail`` makes it take the first ``partial`` events of a call and then refuse (a broker that
    wrote some of a batch and went away before acknowledging the rest). ``checkpoint`` is read at
    each call, to see that the checkpoint never ran ahead of an acknowledgement.
    """

    def __init__(self) -> None:
        self.received: list[tuple[str, int]] = []
        self.fail = False
        self.partial = 0
        self.calls = 0
        self.lock = threading.Lock()
        self.checkpoint_seen: list[tuple[int, int]] = []  # (checkpoint at the call, first position sent)
        self.target: ProjectionTarget | StreamTarget | None = None

    def publish(self, events: Sequence[StoredEvent]) -> None:
        with self.lock:
            self.calls += 1
            if isinstance(self.target, StreamTarget):
                held = self.target.checkpoints([events[0].stream_id])[events[0].stream_id]
                self.checkpoint_seen.append((held, events[0].position))
            if self.fail:
                self.received += [(e.stream_id, e.position) for e in events[: self.partial]]
                raise Refused("the destination is down")
            self.received += [(e.stream_id, e.position) for e in events]


def noted(stream_id: str, stored: StoredEvent, writer: Writer) -> None:
    writer.put("events", (stream_id, stored.position))


@pytest.fixture(params=["memory", "sqlite"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'events.db'}"
    opened = open_stores(url)
    try:
        yield opened
    finally:
        opened.close()


def write(stores: Stores, count: int, *, streams: int = 5, start: int = 0) -> list[tuple[str, int]]:
    accepted = []
    for n in range(start, start + count):
        stream = f"s{n % streams}"
        version = stores.events.version(stream)
        stores.events.append(stream, [new_event(n)], expected_version=version)
        accepted.append((stream, version + 1))
    return accepted


def runner_with(stores: Stores, sink: ListSink, *, table: bool = False) -> ProjectionRunner:
    specs = [ProjectionSpec.publishing("relay", sink)]
    if table:
        specs.append(ProjectionSpec("seen", (EVENTS,), noted))
    runner = ProjectionRunner(
        open_read_models(stores), stores, specs, settings=RunnerSettings(batch=7, max_backoff=0.01, listing=3)
    )
    sink.target = runner.target("relay")
    return runner


def drain(runner: ProjectionRunner, *, rounds: int = 200) -> None:
    for _ in range(rounds):
        if not runner.step():
            return
    raise AssertionError("the runner kept finding work")


def in_stream_order(received: list[tuple[str, int]]) -> bool:
    last: dict[str, int] = {}
    for stream, position in received:
        if position != last.get(stream, 0) + 1:
            return False
        last[stream] = position
    return True


def test_every_accepted_event_is_published_once_each_stream_in_order_and_the_status_says_caught_up(
    stores: Stores,
) -> None:
    accepted = write(stores, 40)
    sink = ListSink()
    runner = runner_with(stores, sink)

    drain(runner)

    assert sorted(sink.received) == sorted(accepted)
    assert in_stream_order(sink.received)
    (status,) = runner.status()
    assert (status.name, status.status, status.lag_events, status.error) == ("relay", "caught_up", 0, None)
    assert status.position == 40
    runner.close()


def test_a_destination_that_refuses_moves_no_checkpoint_and_loses_nothing_once_it_is_back(stores: Stores) -> None:
    accepted = write(stores, 30)
    sink = ListSink()
    sink.fail, sink.partial = True, 2
    runner = runner_with(stores, sink)

    drain(runner)
    (status,) = runner.status()
    assert status.status == "failing" and "Refused: the destination is down" in (status.error or "")
    assert status.lag_events > 0  # nothing counted as relayed
    failed_calls = sink.calls

    sink.fail = False
    accepted += write(stores, 10, start=30)
    _retry_now(runner)
    drain(runner)

    assert set(sink.received) == set(accepted)  # nothing missing, nothing that was not accepted
    duplicates = len(sink.received) - len(accepted)
    assert 0 < duplicates <= failed_calls * sink.partial  # only what a refused attempt had taken
    (status,) = runner.status()
    assert (status.status, status.lag_events, status.error) == ("caught_up", 0, None)
    runner.close()


def test_a_checkpoint_never_moves_before_the_destination_acknowledged(stores: Stores) -> None:
    write(stores, 25)
    sink = ListSink()
    runner = runner_with(stores, sink)
    target = runner.target("relay")
    if isinstance(target, ProjectionTarget):
        seen: list[tuple[int, int]] = []
        publish = sink.publish

        def watching(events: Sequence[StoredEvent]) -> None:
            seen.append((target.checkpoint(), len(events)))
            publish(events)

        sink.publish = watching  # type: ignore[method-assign]
        drain(runner)
        at = 0
        for checkpoint, size in seen:  # each batch starts at the last one's end: it moved after, never during
            assert checkpoint == at
            at += size
    else:
        drain(runner)
        assert all(held < first for held, first in sink.checkpoint_seen)
    runner.close()


def test_a_failing_relay_holds_up_no_projection_and_gets_every_event_once_it_recovers(stores: Stores) -> None:
    """With a stream feed the relay and the projections share the hints: a stream is settled only once
    every follower, the relay included, has it; so a relay that was down still finds every stream."""
    accepted = write(stores, 20)
    sink = ListSink()
    sink.fail = True
    runner = runner_with(stores, sink, table=True)

    drain(runner)
    seen = runner.tables("seen").scan("events", limit=1000)
    assert len(seen) == 20  # the projection went on

    sink.fail = False
    _retry_now(runner)
    drain(runner)

    assert sorted(set(sink.received)) == sorted(accepted)
    assert in_stream_order(_first_seen(sink.received))
    runner.close()


def _retry_now(runner: ProjectionRunner) -> None:
    """Let a failed relay try again at once (its backoff has passed)."""
    for projector in runner._projectors.values():
        projector._retry_at = 0.0


def _first_seen(received: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """What a consumer that drops an event it has seen (by stream and position) keeps."""
    kept: list[tuple[str, int]] = []
    high: dict[str, int] = {}
    for stream, position in received:
        if position > high.get(stream, 0):
            kept.append((stream, position))
            high[stream] = position
    return kept
