"""The relay to Kafka on SQLite: its throughput against a bare producer, and the lag from an answer to Kafka."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from bench.harness import goal_at_least, goal_at_most, interleaved, median, progress, scratch_dir
from downloads.adapters.relay import KafkaSink, message, parse_destination, without_personal
from downloads.application import ChangePlan, OpenAccount
from downloads.bootstrap import Runtime, bootstrap, open_read_side
from downloads.settings import Settings
from eskit import StoredEvent
from eskit.readmodel import ProjectionRunner, ProjectionSpec, RunnerSettings
from eskit.stores.sqlite import SQLiteReadModels

NAME = "relay"
TITLE = "Relay to Kafka on SQLite: throughput against a bare producer, lag from a command's answer to Kafka"

PLANS = ("basic", "standard", "premium")


def _topic(bootstrap_servers: str, partitions: int = 6) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"bench-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    for future in admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)]).values():
        future.result(timeout=30)
    return name


def _fill(runtime: Runtime, accounts: int, changes: int) -> None:
    service = runtime.service
    for a in range(accounts):
        service.handle(OpenAccount(f"acct-{a}", "standard"))
    for n in range(changes):
        service.handle(ChangePlan(f"acct-{n % accounts}", PLANS[(n // accounts) % 3]))


def _events(runtime: Runtime) -> list[StoredEvent]:
    feed = runtime.stores.feed
    assert feed is not None
    found: list[StoredEvent] = []
    after = 0
    while batch := feed.read(after=after, limit=5000):
        found += [f.event for f in batch]
        after = batch[-1].sequence
    return found


def _bare(bootstrap_servers: str, envelopes: list[tuple[bytes, bytes, list[tuple[str, bytes]]]]) -> float:
    """The same envelopes, made beforehand, sent by a bare producer with the relay's settings; events/s."""
    from confluent_kafka import Producer

    topic = _topic(bootstrap_servers)
    producer = Producer(
        {"bootstrap.servers": bootstrap_servers, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    )
    started = time.perf_counter()
    for key, value, headers in envelopes:
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
    left = producer.flush(60)
    took = time.perf_counter() - started
    assert left == 0, "the bare producer did not finish"
    return len(envelopes) / took


def _relay(runtime: Runtime, workdir: Path, bootstrap_servers: str, head: int, r: int) -> float:
    """The relay alone in a runner, from the first event to the last acknowledged; events/s."""
    sink = KafkaSink(
        parse_destination(f"kafka://{bootstrap_servers}/{_topic(bootstrap_servers)}"),
        data=without_personal(runtime.service.accounts.codec),
    )
    sink.check()
    models = SQLiteReadModels(workdir / f"relay-{r}.readmodels.db")
    runner = ProjectionRunner(
        models, runtime.stores, [ProjectionSpec.publishing("relay", sink, batch=2000)], settings=RunnerSettings()
    )
    started = time.perf_counter()
    while runner.step():
        pass
    took = time.perf_counter() - started
    (status,) = runner.status()
    assert status.position == head and status.error is None, status
    runner.close()
    models.close()
    sink.close()
    return head / took


def _lag(runtime: Runtime, bootstrap_servers: str, accounts: int, seconds: float, rate: float) -> dict[str, Any]:
    """Plan changes at a steady pace while serve's read side, with the relay, runs in the background."""
    from confluent_kafka import Consumer

    topic = _topic(bootstrap_servers)
    runtime.settings = runtime.settings.model_copy(update={"relay_to": f"kafka://{bootstrap_servers}/{topic}"})
    read_side = open_read_side(runtime)
    while read_side.step():  # the relay publishes what the store held before
        pass
    arrived: dict[tuple[str, int], float] = {}
    done = threading.Event()
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": topic, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])

    def consume() -> None:
        while not done.is_set():
            found = consumer.poll(0.05)
            if found is not None and found.error() is None:
                envelope = orjson.loads(found.value())
                arrived[(envelope["stream_id"], envelope["position"])] = time.perf_counter()

    reader = threading.Thread(target=consume)
    reader.start()
    read_side.start()
    acks: list[tuple[tuple[str, int], float]] = []
    started, n = time.perf_counter(), 0
    try:
        time.sleep(2.0)  # the consumer has joined the topic
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            account = f"acct-{n % accounts}"
            runtime.service.handle(ChangePlan(account, PLANS[(n // accounts + 1) % 3]))
            acks.append(
                ((f"account-{account}", runtime.stores.events.version(f"account-{account}")), time.perf_counter())
            )
            n += 1
            pause = started + n / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        deadline = time.perf_counter() + 30
        while time.perf_counter() < deadline and any(key not in arrived for key, _ in acks):
            time.sleep(0.05)
    finally:
        done.set()
        reader.join(timeout=30)
        consumer.close()
        read_side.close()
    lags = sorted(arrived[key] - at for key, at in acks if key in arrived)
    p50, p99 = lags[len(lags) // 2], lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    progress(f"relay lag over {len(lags)} commands: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    return {"commands": len(acks), "arrived": len(lags), "p50 ms": p50 * 1000, "p99 ms": p99 * 1000}


def run(quick: bool) -> dict[str, Any]:
    from tools.kafka_broker import LocalKafkaBroker

    accounts, changes, rounds = (50, 3000, 2) if quick else (50, 20_000, 3)
    seconds, rate = (4.0, 100.0) if quick else (20.0, 100.0)
    broker = LocalKafkaBroker()
    started_here = not broker.is_running()
    broker.start()
    try:
        with scratch_dir() as workdir:
            runtime = bootstrap(Settings(store=f"sqlite:///{workdir / 'downloads.db'}", snapshot_every=100))
            progress(f"filling: {accounts} accounts, {changes:,} plan changes")
            _fill(runtime, accounts, changes)
            events = _events(runtime)
            published = without_personal(runtime.service.accounts.codec)  # what the relay publishes
            envelopes = [message(e, data=published) for e in events]
            rates: dict[str, list[float]] = {"bare producer": [], "relay": []}
            for r, contender in interleaved(list(rates), rounds):
                if contender == "bare producer":
                    rates[contender].append(_bare(broker.bootstrap, envelopes))
                else:
                    rates[contender].append(_relay(runtime, workdir, broker.bootstrap, len(events), r))
                progress(f"round {r}: {contender} {rates[contender][-1]:,.0f} events/s")
            ratio = median(rates["relay"]) / median(rates["bare producer"])
            lag = _lag(runtime, broker.bootstrap, accounts, seconds, rate)
            runtime.close()
    finally:
        if started_here:
            broker.stop(wipe=True)
    rows = [
        {
            "case": "bare producer, envelopes made beforehand",
            "events": len(events),
            "events/s": round(median(rates["bare producer"])),
            "x bare": 1.0,
        },
        {
            "case": "relay (feed read, envelopes, acknowledgements, checkpoints)",
            "events": len(events),
            "events/s": round(median(rates["relay"])),
            "x bare": round(ratio, 3),
        },
        {"case": f"lag, {rate:.0f} commands/s, relay in serve's background runner", **lag},
    ]
    goals = [
        goal_at_least("relay throughput ≥ 0.5x a bare producer's", ratio, 0.5),
        goal_at_most("lag from a command's answer to its event in Kafka p99 ≤ 1000 ms", lag["p99 ms"], 1000.0),
    ]
    method = (
        "A one-node Kafka 4 broker in KRaft mode (the repository's tool, 256 MB heap) on the same machine, topics of "
        f"6 partitions. A SQLite store filled through DownloadsService ({accounts} accounts, {changes:,} plan "
        "changes). Bare producer: confluent-kafka with the relay's settings (idempotent, acks=all, linger 5 ms) "
        "sends every event's envelope, made beforehand in memory, and flushes. Relay: the relay alone in a "
        "ProjectionRunner over a fresh read-model file (batches of 2,000, the default: feed read, envelopes made, "
        "produce, wait for every acknowledgement, checkpoint moved); both to fresh topics, taking turns, "
        f"{rounds} rounds, medians compared. Lag: the read side with the relay running in the background of "
        f"the same process (as in serve), plan changes at {rate:.0f}/s for {seconds:.0f} s; the lag of a command "
        "is the time from its answer to the moment a consumer of the topic (polling every 50 ms) receives its event."
    )
    return {"title": TITLE, "method": method, "rows": rows, "goals": goals}
