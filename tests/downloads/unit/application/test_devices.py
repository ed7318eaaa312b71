"""Devices: registering, deactivating and syncing (product spec section 3)."""

from __future__ import annotations

from downloads.application import AcquireLicense, DeactivateDevice, RegisterDevice, ReleaseLicense, SyncDevice
from downloads.domain import Denied, NotFound, Policy
from tests.downloads.factories import refusal, start_service


def test_a_registered_device_is_active_with_no_downloads() -> None:
    d = start_service()
    d.account("acct-1", devices=[])

    reply = d.service.handle(RegisterDevice("acct-1", "phone", "Pixel 9"))

    assert reply.created
    assert reply.body == {"device_id": "phone", "model": "Pixel 9", "status": "active", "active_downloads": 0}
    assert d.service.get_account("acct-1")["devices"] == [reply.body]


def test_registering_an_active_device_again_is_idempotent_and_records_nothing() -> None:
    d = start_service()
    d.account("acct-1", devices=["phone"])
    d.license("acct-1", "phone", "demo-title-1")
    before = d.stream_version("acct-1")

    reply = d.service.handle(RegisterDevice("acct-1", "phone", "another model"))

    assert not reply.created
    assert reply.body == {"device_id": "phone", "model": "model-of-phone", "status": "active", "active_downloads": 1}
    assert d.stream_version("acct-1") == before


def test_deactivating_a_device_releases_its_licenses_with_reason_device_deactivated() -> None:
    d = start_service()
    d.account("acct-1", devices=["phone", "tablet"])
    mine = [d.license("acct-1", "phone", "demo-title-1"), d.license("acct-1", "phone", "demo-title-2")]
    other = d.license("acct-1", "tablet", "demo-title-1")
    before = d.stream_version("acct-1")

    body = d.service.handle(DeactivateDevice("acct-1", "phone")).body

    assert body == {
        "device": {"device_id": "phone", "model": "model-of-phone", "status": "deactivated", "active_downloads": 0},
        "released": mine,
    }
    assert [
        (e["type"], e["data"].get("license_id"), e["data"].get("reason")) for e in d.events("acct-1", after=before)
    ] == [
        ("LicenseReleased", mine[0], "device_deactivated"),
        ("LicenseReleased", mine[1], "device_deactivated"),
        ("DeviceDeactivated", None, None),
    ]
    assert d.service.get_license("acct-1", other)["status"] == "active"
    assert d.service.get_account("acct-1")["devices_with_downloads"] == 1


def test_deactivating_a_deactivated_device_changes_nothing() -> None:
    d = start_service()
    d.account("acct-1", devices=["phone"])
    d.service.handle(DeactivateDevice("acct-1", "phone"))
    before = d.stream_version("acct-1")

    body = d.service.handle(DeactivateDevice("acct-1", "phone")).body

    assert body["device"]["status"] == "deactivated" and body["released"] == []
    assert d.stream_version("acct-1") == before


def test_deactivating_an_unknown_device_answers_device_not_found() -> None:
    d = start_service()
    d.account("acct-1", devices=[])

    assert refusal(lambda: d.service.handle(DeactivateDevice("acct-1", "nope")), NotFound).code == "DEVICE_NOT_FOUND"
    assert d.stream_version("acct-1") == 1


def test_a_deactivated_device_may_be_registered_again_and_download_again() -> None:
    d = start_service()
    d.account("acct-1", devices=["phone"])
    d.service.handle(DeactivateDevice("acct-1", "phone"))
    assert refusal(lambda: d.service.handle(AcquireLicense("acct-1", "phone", "demo-title-1")), Denied).code == (
        "DEVICE_NOT_ACTIVE"
    )

    reply = d.service.handle(RegisterDevice("acct-1", "phone", "Pixel 10"))

    assert reply.created and reply.body["status"] == "active" and reply.body["model"] == "Pixel 10"
    assert d.event_types("acct-1")[-1] == "DeviceRegistered"
    assert d.service.handle(AcquireLicense("acct-1", "phone", "demo-title-1")).created


def test_sync_releases_what_the_device_lost_and_revokes_what_the_server_does_not_hold_active() -> None:
    d = start_service()
    d.account("acct-1", devices=["phone", "tablet"])
    kept = d.license("acct-1", "phone", "demo-title-1")
    lost = d.license("acct-1", "phone", "demo-title-2")
    on_tablet = d.license("acct-1", "tablet", "demo-title-1")
    gone = d.license("acct-1", "tablet", "demo-title-2")
    d.service.handle(ReleaseLicense("acct-1", gone))
    before = d.stream_version("acct-1")

    body = d.service.handle(SyncDevice("acct-1", "phone", [kept, on_tablet, gone, "never-issued"])).body

    assert body == {"active": [kept], "released": [lost], "revoked": [on_tablet, gone, "never-issued"]}
    assert [(e["type"], e["data"]["license_id"], e["data"]["reason"]) for e in d.events("acct-1", after=before)] == [
        ("LicenseReleased", lost, "sync"),
    ]
    assert d.service.get_license("acct-1", lost)["status"] == "released"
    assert d.service.get_license("acct-1", on_tablet)["status"] == "active"


def test_sync_of_a_device_that_holds_exactly_what_the_server_holds_records_nothing() -> None:
    d = start_service()
    d.account("acct-1", devices=["phone"])
    held = d.license("acct-1", "phone", "demo-title-1")
    before = d.stream_version("acct-1")

    body = d.service.handle(SyncDevice("acct-1", "phone", [held, held])).body

    assert body == {"active": [held], "released": [], "revoked": []}
    assert d.stream_version("acct-1") == before


def test_sync_of_an_unknown_device_answers_device_not_found() -> None:
    d = start_service()
    d.account("acct-1", devices=[])

    assert refusal(lambda: d.service.handle(SyncDevice("acct-1", "nope", [])), NotFound).code == "DEVICE_NOT_FOUND"


def test_an_account_holds_at_most_max_devices_active_devices() -> None:
    d = start_service(policy=Policy(max_devices=3))
    d.account("acct-1", devices=["a", "b", "c"])
    before = d.stream_version("acct-1")

    error = refusal(lambda: d.service.handle(RegisterDevice("acct-1", "d", "model")), Denied)

    assert (error.code, error.details) == ("TOO_MANY_DEVICES", {"limit": 3, "used": 3})
    assert d.stream_version("acct-1") == before
    d.service.handle(DeactivateDevice("acct-1", "a"))
    assert d.service.handle(RegisterDevice("acct-1", "d", "model")).created  # a freed place may be taken
    assert refusal(lambda: d.service.handle(RegisterDevice("acct-1", "a", "model")), Denied).code == "TOO_MANY_DEVICES"
