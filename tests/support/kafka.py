"""A real Kafka broker for tests: one per test session, started when a test first asks, always stopped.

The broker is the local tool's (:mod:`tools.kafka_broker`, 127.0.0.1:19092). A broker that was
already running when the session began (``make kafka-up``) is used and left running; one the
session started is stopped and wiped at its end. Tests make topics of their own (fresh names), so
they never see each other's messages.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tools.kafka_broker import LocalKafkaBroker


class BrokerPool:
    """Starts the session's broker on first use and stops it at the end, if it started it."""

    def __init__(self) -> None:
        self.broker: LocalKafkaBroker | None = None
        self.started_here = False

    def get(self) -> LocalKafkaBroker:
        if self.broker is None:
            broker = LocalKafkaBroker()
            self.started_here = not broker.is_running()
            broker.start()
            self.broker = broker
        elif not self.broker.is_running():  # a test stopped it and failed before starting it again
            self.broker.start()
        return self.broker

    def close(self) -> None:
        if self.broker is not None and self.started_here:
            self.broker.stop(wipe=True)
        self.broker = None


@pytest.fixture(scope="session")
def kafka_pool() -> Iterator[BrokerPool]:
    pool = BrokerPool()
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def kafka(kafka_pool: BrokerPool) -> LocalKafkaBroker:
    """The session's broker, running and serving."""
    broker = kafka_pool.get()
    if broker.state() == "paused":
        broker.resume()
    return broker


def fresh_topic(prefix: str = "relay") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def create_topic(bootstrap: str, topic: str, *, partitions: int = 4) -> None:
    """Make ``topic`` (the broker never makes one by itself) and wait until it is there."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
        future.result(timeout=30)


@dataclass(frozen=True)
class Received:
    """One message as a consumer got it."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]


def consume(bootstrap: str, topic: str, *, until: int, timeout: float = 60.0, idle: float = 3.0) -> list[Received]:
    """Every message of ``topic`` from the start: until ``until`` have come and nothing more came for
    ``idle`` seconds (so duplicates past the count are seen too), or ``timeout`` passed."""
    from confluent_kafka import Consumer, KafkaError

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    found: list[Received] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout
        last = time.monotonic()
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                if len(found) >= until and time.monotonic() - last >= idle:
                    break
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError(f"consumer error: {error}")
            last = time.monotonic()
            headers = {k: v for k, v in (message.headers() or [])}
            found.append(Received(message.partition(), message.offset(), message.key(), message.value(), headers))
    finally:
        consumer.close()
    return found
