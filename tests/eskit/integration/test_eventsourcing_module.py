"""What eskit's persistence module for the eventsourcing library promises beyond the library's own cases.

How the library's aggregates land in eskit streams (positions from 1, versions kept in the
metadata), what one insert of several aggregates gives on each store, how settings are
refused, and the bounds of what a recorder remembers. The Cassandra recorders use only the
event store port, so their logic runs here on the in-memory store; tests/backends/cassandra
runs them on a cluster.
"""

from __future__ import annotations

import gc
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from eventsourcing import persistence as es
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate

from eskit import open_stores
from eskit.interop.eventsourcing import CassandraApplicationRecorder, Factory
from eskit.interop.eventsourcing.streams import OriginatorIds
from eskit.stores.sqlite import SQLiteEventStore

MODULE = "eskit.interop.eventsourcing"


class Counter(Aggregate):
    def __init__(self) -> None:
        self.total = 0

    class Added(Aggregate.Event):
        amount: int

        def apply(self, aggregate: Any) -> None:
            aggregate.total += self.amount

    def add(self, amount: int) -> None:
        self.trigger_event(self.Added, amount=amount)


def stored(originator_id: uuid.UUID | str, version: int, topic: str = "t") -> es.StoredEvent:
    return es.StoredEvent(originator_id=originator_id, originator_version=version, topic=topic, state=b"{}")


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def app(url: str) -> Any:
    made = Application[uuid.UUID](env={"PERSISTENCE_MODULE": MODULE, "ESKIT_STORE_URL": url})
    yield made
    made.close()


def test_an_aggregate_is_an_eskit_stream_from_position_1_with_its_versions_in_the_metadata(app: Any, url: str) -> None:
    counter = Counter()
    counter.add(2)
    counter.add(3)
    app.save(counter)

    events = SQLiteEventStore(url.removeprefix("sqlite:///")).read(str(counter.id))
    assert [e.position for e in events] == [1, 2, 3]
    assert [orjson.loads(e.metadata) for e in events] == [{"originator_version": v} for v in (1, 2, 3)]
    assert events[1].type_name.endswith("Counter.Added")
    assert app.repository.get(counter.id).total == 5
    assert app.repository.get(counter.id, version=2).total == 2


def test_a_save_of_several_aggregates_on_sqlite_stores_all_of_them_or_none(app: Any) -> None:
    fresh, contested = Counter(), Counter()
    app.save(contested)
    stale = app.repository.get(contested.id)
    contested.add(1)
    app.save(contested)
    stale.add(10)
    fresh.add(5)

    with pytest.raises(es.IntegrityError):
        app.save(fresh, stale)

    assert fresh.id not in app.repository
    assert app.repository.get(contested.id).total == 1
    assert [n.originator_id for n in app.notification_log.select(start=1, limit=10)] == [contested.id, contested.id]


def test_an_insert_must_continue_its_stream(url: str) -> None:
    recorder = Factory({"ESKIT_STORE_URL": url}).aggregate_recorder()
    aggregate = uuid.uuid4()
    recorder.insert_events([stored(aggregate, 1), stored(aggregate, 2)])

    for refused in ([stored(aggregate, 4)], [stored(aggregate, 0)], [stored(aggregate, 3), stored(aggregate, 5)]):
        with pytest.raises(es.IntegrityError):
            recorder.insert_events(refused)
    recorder.insert_events([stored(aggregate, 3)])
    assert [e.originator_version for e in recorder.select_events(aggregate)] == [1, 2, 3]


def test_streams_not_remembered_are_read_or_tried_as_new_and_memory_stays_bounded(url: str) -> None:
    factory = Factory({"ESKIT_STORE_URL": url})
    writer = factory.aggregate_recorder()
    ids = [uuid.uuid4() for _ in range(4)]
    for originator_id in ids:
        writer.insert_events([stored(originator_id, 1)])

    forgetful: Any = factory.aggregate_recorder()
    forgetful.streams.kept = 2
    for originator_id in ids:  # each stream exists but is unknown to this recorder: tried as new, then read
        forgetful.insert_events([stored(originator_id, 2)])
    assert len(forgetful.streams._firsts) == 2
    assert [e.originator_version for e in forgetful.select_events(ids[0], gt=1)] == [2]
    with pytest.raises(es.IntegrityError):
        forgetful.insert_events([stored(ids[0], 2)])


def test_text_originator_ids_read_back_as_text(url: str) -> None:
    recorder = Factory({"ESKIT_STORE_URL": url, "ORIGINATOR_ID_TYPE": "text"}).application_recorder()
    recorder.insert_events([stored("order-7", 0), stored("order-7", 1)])

    assert [(e.originator_id, e.originator_version) for e in recorder.select_events("order-7")] == [
        ("order-7", 0),
        ("order-7", 1),
    ]
    assert [n.originator_id for n in recorder.select_notifications(None, 10)] == ["order-7", "order-7"]


