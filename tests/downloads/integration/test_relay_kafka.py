"""The relay against a real Kafka broker, on a SQLite store: every accepted event arrives, in order per account.

Writers are separate processes racing on the same accounts (conflicts, retries, refused commands);
the relay is the real ``downloads relay`` command in a process of its own, killed and restarted where
a test says so; the broker is the local tool's, stopped and started again where a test says so.
What arrived is read back by a plain consumer and compared with the store's feed.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from downloads.application import AcquireLicense, ChangePlan, OpenAccount, RegisterDevice, SetTitle
from downloads.bootstrap import bootstrap, open_read_side
from downloads.domain import DomainError
from downloads.settings import Settings
from eskit import EskitError, StoreUnavailable, UnknownOutcome, open_stores
from eskit.projection import ProjectionTarget
from eskit.stores.sqlite.readmodel import read_models_path
from tests.support.jaeger import tags_of, wait_for_spans
from tests.support.kafka import Received, consume, create_topic, fresh_topic
from tools.jaeger import LocalJaeger
from tools.kafka_broker import LocalKafkaBroker

SPAWN = multiprocessing.get_context("spawn")
ACCOUNTS = [f"member-{n:02d}" for n in range(12)]
BATCH = 100


# -- the workload ---------------------------------------------------------------------------------


def url(path: Path) -> str:
    return f"sqlite:///{path}"


def _write(store: str, seed: int, commands: int) -> None:
    """A writer process: ``commands`` plan changes and downloads on random accounts, racing the others."""
    runtime = bootstrap(Settings(store=store, snapshot_every=0, cache_size=0))
    chooser = random.Random(seed)
    try:
        for _ in range(commands):
            account = chooser.choice(ACCOUNTS)
            try:
                if chooser.random() < 0.8:
                    runtime.service.handle(ChangePlan(account, chooser.choice(("basic", "standard", "premium"))))
                else:
                    runtime.service.handle(AcquireLicense(account, "d0", "film"))
            except DomainError:
                pass  # refused (same plan, limit reached): no event, and none may be relayed
            except (UnknownOutcome, StoreUnavailable):
                # A paused node (the Cassandra run) can leave an append's outcome unknown within the
                # command's bound: whether it landed is read from the store afterwards (``accepted``),
                # and what landed must be relayed like the rest.
                pass
    finally:
        runtime.close()


def open_members(store: str) -> None:
    runtime = bootstrap(Settings(store=store, snapshot_every=0))
    try:
        runtime.service.set_title(SetTitle("film", "default"))
        for account in ACCOUNTS:
            runtime.service.handle(OpenAccount(account, "standard"))
            runtime.service.handle(RegisterDevice(account, "d0", "phone"))
    finally:
        runtime.close()


def race(store: str, *, writers: int = 2, commands: int = 300) -> None:
    """``writers`` processes at once on the same accounts; returns when all are done (bounded)."""
    processes = [SPAWN.Process(target=_write, args=(store, seed, commands)) for seed in range(writers)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=300)
        assert process.exitcode == 0, f"a writer failed (exit {process.exitcode})"


def accepted(store: str) -> list[tuple[str, str, int]]:
    """Every accepted event of the store: (event id, stream, position), read stream by stream."""
    stores = open_stores(store)
    try:
        found: list[tuple[str, str, int]] = []
        for stream in stores.events.stream_ids():
            found += [(str(e.event_id), e.stream_id, e.position) for e in stores.events.read(stream)]
        return found
    finally:
        stores.close()


# -- the relay process ------------------------------------------------------------------------------


@contextmanager
def relay_process(store: str, broker: LocalKafkaBroker, topic: str, log: Path, **env: str) -> Iterator[Any]:
    """``downloads relay`` in a process of its own; stopped (Ctrl-C, then SIGKILL) in bounded time."""
    environment = {
        **os.environ,
        "DOWNLOADS_READ_SIDE_BATCH": str(BATCH),
        "DOWNLOADS_RELAY_BATCH": str(BATCH),
        "DOWNLOADS_READ_SIDE_LEASE": "2",
        "DOWNLOADS_RELAY_TIMEOUT": "5",
        **env,
    }
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "downloads.entrypoints.cli",
                "relay",
                "--to",
                f"kafka://{broker.bootstrap}/{topic}",
                "--store",
                store,
            ],
            env=environment,
            stdout=output,
            stderr=output,
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


def relay_checkpoint(path: Path) -> int:
    """Where the relay's checkpoint stands in the read-model file (0 before it has one)."""
    models = read_models_path(path)
    if not models.exists():
        return 0
    with sqlite3.connect(f"file:{models}?mode=ro", uri=True, timeout=30) as conn:
        try:
            row = conn.execute("SELECT seq FROM eskit_checkpoints WHERE prefix = 'rm_relay_v1_'").fetchone()
        except sqlite3.OperationalError:
            return 0
    return int(row[0]) if row else 0


