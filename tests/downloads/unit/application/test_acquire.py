"""Acquiring a license: the rules of section 3, checked in the product's order."""

from __future__ import annotations

from datetime import timedelta

from downloads.application import AcquireLicense, ChangePlan, CloseAccount, DeactivateDevice, ReleaseLicense, SyncDevice
from downloads.application.presenters import iso
from downloads.domain import Denied, NotFound
from tests.downloads.factories import START, make_policy, refusal, start_service


def test_an_issued_license_is_active_and_expires_after_the_studios_license_duration() -> None:
    d = start_service()
    d.account("acct-1", devices=["phone"])

    reply = d.service.handle(AcquireLicense("acct-1", "phone", "demo-title-1"))

    assert reply.created
    body = reply.body
    assert body == {
        "license_id": body["license_id"],
        "account_id": "acct-1",
        "device_id": "phone",
        "title_id": "demo-title-1",
        "status": "active",
        "issued_at": "2030-01-01T12:00:00Z",
        "expires_at": "2030-01-31T12:00:00Z",
        "playback_started_at": None,
        "renewals": 0,
    }
    assert d.service.get_license("acct-1", body["license_id"]) == body
    assert d.event_types("acct-1")[-1] == "LicenseIssued"


def test_acquiring_on_an_unknown_device_answers_device_not_found() -> None:
    d = start_service()
    d.account("acct-1", devices=[])

    assert refusal(lambda: d.service.handle(AcquireLicense("acct-1", "nope", "demo-title-1")), NotFound).code == (
        "DEVICE_NOT_FOUND"
    )


def test_acquiring_an_unknown_title_answers_title_not_found() -> None:
    d = start_service()
    d.account("acct-1")

    assert (
        refusal(lambda: d.service.handle(AcquireLicense("acct-1", "phone", "nope")), NotFound).code == "TITLE_NOT_FOUND"
    )


def test_a_title_marked_not_downloadable_is_refused() -> None:
    d = start_service()
    d.account("acct-1")
    d.title("withdrawn", downloadable=False)

    error = refusal(lambda: d.service.handle(AcquireLicense("acct-1", "phone", "withdrawn")), Denied)

    assert error.code == "TITLE_NOT_DOWNLOADABLE"


def test_a_title_past_its_available_until_is_refused_and_one_before_it_is_issued() -> None:
    d = start_service()
    d.account("acct-1")
    d.title("leaving", available_until=START + timedelta(days=1))

    assert d.service.handle(AcquireLicense("acct-1", "phone", "leaving")).created
    d.service.handle(SyncDevice("acct-1", "phone", []))  # release it
    d.clock.advance(timedelta(days=1))

    assert refusal(lambda: d.service.handle(AcquireLicense("acct-1", "phone", "leaving")), Denied).code == (
        "TITLE_NOT_DOWNLOADABLE"
    )


def test_an_active_license_for_the_same_device_and_title_is_answered_without_a_new_event() -> None:
    d = start_service()
    d.account("acct-1")
    first = d.service.handle(AcquireLicense("acct-1", "phone", "demo-title-1"))
    before = d.stream_version("acct-1")

    again = d.service.handle(AcquireLicense("acct-1", "phone", "demo-title-1"))

    assert not again.created
    assert again.body == first.body
    assert d.stream_version("acct-1") == before


def test_the_existing_license_is_answered_even_when_the_device_limit_is_reached() -> None:
    d = start_service(policy=make_policy(max_active_downloads=1))
    d.account("acct-1", plan="premium", devices=["phone", "tablet"])
    first = d.license("acct-1", "phone", "demo-title-1")
    d.license("acct-1", "tablet", "demo-title-1")
    d.service.handle(ChangePlan("acct-1", "basic"))  # now 2 devices with downloads, limit 1; phone at its own limit
    before = d.stream_version("acct-1")

    again = d.service.handle(AcquireLicense("acct-1", "phone", "demo-title-1"))

    assert (again.created, again.body["license_id"]) == (False, first)
    assert d.stream_version("acct-1") == before


def test_a_new_device_is_refused_when_the_plans_devices_with_downloads_are_all_used() -> None:
    d = start_service()
    d.account("acct-1", plan="standard", devices=["a", "b", "c"])
    d.license("acct-1", "a", "demo-title-1")
    d.license("acct-1", "b", "demo-title-1")
    before = d.stream_version("acct-1")

    error = refusal(lambda: d.service.handle(AcquireLicense("acct-1", "c", "demo-title-1")), Denied)

    assert error.code == "DEVICE_LIMIT_REACHED"
    assert error.details["limit"] == 2 and error.details["used"] == 2
    assert d.stream_version("acct-1") == before
    # a device that already holds a download is not a new device
    assert d.service.handle(AcquireLicense("acct-1", "a", "demo-title-2")).created


def test_releasing_a_download_frees_the_devices_slot() -> None:
    d = start_service()
    d.account("acct-1", plan="basic", devices=["a", "b"])
    held = d.license("acct-1", "a", "demo-title-1")

    d.service.handle(ReleaseLicense("acct-1", held))

    assert d.service.handle(AcquireLicense("acct-1", "b", "demo-title-1")).created