def test_a_subscription_sees_what_another_process_writes_within_its_poll_interval(url: str) -> None:
    subscriber = Factory({"ESKIT_STORE_URL": url}).application_recorder()
    other = Factory({"ESKIT_STORE_URL": url}).application_recorder()  # its own connections, as another process
    received: list[int] = []

    with subscriber.subscribe(gt=None) as subscription:

        def follow() -> None:
            for notification in subscription:
                received.append(notification.id)
                if len(received) == 2:
                    return

        reader = threading.Thread(target=follow)
        reader.start()
        other.insert_events([stored(uuid.uuid4(), 1)])
        other.insert_events([stored(uuid.uuid4(), 1)])
        reader.join(timeout=10)
        alive = reader.is_alive()
        subscription.stop()
        reader.join(timeout=10)
    assert not alive
    assert received == [1, 2]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "ESKIT_STORE_URL"),
        ({"ESKIT_STORE_URL": "memory://"}, "sqlite:// or cassandra://"),
        ({"ESKIT_STORE_URL": "sqlite:///x.db", "ORIGINATOR_ID_TYPE": "int"}, "ORIGINATOR_ID_TYPE"),
    ],
)
def test_bad_settings_are_refused_with_the_library_s_environment_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(OSError, match=message):
        Factory(env)


def test_an_existing_store_is_required_when_tables_are_not_to_be_created(tmp_path: Path) -> None:
    with pytest.raises(es.OperationalError, match="no SQLite store"):
        Factory({"ESKIT_STORE_URL": f"sqlite:///{tmp_path / 'missing.db'}", "CREATE_TABLE": "no"})
    assert not (tmp_path / "missing.db").exists()


def test_recorders_the_module_does_not_make_are_refused(url: str) -> None:
    factory = Factory({"ESKIT_STORE_URL": url, "TRACKING_RECORDER_TOPIC": "eventsourcing.popo:POPOTrackingRecorder"})
    with pytest.raises(es.InterfaceError, match=r"no recorder for .audit."):
        factory.aggregate_recorder("audit")
    with pytest.raises(es.InterfaceError, match="not a subclass"):
        factory.tracking_recorder()


def test_a_store_that_fails_raises_the_library_s_operational_error(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    recorder = Factory({"ESKIT_STORE_URL": f"sqlite:///{path}"}).application_recorder()
    recorder.insert_events([stored(uuid.uuid4(), 1)])
    path.unlink()

    with pytest.raises(es.OperationalError, match="removed"):
        recorder.insert_events([stored(uuid.uuid4(), 1)])


# -- the Cassandra recorders' logic, on the event store port (in memory) -----------------------


@pytest.fixture
def streams_recorder() -> CassandraApplicationRecorder:
    return CassandraApplicationRecorder(open_stores("memory://"), OriginatorIds())


def test_without_transactions_each_aggregate_of_a_save_stands_alone_and_the_refusal_says_so(
    streams_recorder: CassandraApplicationRecorder,
) -> None:
    contested, fresh = uuid.uuid4(), uuid.uuid4()
    streams_recorder.insert_events([stored(contested, 1)])

    with pytest.raises(es.IntegrityError, match="1 other aggregate"):
        streams_recorder.insert_events([stored(contested, 1), stored(fresh, 1)])

    assert [e.originator_version for e in streams_recorder.select_events(fresh)] == [1]
    assert streams_recorder.insert_events([stored(contested, 2)]) is None  # no notification ids to give


def test_without_one_order_there_are_no_notifications_and_no_tracking(
    streams_recorder: CassandraApplicationRecorder,
) -> None:
    for call in (
        lambda: streams_recorder.select_notifications(None, 10),
        streams_recorder.max_notification_id,
        streams_recorder.subscribe,
        lambda: streams_recorder.insert_events([stored(uuid.uuid4(), 1)], tracking=es.Tracking("up", 1)),
    ):
        with pytest.raises(es.NotSupportedError):
            call()


def test_a_stream_tried_as_new_is_planned_again_from_the_store(streams_recorder: CassandraApplicationRecorder) -> None:
    known = uuid.uuid4()
    streams_recorder.insert_events([stored(known, 1), stored(known, 2)])
    forgetful = CassandraApplicationRecorder(streams_recorder.stores, OriginatorIds())

    forgetful.insert_events([stored(known, 3), stored(uuid.uuid4(), 1)])

    assert [e.originator_version for e in forgetful.select_events(known)] == [1, 2, 3]
    assert forgetful.streams.remembered(str(known)) == 1


def test_subscription_wait_is_short(url: str) -> None:
    """A stopped subscription ends at once, even while it waits for events that do not come."""
    recorder = Factory({"ESKIT_STORE_URL": url}).application_recorder()
    subscription = recorder.subscribe(gt=None)
    stopper = threading.Timer(0.2, subscription.stop)
    started = time.monotonic()
    stopper.start()
    with subscription:
        assert list(subscription) == []
    assert time.monotonic() - started < 2


def test_a_subscription_dropped_without_being_stopped_leaves_nothing_in_the_recorder(url: str) -> None:
    recorder: Any = Factory({"ESKIT_STORE_URL": url}).application_recorder()
    subscriptions = [recorder.subscribe(gt=None) for _ in range(3)]
    assert len(recorder._listeners) == 3

    del subscriptions
    gc.collect()

    assert len(recorder._listeners) == 0
    recorder.insert_events([stored(uuid.uuid4(), 1)])  # still wakes no one, and fails nothing
