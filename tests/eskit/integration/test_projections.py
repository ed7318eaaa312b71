"""Projections over the SQLite feed into SQLite read models: one effect per event, whatever happens to the runner."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eskit import StoredEvent, Stores, open_stores
from eskit.projection import CheckpointMoved, Projector
from eskit.readmodel import ProjectionRunner, ProjectionSpec, RunnerSettings, Table, Writer
from eskit.stores.sqlite import SQLiteReadModels
from eskit.stores.sqlite.readmodel import SQLiteTableProjection
from eskit.testing.contract import new_event

SPAWN = multiprocessing.get_context("spawn")

EVENTS = Table("events", partition=("stream_id",), clustering=("position",), kinds={"position": "int"})


class Twice(AssertionError):
    """An event's effect was about to be made a second time."""


class Recorder:
    """Records every (stream, position) it applies; meeting one again is an error, as is ``fail_at`` (once)."""

    def __init__(self, *, fail_at: int | None = None, delay: float = 0.0) -> None:
        self.fail_at, self.delay = fail_at, delay
        self.calls = 0

    def __call__(self, stream_id: str, stored: StoredEvent, writer: Writer) -> None:
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            self.fail_at = None
            raise RuntimeError(f"the handler failed at event {self.calls}")
        if writer.get("events", (stream_id, stored.position)) is not None:
            raise Twice(f"{stream_id}@{stored.position}")
        writer.put("events", (stream_id, stored.position))
        if self.delay:
            time.sleep(self.delay)


def target(models: SQLiteReadModels, recorder: Recorder | None = None, *, version: int = 1) -> SQLiteTableProjection:
    tables = models.tables("seen", version, [EVENTS])
    return models.target("seen", version, tables, recorder or Recorder())


def rows(models: SQLiteReadModels, *, version: int = 1) -> list[tuple[str, int]]:
    tables = models.tables("seen", version, [EVENTS])
    found: list[tuple[str, int]] = []
    while page := tables.scan("events", after=found[-1] if found else None, limit=100):
        found += [(r["stream_id"], r["position"]) for r in page]
    return found


def fed(stores: Stores, upto: int) -> list[tuple[str, int]]:
    """The first ``upto`` events of the feed, as (stream, position), in key order."""
    assert stores.feed is not None
    return sorted((f.event.stream_id, f.event.position) for f in stores.feed.read(after=0, limit=upto))


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


def test_a_projector_applies_every_event_once_and_reports_its_lag(stores: Stores, tmp_path: Path) -> None:
    assert stores.feed is not None
    write(stores, 23)
    models = SQLiteReadModels(tmp_path / "models.db")
    projector = Projector(stores.feed, target(models), batch=5)

    assert projector.status().lag_events == 23
    assert projector.catch_up() == 23

    assert rows(models) == fed(stores, 23)
    status = projector.status()
    assert (status.position, status.lag_events, status.status, status.error) == (23, 0, "caught_up", None)


def test_a_batch_that_fails_part_way_applies_nothing_and_the_error_is_reported(stores: Stores, tmp_path: Path) -> None:
    assert stores.feed is not None
    write(stores, 10)
    models = SQLiteReadModels(tmp_path / "models.db")
    projector = Projector(stores.feed, target(models, Recorder(fail_at=7)), batch=10, max_backoff=0.05)
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

    assert rows(models) == fed(stores, 10)  # applied once, after the retry
    assert projector.error is None  # recovered


def test_a_failing_projection_reports_failing_with_its_error(stores: Stores, tmp_path: Path) -> None:
    assert stores.feed is not None
    write(stores, 3)
    models = SQLiteReadModels(tmp_path / "models.db")
    projector = Projector(stores.feed, target(models, Recorder(fail_at=1)))

    assert projector.tick() == 0  # the failure is recorded, not raised
    status = projector.status()
    assert (status.status, status.position, status.lag_events) == ("failing", 0, 3)
    assert status.error == "RuntimeError: the handler failed at event 1"
    assert rows(models) == []
    assert projector.tick() == 0  # within its backoff: not tried again yet
    projector._retry_at = 0.0  # the backoff has passed
    assert projector.tick() == 3 and projector.status().error is None  # the error clears on success