def test_a_device_holding_max_active_downloads_is_refused_one_more() -> None:
    d = start_service(policy=make_policy(max_active_downloads=2))
    d.account("acct-1", devices=["phone"])
    for title in ["t1", "t2", "t3"]:
        d.title(title)
    d.license("acct-1", "phone", "t1")
    d.license("acct-1", "phone", "t2")

    error = refusal(lambda: d.service.handle(AcquireLicense("acct-1", "phone", "t3")), Denied)

    assert error.code == "DEVICE_DOWNLOAD_LIMIT_REACHED"
    assert error.details["limit"] == 2 and error.details["used"] == 2


def test_a_restricted_title_is_refused_after_three_downloads_in_the_window_until_the_oldest_leaves_it() -> None:
    d = start_service()
    d.account("acct-1", devices=["phone"])
    d.title("film", studio="restricted")
    for _ in range(3):
        d.service.handle(ReleaseLicense("acct-1", d.license("acct-1", "phone", "film")))
        d.clock.advance(timedelta(days=10))
    before = d.stream_version("acct-1")

    error = refusal(lambda: d.service.handle(AcquireLicense("acct-1", "phone", "film")), Denied)

    assert error.code == "TITLE_YEARLY_LIMIT_REACHED"
    assert error.details["limit"] == 3 and error.details["used"] == 3
    assert error.details["next_available_at"] == START + timedelta(days=365)
    assert d.stream_version("acct-1") == before
    assert d.service.title_downloads("acct-1", "film") == {
        "title_id": "film",
        "limit": 3,
        "used": 3,
        "window_days": 365,
        "next_available_at": iso(START + timedelta(days=365)),
    }

    d.clock.now = START + timedelta(days=365) - timedelta(seconds=1)
    assert (
        refusal(lambda: d.service.handle(AcquireLicense("acct-1", "phone", "film"))).code
        == "TITLE_YEARLY_LIMIT_REACHED"
    )
    d.clock.now = START + timedelta(days=365)
    assert d.service.handle(AcquireLicense("acct-1", "phone", "film")).created


def test_a_default_studio_title_has_no_yearly_limit() -> None:
    d = start_service()
    d.account("acct-1", devices=["phone"])
    for _ in range(5):
        d.service.handle(ReleaseLicense("acct-1", d.license("acct-1", "phone", "demo-title-1")))

    assert d.service.title_downloads("acct-1", "demo-title-1") == {
        "title_id": "demo-title-1",
        "limit": 0,
        "used": 5,
        "window_days": 365,
        "next_available_at": None,
    }


# -- the order of the rules: the first failing one is the answer --------------------------------


def test_a_closed_account_answers_account_not_active_before_an_unknown_device() -> None:
    d = start_service()
    d.account("acct-1", devices=[])
    d.service.handle(CloseAccount("acct-1"))

    assert refusal(lambda: d.service.handle(AcquireLicense("acct-1", "nope", "nope"))).code == "ACCOUNT_NOT_ACTIVE"


def test_an_unknown_device_answers_before_an_unknown_title() -> None:
    d = start_service()
    d.account("acct-1", devices=[])

    assert refusal(lambda: d.service.handle(AcquireLicense("acct-1", "nope", "nope"))).code == "DEVICE_NOT_FOUND"


def test_a_deactivated_device_answers_device_not_active_before_an_unknown_title() -> None:
    d = start_service()
    d.account("acct-1", devices=["phone"])
    d.service.handle(DeactivateDevice("acct-1", "phone"))

    assert refusal(lambda: d.service.handle(AcquireLicense("acct-1", "phone", "nope"))).code == "DEVICE_NOT_ACTIVE"


def test_a_title_not_downloadable_answers_before_the_existing_license_and_the_limits() -> None:
    d = start_service(policy=make_policy(max_active_downloads=1))
    d.account("acct-1", plan="basic", devices=["phone", "tablet"])
    d.title("film", studio="restricted")
    d.license("acct-1", "phone", "film")
    d.title("film", studio="restricted", downloadable=False)

    assert refusal(lambda: d.service.handle(AcquireLicense("acct-1", "phone", "film"))).code == "TITLE_NOT_DOWNLOADABLE"
    assert (
        refusal(lambda: d.service.handle(AcquireLicense("acct-1", "tablet", "film"))).code == "TITLE_NOT_DOWNLOADABLE"
    )


def test_the_device_limit_answers_before_the_per_device_limit_and_the_yearly_limit() -> None:
    d = start_service(policy=make_policy(max_active_downloads=1))
    d.account("acct-1", plan="basic", devices=["phone", "tablet"])
    d.title("film", studio="restricted")
    for _ in range(3):
        d.service.handle(ReleaseLicense("acct-1", d.license("acct-1", "phone", "film")))
    d.license("acct-1", "phone", "demo-title-1")

    assert refusal(lambda: d.service.handle(AcquireLicense("acct-1", "tablet", "film"))).code == "DEVICE_LIMIT_REACHED"


def test_the_per_device_limit_answers_before_the_yearly_limit() -> None:
    d = start_service(policy=make_policy(max_active_downloads=1))
    d.account("acct-1", plan="basic", devices=["phone"])
    d.title("film", studio="restricted")
    for _ in range(3):
        d.service.handle(ReleaseLicense("acct-1", d.license("acct-1", "phone", "film")))
    d.license("acct-1", "phone", "demo-title-1")

    assert refusal(lambda: d.service.handle(AcquireLicense("acct-1", "phone", "film"))).code == (
        "DEVICE_DOWNLOAD_LIMIT_REACHED"
    )
