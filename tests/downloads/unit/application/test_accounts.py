"""Accounts: opening, changing plan, closing (product spec section 3)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from downloads.application import (
    AcquireLicense,
    ChangePlan,
    CloseAccount,
    DeactivateDevice,
    DownloadsService,
    OpenAccount,
    RegisterDevice,
    ReleaseLicense,
    RenewLicense,
    StartPlayback,
    SyncDevice,
)
from downloads.domain import Denied, Invalid, NotFound
from tests.downloads.factories import Downloads, refusal, start_service


def test_an_opened_account_is_active_with_the_plans_device_limit_and_no_devices() -> None:
    d = start_service()

    reply = d.service.handle(OpenAccount("acct-1", "standard"))

    assert reply.created
    assert reply.body == {
        "account_id": "acct-1",
        "plan": "standard",
        "status": "active",
        "device_limit": 2,
        "devices_with_downloads": 0,
        "devices": [],
        "version": 1,
    }
    assert d.service.get_account("acct-1") == reply.body
    assert d.event_types("acct-1") == ["AccountOpened"]


def test_opening_an_account_twice_is_refused_with_account_exists() -> None:
    d = start_service()
    d.service.handle(OpenAccount("acct-1", "basic"))

    error = refusal(lambda: d.service.handle(OpenAccount("acct-1", "premium")), Denied)

    assert error.code == "ACCOUNT_EXISTS"
    assert d.service.get_account("acct-1")["plan"] == "basic"
    assert d.stream_version("acct-1") == 1


def test_opening_an_account_on_an_unknown_plan_is_invalid_and_writes_nothing() -> None:
    d = start_service()

    error = refusal(lambda: d.service.handle(OpenAccount("acct-1", "platinum")), Invalid)

    assert error.code == "UNKNOWN_PLAN"
    assert d.stream_version("acct-1") == 0
    assert refusal(lambda: d.service.get_account("acct-1"), NotFound).code == "ACCOUNT_NOT_FOUND"


def test_a_closed_account_cannot_be_opened_again() -> None:
    d = start_service()
    d.account("acct-1")
    d.service.handle(CloseAccount("acct-1"))

    assert refusal(lambda: d.service.handle(OpenAccount("acct-1", "basic")), Denied).code == "ACCOUNT_EXISTS"


def test_changing_to_an_unknown_plan_is_invalid_and_keeps_the_plan() -> None:
    d = start_service()
    d.account("acct-1", plan="basic")
    before = d.stream_version("acct-1")

    assert refusal(lambda: d.service.handle(ChangePlan("acct-1", "gold")), Invalid).code == "UNKNOWN_PLAN"
    assert d.service.get_account("acct-1")["plan"] == "basic"
    assert d.stream_version("acct-1") == before


def test_changing_the_plan_changes_the_device_limit() -> None:
    d = start_service()
    d.account("acct-1", plan="basic")

    body = d.service.handle(ChangePlan("acct-1", "premium")).body

    assert (body["plan"], body["device_limit"]) == ("premium", 6)
    assert d.event_types("acct-1")[-1] == "PlanChanged"


def test_a_downgrade_revokes_nothing_but_no_new_device_may_download_until_under_the_limit() -> None:
    d = start_service()
    d.account("acct-1", plan="premium", devices=["a", "b", "c"])
    held = {device: d.license("acct-1", device, "demo-title-1") for device in ["a", "b", "c"]}

    account = d.service.handle(ChangePlan("acct-1", "basic")).body

    assert account["devices_with_downloads"] == 3 and account["device_limit"] == 1
    assert all(d.service.get_license("acct-1", lic)["status"] == "active" for lic in held.values())
    d.service.handle(RegisterDevice("acct-1", "new", "tablet"))
    error = refusal(lambda: d.service.handle(AcquireLicense("acct-1", "new", "demo-title-1")), Denied)
    assert error.code == "DEVICE_LIMIT_REACHED"
    assert error.details["limit"] == 1 and error.details["used"] == 3
    # a device that already holds downloads may still add to them
    assert d.service.handle(AcquireLicense("acct-1", "a", "demo-title-2")).created

    d.service.handle(DeactivateDevice("acct-1", "b"))
    d.service.handle(ReleaseLicense("acct-1", held["c"]))
    # one device (a) still holds downloads: at the limit of 1, not under it
    assert (
        refusal(lambda: d.service.handle(AcquireLicense("acct-1", "new", "demo-title-1"))).code
        == "DEVICE_LIMIT_REACHED"
    )

    d.service.handle(DeactivateDevice("acct-1", "a"))
    assert d.service.handle(AcquireLicense("acct-1", "new", "demo-title-1")).created


def test_closing_an_account_revokes_every_active_license_with_reason_account_closed() -> None:
    d = start_service()
    d.account("acct-1", devices=["a", "b"])
    first = d.license("acct-1", "a", "demo-title-1")
    second = d.license("acct-1", "b", "demo-title-2")
    released = d.license("acct-1", "b", "demo-title-1")
    d.service.handle(ReleaseLicense("acct-1", released))
    before = d.stream_version("acct-1")

    body = d.service.handle(CloseAccount("acct-1")).body

    assert body["status"] == "closed" and body["devices_with_downloads"] == 0
    events = d.events("acct-1", after=before)
    assert [(e["type"], e["data"].get("license_id"), e["data"].get("reason")) for e in events] == [
        ("LicenseRevoked", first, "account_closed"),
        ("LicenseRevoked", second, "account_closed"),
        ("AccountClosed", None, None),
    ]
    statuses = {lic["license_id"]: lic["status"] for lic in d.service.list_licenses("acct-1")}
    assert statuses == {first: "revoked", second: "revoked", released: "released"}


Command = Callable[[DownloadsService, dict[str, str]], object]

EVERY_COMMAND_BUT_OPEN: dict[str, Command] = {
    "change plan": lambda s, ids: s.handle(ChangePlan("acct-1", "basic")),
    "close account": lambda s, ids: s.handle(CloseAccount("acct-1")),
    "register device": lambda s, ids: s.handle(RegisterDevice("acct-1", "tablet", "model")),
    "register the same device": lambda s, ids: s.handle(RegisterDevice("acct-1", "phone", "model")),
    "deactivate device": lambda s, ids: s.handle(DeactivateDevice("acct-1", "phone")),
    "deactivate unknown device": lambda s, ids: s.handle(DeactivateDevice("acct-1", "nope")),
    "sync device": lambda s, ids: s.handle(SyncDevice("acct-1", "phone", [ids["license"]])),
    "acquire license": lambda s, ids: s.handle(AcquireLicense("acct-1", "phone", "demo-title-1")),
    "acquire on unknown device": lambda s, ids: s.handle(AcquireLicense("acct-1", "nope", "demo-title-1")),
    "acquire unknown title": lambda s, ids: s.handle(AcquireLicense("acct-1", "phone", "no-such-title")),
    "start playback": lambda s, ids: s.handle(StartPlayback("acct-1", ids["license"])),
    "start playback of unknown license": lambda s, ids: s.handle(StartPlayback("acct-1", "nope")),
    "renew license": lambda s, ids: s.handle(RenewLicense("acct-1", ids["license"])),
    "release license": lambda s, ids: s.handle(ReleaseLicense("acct-1", ids["license"])),
}


def _closed_account_with_a_license() -> tuple[Downloads, dict[str, str]]:
    d = start_service()
    d.account("acct-1", devices=["phone"])
    ids = {"license": d.license("acct-1", "phone", "demo-title-1")}
    d.service.handle(CloseAccount("acct-1"))
    return d, ids


@pytest.mark.parametrize("command", EVERY_COMMAND_BUT_OPEN.values(), ids=EVERY_COMMAND_BUT_OPEN.keys())
def test_every_command_on_a_closed_account_answers_account_not_active_and_writes_nothing(command: Command) -> None:
    d, ids = _closed_account_with_a_license()
    d.clock.advance(timedelta(days=90))  # past the license's expiry too: still nothing is written
    before = d.stream_version("acct-1")

    error = refusal(lambda: command(d.service, ids), Denied)

    assert error.code == "ACCOUNT_NOT_ACTIVE"
    assert d.stream_version("acct-1") == before


def test_a_closed_account_can_still_be_read() -> None:
    d, ids = _closed_account_with_a_license()

    assert d.service.get_account("acct-1")["status"] == "closed"
    assert d.service.get_license("acct-1", ids["license"])["status"] == "revoked"
    assert [lic["license_id"] for lic in d.service.list_licenses("acct-1", status="revoked")] == [ids["license"]]
    assert d.service.title_downloads("acct-1", "demo-title-1")["used"] == 1


@pytest.mark.parametrize("command", EVERY_COMMAND_BUT_OPEN.values(), ids=EVERY_COMMAND_BUT_OPEN.keys())
def test_every_command_on_an_unknown_account_answers_account_not_found(command: Command) -> None:
    d = start_service()

    error = refusal(lambda: command(d.service, {"license": "lic"}), NotFound)

    assert error.code == "ACCOUNT_NOT_FOUND"
    assert d.stream_version("acct-1") == 0


@pytest.mark.parametrize(
    "read",
    [
        lambda s: s.get_account("ghost"),
        lambda s: s.list_licenses("ghost"),
        lambda s: s.get_license("ghost", "lic"),
        lambda s: s.title_downloads("ghost", "demo-title-1"),
        lambda s: s.history("ghost"),
    ],
    ids=["account", "licenses", "license", "title downloads", "history"],
)
def test_reading_an_unknown_account_answers_account_not_found(read: Callable[[DownloadsService], object]) -> None:
    d = start_service()

    assert refusal(lambda: read(d.service), NotFound).code == "ACCOUNT_NOT_FOUND"