def test_two_projectors_on_one_model_apply_each_event_exactly_once(stores: Stores, tmp_path: Path) -> None:
    assert stores.feed is not None
    write(stores, 300)
    models = SQLiteReadModels(tmp_path / "models.db")
    projectors = [Projector(stores.feed, target(models), batch=7) for _ in range(2)]
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
    assert rows(models) == fed(stores, 300)


def test_applying_a_batch_that_was_already_applied_is_refused_and_changes_nothing(
    stores: Stores, tmp_path: Path
) -> None:
    assert stores.feed is not None
    write(stores, 4)
    seen = target(SQLiteReadModels(tmp_path / "models.db"))
    batch = stores.feed.read(after=0)
    seen.apply(batch, after=0)

    with pytest.raises(CheckpointMoved):
        seen.apply(batch, after=0)
    assert seen.checkpoint() == 4


def test_one_runner_of_two_works_and_the_other_takes_over_once_the_first_stops(stores: Stores, tmp_path: Path) -> None:
    write(stores, 20)
    spec = ProjectionSpec("seen", (EVENTS,), Recorder())
    settings = RunnerSettings(lease_ttl=30)
    first = ProjectionRunner(SQLiteReadModels(tmp_path / "models.db"), stores, [spec], settings=settings)
    second = ProjectionRunner(SQLiteReadModels(tmp_path / "models.db"), stores, [spec], settings=settings)

    assert first.step() > 0
    write(stores, 5)
    assert second.step() == 0  # the first holds the lease
    first.stop()  # lets it go
    assert second.step() > 0
    assert [s.position for s in second.status()] == [25]
    second.close()


def test_a_rebuild_fills_a_new_version_while_the_old_one_serves_then_switches(stores: Stores, tmp_path: Path) -> None:
    write(stores, 10)
    models = SQLiteReadModels(tmp_path / "models.db")
    runner = ProjectionRunner(models, stores, [ProjectionSpec("seen", (EVENTS,), Recorder())])
    while runner.step():
        pass
    progress: list[tuple[int, int | None]] = []

    assert runner.rebuild("seen", progress=lambda done, total: progress.append((done, total))) == 2

    assert progress[-1] == (10, 10)
    assert [(v.version, v.state) for v in models.versions(["seen"])["seen"]] == [(2, "active")]
    assert not models.tables("seen", 1, [EVENTS]).exists()  # the old version is dropped
    assert rows(models, version=2) == fed(stores, 10)
    runner.close()


def _project_slowly(events_path: str, models_path: str) -> None:
    stores = open_stores(f"sqlite:///{events_path}")
    assert stores.feed is not None
    Projector(stores.feed, target(SQLiteReadModels(models_path), Recorder(delay=0.002)), batch=200).catch_up()


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
        while time.monotonic() < deadline and (
            not models_path.exists() or target(SQLiteReadModels(models_path)).checkpoint() < 200
        ):
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
    killed_at = target(models).checkpoint()
    assert killed_at % 200 == 0 and 200 <= killed_at < 1000
    assert rows(models) == fed(stores, killed_at)  # nothing of the cut batch

    Projector(stores.feed, target(models)).catch_up()
    assert rows(models) == fed(stores, 1000)


# -- streams a projection cannot apply --------------------------------------------------------


class Picky(Recorder):
    """Cannot take stream ``s2`` from its position 2 on (a ValueError, as bad event data gives)."""

    def __init__(self, *, trouble: type[Exception] = ValueError, broken: tuple[str, int] = ("s2", 2)) -> None:
        super().__init__()
        self.trouble, self.broken = trouble, broken

    def __call__(self, stream_id: str, stored: StoredEvent, writer: Writer) -> None:
        stream, position = self.broken
        if stream_id == stream and stored.position >= position:
            raise self.trouble(f"cannot take {stream_id}@{stored.position}")
        super().__call__(stream_id, stored, writer)


