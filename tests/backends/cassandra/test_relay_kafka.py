"""The relay on Cassandra with a real Kafka broker: racing writers, a relay killed mid-batch, a broker
stopped under load, on three nodes a node paused, and members erased while it relays; afterwards
every accepted event is in the topic, each account's in order (a consumer keeping the first copy of
each event id), nothing else, and nothing personal.

On Cassandra the relay follows the stream feed like the projections: each stream's events are
published, acknowledged, then its checkpoint written; a stream is settled only once the relay has it.
Duplicates are allowed (a stream published twice by the sweep that fills a new relay and a round at
once, or after a kill) and counted; what is checked is that none is missing and order holds.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest

from tests.downloads.integration.test_relay_erasure import relay_across_erasures
from tests.downloads.integration.test_relay_kafka import (
    accepted,
    assert_every_event_once_in_order,
    in_partition_order,
    open_members,
    race,
    relay_behind,
    relay_process,
    relay_status,
    wait_for,
)
from tests.support.cassandra import ClusterPool, keyspace_url
from tests.support.kafka import consume, create_topic, fresh_topic
from tools.kafka_broker import LocalKafkaBroker

pytestmark = [pytest.mark.cassandra, pytest.mark.slow]


def caught_up(store: str) -> bool:
    return relay_behind(store) == 0


@pytest.mark.cluster(nodes=1)
def test_every_accepted_event_of_racing_writers_arrives_in_order_per_account_and_nothing_else(
    cluster_pool: ClusterPool, tmp_path: Path, kafka: LocalKafkaBroker
) -> None:
    cluster = cluster_pool.get(1)
    topic = fresh_topic()
    create_topic(kafka.bootstrap, topic)
    with keyspace_url(cluster, "relay") as store:
        open_members(store)
        with relay_process(store, kafka, topic, tmp_path / "relay.log") as relay:
            race(store, writers=2, commands=200)
            events = accepted(store)
            wait_for(lambda: caught_up(store), "the relay caught up", seconds=300, every=1.0)
            status = relay_status(store)
            assert relay.poll() is None
    received = in_partition_order(consume(kafka.bootstrap, topic, until=len(events)))
    assert_every_event_once_in_order(received, events)
    assert status.error is None


@pytest.mark.cluster(nodes=1)
def test_a_relay_killed_mid_batch_misses_nothing_and_its_duplicates_are_counted(
    cluster_pool: ClusterPool, tmp_path: Path, kafka: LocalKafkaBroker
) -> None:
    cluster = cluster_pool.get(1)
    topic = fresh_topic()
    create_topic(kafka.bootstrap, topic)
    with keyspace_url(cluster, "relay") as store:
        open_members(store)
        race(store, writers=2, commands=300)
        with relay_process(store, kafka, topic, tmp_path / "relay.log") as victim:
            # Part-way by construction, not by catching a fast relay in the act: the first writes are
            # relayed and acknowledged, then the broker is held while more arrive, so the relay sends
            # them and no answer comes; the kill meets those streams sent and not yet acknowledged.
            wait_for(lambda: caught_up(store), "the relay caught up with the first writes", seconds=300, every=0.5)
            kafka.pause()
            try:
                race(store, writers=2, commands=300)
                time.sleep(1.5)  # the relay's next round sends what the second writers added
                victim.send_signal(signal.SIGKILL)
                victim.wait(timeout=30)
            finally:
                kafka.resume()
        events = accepted(store)
        behind_at_kill = relay_behind(store)
        assert 0 < behind_at_kill < len(events), "the kill was not part-way: nothing to check"
        with relay_process(store, kafka, topic, tmp_path / "relay.log"):
            time.sleep(3.0)  # past the dead process's lease
            wait_for(lambda: caught_up(store), "the restarted relay caught up", seconds=300, every=1.0)
    received = in_partition_order(consume(kafka.bootstrap, topic, until=len(events)))
    assert_every_event_once_in_order(received, events)
    print(f"relay killed {behind_at_kill} events behind; {len(received) - len(events)} duplicate(s)")


@pytest.mark.cluster(nodes=1)
def test_a_broker_stopped_under_load_is_reported_and_nothing_is_missing_after_it_is_back(
    cluster_pool: ClusterPool, tmp_path: Path, kafka: LocalKafkaBroker
) -> None:
    cluster = cluster_pool.get(1)
    topic = fresh_topic()
    create_topic(kafka.bootstrap, topic)
    with keyspace_url(cluster, "relay") as store:
        open_members(store)
        writing = threading.Thread(target=race, args=(store,), kwargs={"writers": 2, "commands": 300})
        with relay_process(store, kafka, topic, tmp_path / "relay.log"):
            wait_for(lambda: relay_behind(store) >= 0, "the relay registered", seconds=120, every=0.5)
            writing.start()
            try:
                kafka.stop()
                try:
                    down = wait_for(
                        lambda: (s := relay_status(store)) is not None and s.status == "failing" and s,
                        "the relay reported the broker down",
                        seconds=120,
                        every=1.0,
                    )
                finally:
                    kafka.start()
            finally:
                writing.join(timeout=300)
            events = accepted(store)
            wait_for(lambda: caught_up(store), "the relay resumed and caught up", seconds=300, every=1.0)
    assert "RelayUnavailable" in down.error or "sweep" in down.error
    received = in_partition_order(consume(kafka.bootstrap, topic, until=len(events)))
    assert_every_event_once_in_order(received, events)


@pytest.mark.cluster(nodes=3)
def test_on_three_nodes_with_one_paused_the_relay_goes_on_and_nothing_is_missing(
    cluster_pool: ClusterPool, tmp_path: Path, kafka: LocalKafkaBroker
) -> None:
    cluster = cluster_pool.get(3)
    topic = fresh_topic()
    create_topic(kafka.bootstrap, topic)
    with keyspace_url(cluster, "relay") as store:
        open_members(store)
        with relay_process(store, kafka, topic, tmp_path / "relay.log") as relay:
            writing = threading.Thread(target=race, args=(store,), kwargs={"writers": 2, "commands": 300})
            writing.start()
            try:
                time.sleep(2.0)
                cluster.pause_node(3)
                try:
                    time.sleep(10.0)
                finally:
                    cluster.resume_node(3)
            finally:
                writing.join(timeout=300)
            events = accepted(store)
            wait_for(lambda: caught_up(store), "the relay caught up", seconds=300, every=1.0)
            assert relay.poll() is None
    received = in_partition_order(consume(kafka.bootstrap, topic, until=len(events)))
    assert_every_event_once_in_order(received, events)


@pytest.mark.cluster(nodes=1)
def test_the_relay_publishes_nothing_personal_of_any_member_and_publishes_their_erasure(
    cluster_pool: ClusterPool, kafka: LocalKafkaBroker
) -> None:
    with keyspace_url(cluster_pool.get(1), "relay_erasure") as store:
        relay_across_erasures(store, kafka, exact=False)
