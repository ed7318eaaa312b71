"""Unknown outcomes on a 3-node cluster: timed-out conditional appends take effect exactly once.

Two of the three nodes are paused (SIGSTOP) while writers append, so quorum
writes time out with their outcome unknown; then the nodes resume. Each writer
treats an append as a command with a fixed event id and, when it cannot tell
what happened, looks for its event in the stream before trying again, the way
the service looks for a request id. Afterwards every event id is in the stream
exactly once, at consecutive positions.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import replace

import pytest

from eskit import ConcurrencyError, EskitError, open_stores
from eskit.stores.cassandra import CassandraEventStore
from eskit.testing.contract import new_event
from tests.support.cassandra import ClusterPool, fresh_keyspace, store_url

pytestmark = [pytest.mark.cassandra, pytest.mark.slow, pytest.mark.cluster(nodes=3)]

WRITERS = 4
APPENDS_EACH = 25


def append_exactly_once(store: CassandraEventStore, stream: str, n: int, stop_at: float) -> None:
    """Append event ``n`` once: retry conflicts, and after an unknown outcome look before retrying."""
    event = new_event(n)
    uncertain = False
    while time.monotonic() < stop_at:
        try:
            if uncertain and any(e.event_id == event.event_id for e in store.read(stream)):
                return
            store.append(stream, [event], expected_version=store.version(stream))
            return
        except ConcurrencyError:
            continue
        except EskitError:  # timed out, unavailable, unknown outcome: find out on the next turn
            uncertain = True
            time.sleep(0.2)
    raise TimeoutError(f"event {n} not appended in time")


def test_appends_whose_outcome_was_unknown_land_exactly_once(cluster_pool: ClusterPool) -> None:
    cluster = cluster_pool.get(3)
    url = store_url(cluster, fresh_keyspace("unknown"), request_timeout="1.5", retries="2", bucket_size="20")
    store = open_stores(url).events
    stream = f"contended-{uuid.uuid4().hex}"
    errors: list[BaseException] = []
    stop_at = time.monotonic() + 240
    pauses_done = threading.Event()
    appended = [0] * WRITERS

    def writer(who: int) -> None:
        # At least APPENDS_EACH each, and on until the pauses are over, so that appends are in flight
        # while the nodes are paused however fast the cluster is.
        try:
            while appended[who] < APPENDS_EACH or not pauses_done.is_set():
                append_exactly_once(store, stream, who * 1_000_000 + appended[who], stop_at)
                appended[who] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    try:
        for t in threads:
            t.start()
        # Pause two of three nodes, twice, and more (up to six times) until an append was caught in
        # flight: writers whose version read failed first send no append, so one pause may catch none.
        for cycle in range(6):
            time.sleep(1.5)
            cluster.pause_node(2)
            cluster.pause_node(3)
            time.sleep(4)
            cluster.resume_node(2)
            cluster.resume_node(3)
            if cycle >= 1 and store.outcomes["timed_out"] > 0:
                break
        pauses_done.set()
        for t in threads:
            t.join(timeout=300)
    finally:
        for node in (2, 3):
            cluster.resume_node(node)
    try:
        assert not errors, errors
        stored = store.read(stream)
        ids = [e.event_id for e in stored]
        assert len(ids) == len(set(ids)), "an event was stored twice"
        assert len(ids) == sum(appended) >= WRITERS * APPENDS_EACH
        assert [e.position for e in stored] == list(range(1, len(stored) + 1))
        assert store.outcomes["timed_out"] > 0, f"no append timed out, the test proved nothing: {store.outcomes}"
    finally:
        store.close()


def test_an_append_resent_after_a_timeout_is_recognised_as_ours(cluster_pool: ClusterPool) -> None:
    """The resolution step itself: a resend that finds our own event reports success, not a conflict."""
    cluster = cluster_pool.get(3)
    store = open_stores(store_url(cluster, fresh_keyspace("resend"))).events
    try:
        stream = f"s-{uuid.uuid4().hex}"
        event = new_event(1)
        store.append(stream, [event], expected_version=0)
        # As if the first attempt had timed out: the same events at the same version are ours...
        assert store._ours(stream, 0, 0, [event])
        # ...and somebody else's events at that version are not.
        assert not store._ours(stream, 0, 0, [replace(event, event_id=uuid.uuid4())])
    finally:
        store.close()
