"""What the relay publishes for an event (its envelope, key and headers) and which destinations it accepts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from downloads.adapters.relay import BadRelayUrl, Published, message, parse_destination, without_personal
from downloads.bootstrap import make_codec
from downloads.domain.events import LicenseIssued, PlanChanged, TitleSet
from eskit import EventCodec, EventMetadata, StoredEvent, UnknownEventType
from eskit.privacy import DataKey

START = datetime(2030, 3, 1, tzinfo=UTC)

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
        "withheld": [],
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
    _, value, _ = message(stored(), data=lambda event: Published({"redacted": True}, ["plan"]))
    assert (orjson.loads(value)["data"], orjson.loads(value)["withheld"]) == ({"redacted": True}, ["plan"])


def sealed_event(codec: EventCodec, event: Any, *, stream_id: str = "account-a17", key: Any = None) -> StoredEvent:
    new = codec.encode(event, EventMetadata(recorded_at=datetime(2030, 3, 1, tzinfo=UTC)), stream_id=stream_id, key=key)
    return StoredEvent(
        stream_id=stream_id,
        position=2,
        type_name=new.type_name,
        schema_version=new.schema_version,
        data=new.data,
        metadata=new.metadata,
        recorded_at=new.recorded_at,
        event_id=new.event_id,
    )


def test_the_service_publishes_an_account_event_without_its_personal_fields_sealed_or_in_clear() -> None:
    codec = make_codec()
    key = DataKey("account-a17", bytes(range(32)))
    issued = LicenseIssued("lic-1", "device-secret-1", "film", START, START + timedelta(days=2), True)
    published = without_personal(codec)

    _, sealed, _ = message(sealed_event(codec, issued, key=key), data=published)
    _, clear, _ = message(sealed_event(make_codec(sealed=False), issued), data=published)  # stored before sealing

    for value in (sealed, clear):
        envelope = orjson.loads(value)
        assert b"device-secret-1" not in value and b"$sealed" not in value
        assert envelope["withheld"] == ["device_id"]
        assert envelope["data"]["license_id"] == "lic-1" and envelope["data"]["title_id"] == "film"
    assert orjson.loads(sealed)["data"] == orjson.loads(clear)["data"]


def test_the_service_publishes_events_with_nothing_personal_whole() -> None:
    codec = make_codec()
    key = DataKey("account-a17", bytes(range(32)))
    _, value, _ = message(sealed_event(codec, PlanChanged("premium", START), key=key), data=without_personal(codec))
    assert (orjson.loads(value)["data"]["plan"], orjson.loads(value)["withheld"]) == ("premium", [])
    _, title, _ = message(
        sealed_event(codec, TitleSet("film", "studio-a", True, None, START), stream_id="title-film"),
        data=without_personal(codec),
    )
    assert orjson.loads(title)["data"]["studio"] == "studio-a" and orjson.loads(title)["withheld"] == []


def test_an_account_event_of_a_type_the_service_does_not_know_is_not_published() -> None:
    with pytest.raises(UnknownEventType):
        message(stored(), data=without_personal(EventCodec(encryption=make_codec().encryption)))


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
