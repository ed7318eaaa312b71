"""What the relay publishes for an event (its envelope, key and headers) and which destinations it accepts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from downloads.adapters.relay import BadRelayUrl, message, parse_destination
from eskit import StoredEvent

EVENT_ID = uuid.UUID("9f0c2b8e-5d5e-4f43-9a5a-1f0f7c7f0a11")


def stored(
    stream_id: str = "account-a17", *, metadata: bytes = b"", data: bytes = b'{"plan":"premium"}'
) -> StoredEvent:
    return StoredEvent(
        stream_id=stream_id,
        position=4,
        type_name="PlanChanged",
        schema_version=2,
        data=data,
        metadata=metadata,
        recorded_at=datetime(2030, 3, 1, 13, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1))),
        event_id=EVENT_ID,
    )


def test_the_envelope_holds_the_event_as_stored_and_its_command_and_nothing_else_of_its_metadata() -> None:
    metadata = orjson.dumps(
        {"request_id": "idem-key-1", "command": "change_plan", "causation_id": "c1", "extra": {"answer": {"x": 1}}}
    )
    key, value, headers = message(stored(metadata=metadata))

    assert orjson.loads(value) == {
        "envelope": 1,
        "event_id": str(EVENT_ID),
        "stream_id": "account-a17",
        "account_id": "a17",
        "position": 4,
        "type": "PlanChanged",
        "schema_version": 2,
        "recorded_at": "2030-03-01T12:00:00.123456Z",
        "command": "change_plan",
        "data": {"plan": "premium"},
    }
    assert key == b"a17"
    assert headers == [("envelope-version", b"1"), ("event-type", b"PlanChanged")]


def test_a_title_stream_is_keyed_by_its_stream_and_has_no_account() -> None:
    key, value, _ = message(stored("title-film"))
    assert key == b"title-film"
    assert orjson.loads(value)["account_id"] is None
    assert orjson.loads(value)["command"] is None


def test_data_that_is_not_json_is_an_error_not_a_message() -> None:
    with pytest.raises(ValueError):
        message(stored(data=b"\x00not json"))


def test_what_of_the_data_is_published_is_decided_by_one_function() -> None:
    _, value, _ = message(stored(), data=lambda event: {"redacted": True})
    assert orjson.loads(value)["data"] == {"redacted": True}


def test_a_destination_is_brokers_and_a_topic() -> None:
    found = parse_destination("kafka://127.0.0.1:19092,broker-2:9093/downloads.events")
    assert (found.bootstrap, found.topic) == ("127.0.0.1:19092,broker-2:9093", "downloads.events")
    assert str(found) == "kafka://127.0.0.1:19092,broker-2:9093/downloads.events"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:19092/t",
        "kafka:///t",
        "kafka://127.0.0.1/t",
        "kafka://127.0.0.1:0/t",
        "kafka://127.0.0.1:70000/t",
        "kafka://127.0.0.1:19092/",
        "kafka://127.0.0.1:19092/a/b",
        "kafka://127.0.0.1:19092/" + "t" * 250,
        "kafka://127.0.0.1:19092/..",
        "kafka://user:secret@127.0.0.1:19092/t",
        "kafka://127.0.0.1:19092/t?acks=0",
    ],
)
def test_anything_else_is_refused_with_a_clear_error(url: str) -> None:
    with pytest.raises(BadRelayUrl):
        parse_destination(url)


def test_recorded_times_are_written_in_utc() -> None:
    _, value, _ = message(stored())
    when = datetime.fromisoformat(orjson.loads(value)["recorded_at"].replace("Z", "+00:00"))
    assert when == stored().recorded_at.astimezone(UTC)
