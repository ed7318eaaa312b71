"""The event codec: stable type names, round trips, and upcasting old payloads on read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from eskit import (
    DomainEvent,
    EventCodec,
    EventMetadata,
    SerializationError,
    StoredEvent,
    UnknownEventType,
    UpcastError,
    Upcasters,
)
from eskit.stores.memory import InMemoryEventStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class SeatsGranted(DomainEvent):
    type_name = "test.SeatsGranted"

    holder: str
    seats: int
    tags: list[str]


@dataclass(frozen=True)
class Revoked(DomainEvent):
    type_name = "test.Revoked"

    reason: str | None = None


# The same event as three generations of code wrote it. v1 named the holder "user";
# v2 renamed it and added a plan; v3 added a download limit derived from the seats.


@dataclass(frozen=True)
class GrantedV1(DomainEvent):
    type_name = "test.Granted"
    version = 1

    user: str
    seats: int


@dataclass(frozen=True)
class GrantedV3(DomainEvent):
    type_name = "test.Granted"
    version = 3

    holder: str
    seats: int
    plan: str
    download_limit: int


def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    data["holder"] = data.pop("user")
    data["plan"] = "basic"
    return data


def v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    data["download_limit"] = data["seats"] * 10
    return data


def metadata(**extra: Any) -> EventMetadata:
    return EventMetadata(recorded_at=T0, request_id="req-1", command="Grant", causation_id="msg-9", extra=extra)


def stored_by(codec: EventCodec, *events: DomainEvent, meta: EventMetadata | None = None) -> list[StoredEvent]:
    """Encode ``events`` with ``codec``, append them to a fresh store and read them back."""
    store = InMemoryEventStore()
    encoded = [codec.encode(e, meta or metadata()) for e in events]
    store.append("license-1", encoded, expected_version=0)
    return store.read("license-1")


def upcasters(*steps: tuple[int, Any]) -> Upcasters:
    chain = Upcasters()
    for from_version, step in steps:
        chain.register("test.Granted", from_version, step)
    return chain


def test_an_event_and_its_metadata_survive_a_round_trip_through_a_store() -> None:
    codec = EventCodec([SeatsGranted, Revoked])
    granted = SeatsGranted(holder="Zoë 🎬", seats=3, tags=["a", "b"])
    meta = metadata(answer={"ok": True})

    store = InMemoryEventStore()
    store.append("license-1", [codec.encode(granted, meta), codec.encode(Revoked(), meta)], expected_version=0)
    stored = store.read("license-1")

    assert [s.type_name for s in stored] == ["test.SeatsGranted", "test.Revoked"]
    assert [s.schema_version for s in stored] == [1, 1]
    assert codec.decode(stored[0]) == (granted, meta)
    assert codec.decode(stored[1]) == (Revoked(reason=None), meta)


def test_metadata_without_optional_fields_decodes_to_the_defaults() -> None:
    codec = EventCodec([Revoked])
    bare = EventMetadata(recorded_at=T0)

    (stored,) = stored_by(codec, Revoked("spam"), meta=bare)

    assert codec.decode(stored) == (Revoked("spam"), bare)


def test_a_stored_type_name_no_class_is_registered_for_raises_unknown_event_type() -> None:
    (stored,) = stored_by(EventCodec([Revoked]), Revoked("gone"))

    with pytest.raises(UnknownEventType) as caught:
        EventCodec([SeatsGranted]).decode(stored)

    assert caught.value.type_name == "test.Revoked"


def test_encoding_an_event_whose_class_is_not_registered_raises_unknown_event_type() -> None:
    with pytest.raises(UnknownEventType):
        EventCodec([SeatsGranted]).encode(Revoked(), metadata())


def test_encoding_an_impostor_class_with_a_registered_type_name_raises_unknown_event_type() -> None:
    with pytest.raises(UnknownEventType):
        EventCodec([GrantedV3]).encode(GrantedV1(user="ann", seats=1), metadata())


def test_registering_a_second_class_under_a_taken_type_name_fails() -> None:
    codec = EventCodec([GrantedV1])

    with pytest.raises(ValueError, match=r"test\.Granted"):
        codec.register(GrantedV3)


def test_registering_the_same_class_twice_is_harmless() -> None:
    codec = EventCodec([SeatsGranted])
    codec.register(SeatsGranted)

    (stored,) = stored_by(codec, SeatsGranted("ann", 1, []))
    assert codec.decode(stored)[0] == SeatsGranted("ann", 1, [])


def test_registering_a_class_without_a_type_name_fails() -> None:
    @dataclass(frozen=True)
    class Nameless(DomainEvent):
        pass

    with pytest.raises(ValueError, match="Nameless"):
        EventCodec([Nameless])


def test_registering_a_second_upcaster_for_the_same_step_fails() -> None:
    chain = upcasters((1, v1_to_v2))

    with pytest.raises(ValueError, match="v1"):
        chain.register("test.Granted", 1, v1_to_v2)


def test_an_event_written_by_old_code_is_read_by_new_code_through_the_upcaster_chain() -> None:
    old_code = EventCodec([GrantedV1])
    (stored,) = stored_by(old_code, GrantedV1(user="ann", seats=4))
    assert stored.schema_version == 1

    new_code = EventCodec([GrantedV3], upcasters=upcasters((1, v1_to_v2), (2, v2_to_v3)))
    event, meta = new_code.decode(stored)

    assert event == GrantedV3(holder="ann", seats=4, plan="basic", download_limit=40)
    assert meta == metadata()


def test_an_event_written_at_a_middle_version_only_runs_the_remaining_steps() -> None:
    @dataclass(frozen=True)
    class GrantedV2(DomainEvent):
        type_name = "test.Granted"
        version = 2

        holder: str
        seats: int
        plan: str

    (stored,) = stored_by(EventCodec([GrantedV2]), GrantedV2(holder="bob", seats=2, plan="pro"))

    def v1_step_must_not_run(data: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("the v1 step ran on a v2 payload")

    new_code = EventCodec([GrantedV3], upcasters=upcasters((1, v1_step_must_not_run), (2, v2_to_v3)))
    assert new_code.decode(stored)[0] == GrantedV3(holder="bob", seats=2, plan="pro", download_limit=20)


def test_a_missing_step_in_the_upcaster_chain_raises_upcast_error_naming_it() -> None:
    (stored,) = stored_by(EventCodec([GrantedV1]), GrantedV1(user="ann", seats=4))
    new_code = EventCodec([GrantedV3], upcasters=upcasters((1, v1_to_v2)))

    with pytest.raises(UpcastError, match=r"from v2 to v3"):
        new_code.decode(stored)


def test_an_upcaster_that_throws_raises_upcast_error_naming_the_failing_step() -> None:
    (stored,) = stored_by(EventCodec([GrantedV1]), GrantedV1(user="ann", seats=4))

    def broken(data: dict[str, Any]) -> dict[str, Any]:
        raise KeyError("seat_count")

    new_code = EventCodec([GrantedV3], upcasters=upcasters((1, v1_to_v2), (2, broken)))

    with pytest.raises(UpcastError, match=r"v2 -> v3") as caught:
        new_code.decode(stored)
    assert isinstance(caught.value.__cause__, KeyError)


def test_an_event_stored_with_a_version_newer_than_the_code_raises_upcast_error() -> None:
    (stored,) = stored_by(EventCodec([GrantedV3]), GrantedV3(holder="ann", seats=1, plan="pro", download_limit=5))
    old_code = EventCodec([GrantedV1], upcasters=upcasters((1, v1_to_v2), (2, v2_to_v3)))

    with pytest.raises(UpcastError, match="newer"):
        old_code.decode(stored)


def test_upcasting_never_rewrites_the_stored_event() -> None:
    store = InMemoryEventStore()
    store.append("s", [EventCodec([GrantedV1]).encode(GrantedV1("ann", 4), metadata())], expected_version=0)
    before = store.read("s")

    EventCodec([GrantedV3], upcasters=upcasters((1, v1_to_v2), (2, v2_to_v3))).decode(before[0])

    assert store.read("s") == before
    assert before[0].data == b'{"user":"ann","seats":4}'


def test_an_upcast_payload_that_does_not_fit_the_class_raises_serialization_error() -> None:
    (stored,) = stored_by(EventCodec([GrantedV1]), GrantedV1(user="ann", seats=4))
    incomplete = EventCodec([GrantedV3], upcasters=upcasters((1, lambda d: d), (2, lambda d: d)))

    with pytest.raises(SerializationError, match="does not fit"):
        incomplete.decode(stored)