def relay_status(store: str) -> Any:
    runtime = bootstrap(Settings(store=store, create_schema=False))
    try:
        read_side = open_read_side(runtime)
        try:
            return {s.name: s for s in read_side.status()}.get("relay")
        finally:
            read_side.close()
    finally:
        runtime.close()


def relay_behind(store: str) -> int:
    """Events of the store the relay has not published (and had acknowledged) yet, stream by stream."""
    with relay_watch(store) as behind:
        return behind()


@contextmanager
def relay_watch(store: str) -> Iterator[Callable[[], int]]:
    """:func:`relay_behind` asked again and again over one open runtime: a poll costs a few reads, not
    a new session, so a test can catch the relay part-way however fast it goes."""
    runtime = bootstrap(Settings(store=store, create_schema=False))
    try:
        read_side = open_read_side(runtime)
        try:

            def behind() -> int:
                try:
                    if not read_side.relay_registered():  # type: ignore[attr-defined]
                        return -1
                except EskitError:
                    # The relay's process is creating the registry: a node may list a table (its
                    # schema tables are written first) a moment before it serves it. Asked again.
                    return -1
                target = read_side.runner.target("relay")  # type: ignore[attr-defined]
                events = runtime.stores.events
                streams = list(events.stream_ids())
                heads = {s: events.version(s) for s in streams}
                if isinstance(target, ProjectionTarget):
                    assert runtime.stores.feed is not None
                    return runtime.stores.feed.head() - target.checkpoint()
                held = target.checkpoints(streams)
                return sum(heads[s] - held.get(s, 0) for s in streams)

            yield behind
        finally:
            read_side.close()
    finally:
        runtime.close()


def wait_for(check: Callable[[], Any], what: str, *, seconds: float = 120, every: float = 0.2) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"not within {seconds:.0f} s: {what}")


# -- what arrived ------------------------------------------------------------------------------------


def envelopes(received: list[Received]) -> list[dict[str, Any]]:
    return [orjson.loads(m.value) for m in received]


def assert_every_event_once_in_order(received: list[Received], store: list[tuple[str, str, int]]) -> None:
    """Each accepted event arrived (by id), nothing else did; per account, a consumer keeping the first
    copy of each event id sees its stream's positions 1, 2, 3 ... in partition order."""
    found = envelopes(received)
    assert {e["event_id"] for e in found} == {event_id for event_id, _, _ in store}
    seen: set[str] = set()
    last: dict[str, int] = {}
    for message, envelope in zip(received, found, strict=True):
        assert message.key == (envelope["account_id"] or envelope["stream_id"]).encode()
        assert message.headers["envelope-version"] == b"1"
        if envelope["event_id"] in seen:
            continue
        seen.add(envelope["event_id"])
        stream = envelope["stream_id"]
        assert envelope["position"] == last.get(stream, 0) + 1, f"{stream} out of order"
        last[stream] = envelope["position"]
    assert last == {stream: max(p for _, s, p in store if s == stream) for _, stream, _ in store}


def in_partition_order(received: list[Received]) -> list[Received]:
    """Messages as a consumer of each partition meets them (the consumer interleaves partitions)."""
    return sorted(received, key=lambda m: (m.partition, m.offset))