def test_a_stream_that_cannot_be_applied_is_skipped_counted_and_named_while_the_others_go_on(
    stores: Stores, tmp_path: Path
) -> None:
    assert stores.feed is not None
    write(stores, 25)  # five streams of five events
    models = SQLiteReadModels(tmp_path / "models.db")
    picky = target(models, Picky())
    projector = Projector(stores.feed, picky, batch=7)
    assert projector.catch_up() == 25

    applied = set(rows(models))
    assert applied == {(f"s{n}", p) for n in range(5) for p in range(1, 6)} - {("s2", p) for p in range(2, 6)}
    (skipped,) = picky.skipped()
    assert (skipped.stream_id, skipped.position, skipped.events) == ("s2", 2, 4)
    assert skipped.sequence == 8 and "ValueError: cannot take s2@2" in skipped.error
    status = projector.status()
    assert (status.position, status.lag_events, status.status) == (25, 0, "failing")
    assert (status.skipped_streams, status.skipped_events) == (1, 4)
    assert status.error is not None and "s2@2: ValueError" in status.error

    # Later events of the skipped stream are skipped (and counted) too; the others are applied.
    write(stores, 10)
    assert projector.catch_up() == 10
    assert picky.skipped()[0].events == 6
    assert ("s2", 7) not in set(rows(models)) and ("s3", 7) in set(rows(models))

    # Once the cause is fixed, a new version (a rebuild) applies every event, and skips nothing.
    fixed = target(models, version=2)
    assert Projector(stores.feed, fixed).catch_up() == 35
    assert len(rows(models, version=2)) == 35 and fixed.skipped() == []
    models.tables("seen", 1, [EVENTS]).drop()
    assert picky.skipped() == []


def test_a_failure_of_the_store_is_retried_never_skipped(stores: Stores, tmp_path: Path) -> None:
    assert stores.feed is not None
    write(stores, 10)
    seen = target(SQLiteReadModels(tmp_path / "models.db"), Picky(trouble=sqlite3.OperationalError))
    projector = Projector(stores.feed, seen, batch=10)  # "disk I/O error", "database is locked": not the event's fault
    assert projector.tick() == 0
    assert projector.error is not None and "OperationalError" in projector.error
    assert seen.checkpoint() == 0 and seen.skipped() == []


def test_past_its_bound_of_skipped_streams_a_projection_stops_instead_of_skipping_everything(
    stores: Stores, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import eskit.stores.sqlite.readmodel as readmodel

    monkeypatch.setattr(readmodel, "MAX_SKIPPED_STREAMS", 2)
    assert stores.feed is not None
    write(stores, 10)

    def broken(stream_id: str, stored: StoredEvent, writer: Writer) -> None:
        raise KeyError("a fault of the projection's code, on every event")

    models = SQLiteReadModels(tmp_path / "models.db")
    seen = models.target("broken", 1, models.tables("broken", 1, [EVENTS]), broken)
    projector = Projector(stores.feed, seen, batch=10)
    assert projector.tick() == 0
    assert projector.error is not None and "TooManySkipped" in projector.error
    assert seen.checkpoint() == 0 and seen.skipped() == []  # the batch was undone whole


def test_an_event_that_cannot_be_read_back_is_skipped_with_its_stream(stores: Stores, tmp_path: Path) -> None:
    assert stores.feed is not None
    write(stores, 15)
    db = sqlite3.connect(stores.url[len("sqlite:///") :], isolation_level=None)
    db.execute("UPDATE events SET recorded_at = 253402300800000000 WHERE stream_id = 's1' AND position = 2")
    db.close()
    models = SQLiteReadModels(tmp_path / "models.db")
    seen = target(models)
    projector = Projector(stores.feed, seen, batch=4)
    assert projector.catch_up() == 15

    applied = set(rows(models))
    assert applied == {(f"s{n}", p) for n in range(5) for p in range(1, 4)} - {("s1", 2), ("s1", 3)}
    (skipped,) = seen.skipped()
    assert (skipped.stream_id, skipped.position, skipped.sequence, skipped.events) == ("s1", 2, 7, 2)
    assert "recorded time" in skipped.error
    assert projector.status().position == 15
