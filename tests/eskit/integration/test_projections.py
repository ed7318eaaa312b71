"""Projections over the feed into SQLite read models: exactly one effect per event, whatever happens to the runner."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from eskit import Stores, open_stores
from eskit.ports import FeedEvent
from eskit.projection import CheckpointMoved, Projector
from eskit.stores.sqlite.readmodel import LeaseLost, SQLiteProjection, SQLiteReadModels
from eskit.testing.contract import new_event

SPAWN = multiprocessing.get_context("spawn")


class Seen(SQLiteProjection):
    """Records every (stream, position) it applies; the primary key turns a second effect into an error."""

    name = "seen"
    delay = 0.0  # seconds per event, to widen the window in the kill test
    fail_at: int | None = None  # a sequence at which handle raises, once

    def tables(self) -> Sequence[str]:
        return [
            "CREATE TABLE IF NOT EXISTS {p}events (stream_id TEXT, position INTEGER, seq INTEGER,"
            " PRIMARY KEY (stream_id, position))"
        ]

    def handle(self, conn: sqlite3.Connection, events: Sequence[FeedEvent]) -> None:
        for e in events:
            if self.fail_at is not None and e.sequence == self.fail_at:
                self.fail_at = None
                raise RuntimeError(f"the handler failed at {e.sequence}")
            conn.execute(
                f"INSERT INTO {self.prefix}events VALUES (?, ?, ?)", (e.event.stream_id, e.event.position, e.sequence)
            )
            if self.delay:
                time.sleep(self.delay)

    def rows(self) -> list[tuple[str, int, int]]:
        conn = self.models.connection()
        return [
            tuple(r) for r in conn.execute(f"SELECT stream_id, position, seq FROM {self.prefix}events ORDER BY seq")
        ]


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    opened = open_stores(f"sqlite:///{tmp_path / 'events.db'}")
    try:
        yield opened
    finally:
        opened.close()


def write(stores: Stores, count: int, *, streams: int = 5) -> None:
    for n in range(count):
        stream = f"s{n % streams}"
        stores.events.append(stream, [new_event(n)], expected_version=stores.events.version(stream))


def test_a_projector_applies_every_event_once_in_feed_order_and_reports_its_lag(stores: Stores, tmp_path: Path) -> None:
    assert stores.feed is not None
    write(stores, 23)
    target = Seen(SQLiteReadModels(tmp_path / "models.db"))
    projector = Projector(stores.feed, target, batch=5)

    assert projector.status().lag_events == 23
    assert projector.catch_up() == 23

    assert [seq for _, _, seq in target.rows()] == list(range(1, 24))
    status = projector.status()
    assert (status.position, status.lag_events, status.status, status.error) == (23, 0, "caught_up", None)


def test_a_batch_that_fails_part_way_applies_nothing_and_the_error_is_reported(stores: Stores, tmp_path: Path) -> None:
    assert stores.feed is not None
    write(stores, 10)
    target = Seen(SQLiteReadModels(tmp_path / "models.db"))
    target.fail_at = 7
    projector = Projector(stores.feed, target, batch=10, max_backoff=0.05)
    stop = threading.Event()
    runner = threading.Thread(target=projector.run, args=(stop,), kwargs={"idle": 0.01})
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while projector.status().position < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        runner.join(timeout=30)

    assert [seq for _, _, seq in target.rows()] == list(range(1, 11))  # applied once, after the retry
    assert projector.error is None  # recovered


def test_a_failing_projection_reports_failing_with_its_error(stores: Stores, tmp_path: Path) -> None:
    assert stores.feed is not None
    write(stores, 3)
    target = Seen(SQLiteReadModels(tmp_path / "models.db"))
    target.fail_at = 1
    projector = Projector(stores.feed, target)

    assert projector.tick() == 0  # the failure is recorded, not raised
    status = projector.status()
    assert (status.status, status.position, status.lag_events) == ("failing", 0, 3)
    assert status.error == "RuntimeError: the handler failed at 1"
    assert target.rows() == []
    assert projector.tick() == 0  # within its backoff: not tried again yet
    projector._retry_at = 0.0  # the backoff has passed
    assert projector.tick() == 3 and projector.status().error is None  # the error clears on success


def test_two_projectors_on_one_model_apply_each_event_exactly_once(stores: Stores, tmp_path: Path) -> None:
    assert stores.feed is not None
    write(stores, 300)
    models = SQLiteReadModels(tmp_path / "models.db")
    projectors = [Projector(stores.feed, Seen(models), batch=7) for _ in range(2)]
    errors: list[BaseException] = []

    def follow(projector: Projector) -> None:
        try:
            projector.catch_up()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=follow, args=(p,)) for p in projectors]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert [seq for _, _, seq in Seen(models).rows()] == list(range(1, 301))


def test_applying_a_batch_that_was_already_applied_is_refused_and_changes_nothing(
    stores: Stores, tmp_path: Path
) -> None:
    assert stores.feed is not None
    write(stores, 4)
    target = Seen(SQLiteReadModels(tmp_path / "models.db"))
    batch = stores.feed.read(after=0)
    target.apply(batch, after=0)

    with pytest.raises(CheckpointMoved):
        target.apply(batch, after=0)
    assert len(target.rows()) == 4


def test_a_runner_whose_lease_was_taken_over_cannot_apply(stores: Stores, tmp_path: Path) -> None:
    assert stores.feed is not None
    write(stores, 4)
    models = SQLiteReadModels(tmp_path / "models.db")
    first = models.acquire_lease("runner", "a", ttl=0.05)
    assert first is not None
    assert models.acquire_lease("runner", "b", ttl=10) is None  # held, not expired
    time.sleep(0.1)
    second = models.acquire_lease("runner", "b", ttl=10)  # a's lease expired (a was paused)
    assert second is not None and second > first

    woken = Seen(models, lease=("runner", first))
    with pytest.raises(LeaseLost):
        woken.apply(stores.feed.read(after=0), after=0)
    assert Seen(models).checkpoint() == 0  # nothing applied by the runner that lost its lease
    Seen(models, lease=("runner", second)).apply(stores.feed.read(after=0), after=0)
    assert len(Seen(models).rows()) == 4


def test_a_rebuild_fills_a_new_version_while_the_old_one_serves_then_switches(stores: Stores, tmp_path: Path) -> None:
    assert stores.feed is not None
    write(stores, 10)
    models = SQLiteReadModels(tmp_path / "models.db")
    Projector(stores.feed, Seen(models)).catch_up()

    rebuilt = Seen(models, version=models.active_version("seen") + 1)
    Projector(stores.feed, rebuilt, batch=3).step()
    assert len(Seen(models).rows()) == 10  # readers still see version 1, complete
    Projector(stores.feed, rebuilt).catch_up()
    models.switch("seen", rebuilt.version)
    Seen(models, version=1).drop()

    assert Seen(models).version == 2
    assert [seq for _, _, seq in Seen(models).rows()] == list(range(1, 11))


def _project_slowly(events_path: str, models_path: str) -> None:
    stores = open_stores(f"sqlite:///{events_path}")
    target = Seen(SQLiteReadModels(models_path))
    target.delay = 0.002
    assert stores.feed is not None
    Projector(stores.feed, target, batch=200).catch_up()


@pytest.mark.slow
def test_a_projector_killed_mid_batch_leaves_no_partial_effect_and_the_next_one_completes(
    stores: Stores, tmp_path: Path
) -> None:
    assert stores.feed is not None
    write(stores, 1000)
    models_path = tmp_path / "models.db"
    victim = SPAWN.Process(target=_project_slowly, args=(str(tmp_path / "events.db"), str(models_path)))
    victim.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and Seen(SQLiteReadModels(models_path)).checkpoint() < 200:
            time.sleep(0.01)  # the first batch committed: the next one is part-way now
        time.sleep(0.1)
        assert victim.pid is not None and victim.is_alive()
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(timeout=30)
    finally:
        if victim.is_alive():
            victim.kill()
            victim.join(timeout=30)

    models = SQLiteReadModels(models_path)
    killed_at = Seen(models).checkpoint()
    assert killed_at % 200 == 0 and 200 <= killed_at < 1000
    assert [seq for _, _, seq in Seen(models).rows()] == list(range(1, killed_at + 1))  # nothing of the cut batch

    Projector(stores.feed, Seen(models)).catch_up()
    assert [seq for _, _, seq in Seen(models).rows()] == list(range(1, 1001))


# -- streams a projection cannot apply --------------------------------------------------------


class Picky(Seen):
    """Cannot take stream ``s2`` from its position 2 on (a ValueError, as bad event data gives)."""

    name = "picky"
    broken = ("s2", 2)
    trouble: type[Exception] = ValueError

    def handle(self, conn: sqlite3.Connection, events: Sequence[FeedEvent]) -> None:
        for e in events:
            stream, position = self.broken
            if e.event.stream_id == stream and e.event.position >= position:
                raise self.trouble(f"cannot take {e.event.stream_id}@{e.event.position}")
        super().handle(conn, events)


def test_a_stream_that_cannot_be_applied_is_skipped_counted_and_named_while_the_others_go_on(
    stores: Stores, tmp_path: Path
) -> None:
    assert stores.feed is not None
    write(stores, 25)  # five streams of five events
    target = Picky(SQLiteReadModels(tmp_path / "models.db"))
    projector = Projector(stores.feed, target, batch=7)
    assert projector.catch_up() == 25

    applied = {(stream, position) for stream, position, _ in target.rows()}
    assert applied == {(f"s{n}", p) for n in range(5) for p in range(1, 6)} - {("s2", p) for p in range(2, 6)}
    (skipped,) = target.skipped()
    assert (skipped.stream_id, skipped.position, skipped.events) == ("s2", 2, 4)
    assert skipped.sequence == 8 and "ValueError: cannot take s2@2" in skipped.error
    status = projector.status()
    assert (status.position, status.lag_events, status.status) == (25, 0, "failing")
    assert (status.skipped_streams, status.skipped_events) == (1, 4)
    assert status.error is not None and "s2@2: ValueError" in status.error

    # Later events of the skipped stream are skipped (and counted) too; the others are applied.
    write(stores, 10)
    assert projector.catch_up() == 10
    assert target.skipped()[0].events == 6
    assert ("s2", 7) not in {(s, p) for s, p, _ in target.rows()} and ("s3", 7) in {(s, p) for s, p, _ in target.rows()}

    # Once the cause is fixed, a new version (a rebuild) applies every event, and skips nothing.
    fixed = Seen(SQLiteReadModels(tmp_path / "models.db"), version=2)
    assert Projector(stores.feed, fixed).catch_up() == 35
    assert len(fixed.rows()) == 35 and fixed.skipped() == []
    target.drop()
    assert target.skipped() == []


def test_a_failure_of_the_store_is_retried_never_skipped(stores: Stores, tmp_path: Path) -> None:
    assert stores.feed is not None
    write(stores, 10)
    target = Picky(SQLiteReadModels(tmp_path / "models.db"))
    target.trouble = sqlite3.OperationalError  # "disk I/O error", "database is locked": not the event's fault
    projector = Projector(stores.feed, target, batch=10)
    assert projector.tick() == 0
    assert projector.error is not None and "OperationalError" in projector.error
    assert target.checkpoint() == 0 and target.skipped() == []


def test_past_its_bound_of_skipped_streams_a_projection_stops_instead_of_skipping_everything(
    stores: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import eskit.stores.sqlite.readmodel as readmodel

    monkeypatch.setattr(readmodel, "MAX_SKIPPED_STREAMS", 2)
    assert stores.feed is not None
    write(stores, 10)

    class Broken(Seen):
        name = "broken"

        def handle(self, conn: sqlite3.Connection, events: Sequence[FeedEvent]) -> None:
            if events:
                raise KeyError("a fault of the projection's code, on every event")

    target = Broken(SQLiteReadModels(tmp_path / "models.db"))
    projector = Projector(stores.feed, target, batch=10)
    assert projector.tick() == 0
    assert projector.error is not None and "TooManySkipped" in projector.error
    assert target.checkpoint() == 0 and target.skipped() == []  # the batch was undone whole


def test_an_event_that_cannot_be_read_back_is_skipped_with_its_stream(stores: Stores, tmp_path: Path) -> None:
    assert stores.feed is not None
    write(stores, 15)
    db = sqlite3.connect(stores.url[len("sqlite:///") :], isolation_level=None)
    db.execute("UPDATE events SET recorded_at = 253402300800000000 WHERE stream_id = 's1' AND position = 2")
    db.close()
    target = Seen(SQLiteReadModels(tmp_path / "models.db"))
    projector = Projector(stores.feed, target, batch=4)
    assert projector.catch_up() == 15

    applied = {(stream, position) for stream, position, _ in target.rows()}
    assert applied == {(f"s{n}", p) for n in range(5) for p in range(1, 4)} - {("s1", 2), ("s1", 3)}
    (skipped,) = target.skipped()
    assert (skipped.stream_id, skipped.position, skipped.sequence, skipped.events) == ("s1", 2, 7, 2)
    assert "recorded time" in skipped.error
    assert projector.status().position == 15