# -- the tests -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_every_accepted_event_of_racing_writers_arrives_once_in_order_per_account_and_nothing_else(
    tmp_path: Path, kafka: LocalKafkaBroker
) -> None:
    path = tmp_path / "downloads.db"
    topic = fresh_topic()
    create_topic(kafka.bootstrap, topic)
    open_members(url(path))

    with relay_process(url(path), kafka, topic, tmp_path / "relay.log") as relay:
        race(url(path), writers=2, commands=250)
        store = accepted(url(path))
        wait_for(lambda: relay_checkpoint(path) >= len(store), "the relay caught up")
        status = relay_status(url(path))
        assert relay.poll() is None

    received = in_partition_order(consume(kafka.bootstrap, topic, until=len(store)))
    assert len(received) == len(store)  # no fault: no duplicate
    assert_every_event_once_in_order(received, store)
    assert (status.status, status.lag_events, status.position, status.error) == ("caught_up", 0, len(store), None)
    first = envelopes(received)[0]
    assert set(first) == {
        "envelope",
        "event_id",
        "stream_id",
        "account_id",
        "position",
        "type",
        "schema_version",
        "recorded_at",
        "command",
        "data",
        "withheld",
    }
    commands = Counter(e["command"] for e in envelopes(received))
    assert commands["change_plan"] > 0 and commands["open_account"] == len(ACCOUNTS)


@pytest.mark.slow
def test_a_relay_killed_mid_batch_misses_nothing_and_duplicates_only_what_was_not_acknowledged(
    tmp_path: Path, kafka: LocalKafkaBroker
) -> None:
    path = tmp_path / "downloads.db"
    topic = fresh_topic()
    create_topic(kafka.bootstrap, topic)
    open_members(url(path))
    race(url(path), writers=2, commands=750)
    first = len(accepted(url(path)))

    with relay_process(url(path), kafka, topic, tmp_path / "relay.log") as victim:
        # Part-way by construction, not by catching a fast relay in the act: the first writes are
        # relayed and acknowledged, then the broker's answers are held while more arrive, so the kill
        # meets a batch sent and not yet acknowledged; the broker may still write it once it runs again.
        wait_for(lambda: relay_checkpoint(path) >= first, "the relay caught up with the first writes")
        kafka.pause()
        try:
            race(url(path), writers=2, commands=750)
            time.sleep(1.5)  # the relay's next round sends a batch of what the second writers added
            victim.send_signal(signal.SIGKILL)
            victim.wait(timeout=30)
        finally:
            kafka.resume()
    store = accepted(url(path))
    at_kill = relay_checkpoint(path)
    assert 0 < at_kill < len(store), "the kill was not part-way: nothing to check"
    before_restart = consume(kafka.bootstrap, topic, until=at_kill, idle=2.0)
    unacknowledged = len(before_restart) - at_kill  # published, but the checkpoint had not moved past them

    with relay_process(url(path), kafka, topic, tmp_path / "relay.log"):
        time.sleep(3.0)  # past the dead process's lease (2 s)
        wait_for(lambda: relay_checkpoint(path) >= len(store), "the restarted relay caught up")

    received = in_partition_order(consume(kafka.bootstrap, topic, until=len(store) + unacknowledged))
    assert_every_event_once_in_order(received, store)
    duplicates = len(received) - len(store)
    print(f"killed at checkpoint {at_kill} of {len(store)}; {duplicates} duplicate(s) after the restart")
    assert duplicates == unacknowledged  # counted: exactly the window the kill left
    assert 0 <= duplicates <= BATCH  # at most the one batch in flight


@pytest.mark.slow
def test_a_broker_stopped_under_load_is_reported_and_waited_for_and_nothing_is_missing_after_it_is_back(
    tmp_path: Path, kafka: LocalKafkaBroker
) -> None:
    path = tmp_path / "downloads.db"
    topic = fresh_topic()
    create_topic(kafka.bootstrap, topic)
    open_members(url(path))
    writing = threading.Thread(target=race, args=(url(path),), kwargs={"writers": 2, "commands": 600})

    with relay_process(url(path), kafka, topic, tmp_path / "relay.log") as relay:
        wait_for(lambda: relay_checkpoint(path) > 0, "the relay started")
        writing.start()
        try:
            kafka.stop()
            try:
                down = wait_for(
                    lambda: (s := relay_status(url(path))) is not None and s.status == "failing" and s,
                    "the relay reported the broker down",
                    seconds=60,
                    every=0.5,
                )
                stalled = relay_checkpoint(path)
                time.sleep(4.0)  # the relay backs off; its checkpoint does not move without the broker
                assert relay_checkpoint(path) == stalled
                assert relay_status(url(path)).lag_events > 0
            finally:
                kafka.start()
        finally:
            writing.join(timeout=300)
        store = accepted(url(path))
        wait_for(lambda: relay_checkpoint(path) >= len(store), "the relay resumed and caught up")
        recovered = relay_status(url(path))
        assert relay.poll() is None

    assert "RelayUnavailable" in down.error
    assert (recovered.status, recovered.error) == ("caught_up", None)
    received = in_partition_order(consume(kafka.bootstrap, topic, until=len(store)))
    assert_every_event_once_in_order(received, store)


def test_a_topic_that_does_not_exist_is_a_clear_error_unless_the_relay_is_asked_to_create_it(
    tmp_path: Path, kafka: LocalKafkaBroker
) -> None:
    path = tmp_path / "downloads.db"
    open_members(url(path))
    topic = fresh_topic()
    command = [
        sys.executable,
        "-m",
        "downloads.entrypoints.cli",
        "relay",
        "--to",
        f"kafka://{kafka.bootstrap}/{topic}",
        "--store",
        f"sqlite:///{path}",
    ]

    refused = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)

    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1].startswith(f"TopicMissing: topic '{topic}' does not exist")
    assert "Traceback" not in refused.stderr
    store = accepted(url(path))
    with relay_process(url(path), kafka, topic, tmp_path / "relay.log", DOWNLOADS_RELAY_CREATE_TOPIC="true"):
        wait_for(lambda: relay_checkpoint(path) >= len(store), "the relay created the topic and caught up")
    assert_every_event_once_in_order(in_partition_order(consume(kafka.bootstrap, topic, until=len(store))), store)


def test_a_relay_url_that_is_not_kafka_is_refused_before_anything_is_opened(tmp_path: Path) -> None:
    path = tmp_path / "downloads.db"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "downloads.entrypoints.cli",
            "relay",
            "--to",
            "http://x:1/t",
            "--store",
            f"sqlite:///{path}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("BadRelayUrl: the relay publishes to kafka://host:port/topic")
    assert not path.exists()


@pytest.mark.slow
def test_each_relay_batch_is_a_span_whose_context_its_messages_carry(
    tmp_path: Path, kafka: LocalKafkaBroker, jaeger: LocalJaeger
) -> None:
    path = tmp_path / "downloads.db"
    open_members(url(path))
    store = accepted(url(path))
    topic = fresh_topic()
    create_topic(kafka.bootstrap, topic)
    service = f"relay-{uuid.uuid4().hex[:8]}"
    tracing = {"OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
    with relay_process(url(path), kafka, topic, tmp_path / "relay.log", OTEL_SERVICE_NAME=service, **tracing):
        wait_for(lambda: relay_checkpoint(path) >= len(store), "the relay caught up")
        received = consume(kafka.bootstrap, topic, until=len(store))
        batches = wait_for_spans(lambda: jaeger.find(service, "relay batch"), bool)
    assert batches, jaeger.log_tail()
    ids = {(span["traceID"], span["spanID"]) for span in batches}
    for span in batches:
        tags = tags_of(span)
        assert tags["span.kind"] == "producer" and tags["messaging.system"] == "kafka"
        assert tags["messaging.destination.name"] == topic and tags["messaging.batch.message_count"] >= 1
    assert len(received) >= len(store)
    for message in received:
        version, trace_id, span_id, _flags = message.headers["traceparent"].decode().split("-")
        assert version == "00" and (trace_id, span_id) in ids, message.headers
