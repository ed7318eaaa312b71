"""A license after it is issued: lazy expiry, playback, renewal, release (section 3)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from downloads.application import AcquireLicense, RegisterDevice, ReleaseLicense, RenewLicense, StartPlayback
from downloads.application.presenters import iso
from downloads.domain import Denied, NotFound, Studio
from tests.downloads.factories import START, Downloads, make_policy, refusal, start_service

DAY = timedelta(days=1)


def _one_license(**kwargs: object) -> tuple[Downloads, str]:
    d = start_service(**kwargs)  # type: ignore[arg-type]
    d.account("acct-1", plan="basic", devices=["phone", "tablet"])
    return d, d.license("acct-1", "phone", "demo-title-1")


# -- lazy expiry ---------------------------------------------------------------------------------


def test_reads_show_a_license_past_its_expiry_as_expired_without_writing() -> None:
    d, lic = _one_license()
    d.clock.advance(30 * DAY)
    before = d.stream_version("acct-1")

    assert d.service.get_license("acct-1", lic)["status"] == "expired"
    assert [x["status"] for x in d.service.list_licenses("acct-1")] == ["expired"]
    assert [x["license_id"] for x in d.service.list_licenses("acct-1", status="expired")] == [lic]
    account = d.service.get_account("acct-1")
    assert account["devices_with_downloads"] == 0 and account["version"] == before
    assert d.stream_version("acct-1") == before


def test_a_license_is_active_until_the_instant_before_its_expiry() -> None:
    d, lic = _one_license()
    d.clock.advance(30 * DAY - timedelta(microseconds=1))

    assert d.service.get_license("acct-1", lic)["status"] == "active"


def test_the_next_command_records_license_expired_before_its_own_events() -> None:
    d, lic = _one_license()
    d.clock.advance(31 * DAY)
    before = d.stream_version("acct-1")

    d.service.handle(RegisterDevice("acct-1", "laptop", "model"))

    events = d.events("acct-1", after=before)
    assert [e["type"] for e in events] == ["LicenseExpired", "DeviceRegistered"]
    assert events[0]["data"] == {"license_id": lic, "at": iso(START + 30 * DAY)}


def test_an_expired_license_no_longer_counts_toward_the_device_limit() -> None:
    d, _ = _one_license()
    assert refusal(lambda: d.service.handle(AcquireLicense("acct-1", "tablet", "demo-title-1"))).code == (
        "DEVICE_LIMIT_REACHED"
    )
    d.clock.advance(30 * DAY)

    assert d.service.handle(AcquireLicense("acct-1", "tablet", "demo-title-1")).created
    assert d.event_types("acct-1")[-2:] == ["LicenseExpired", "LicenseIssued"]


def test_an_expired_license_no_longer_counts_toward_the_per_device_limit() -> None:
    d, _ = _one_license(policy=make_policy(max_active_downloads=1))
    d.clock.advance(30 * DAY)

    assert d.service.handle(AcquireLicense("acct-1", "phone", "demo-title-2")).created


def test_acquiring_a_title_whose_license_expired_issues_a_new_license() -> None:
    d, lic = _one_license()
    d.clock.advance(30 * DAY)

    reply = d.service.handle(AcquireLicense("acct-1", "phone", "demo-title-1"))

    assert reply.created and reply.body["license_id"] != lic


def test_a_denied_command_does_not_record_the_expiry_either() -> None:
    d, lic = _one_license()
    d.clock.advance(30 * DAY)
    before = d.stream_version("acct-1")

    assert refusal(lambda: d.service.handle(StartPlayback("acct-1", lic))).code == "LICENSE_NOT_ACTIVE"
    assert d.stream_version("acct-1") == before


# -- playback ----------------------------------------------------------------------------------


def test_the_first_playback_shortens_expiry_to_the_playback_window() -> None:
    d, lic = _one_license()
    d.clock.advance(DAY)

    body = d.service.handle(StartPlayback("acct-1", lic)).body

    assert body["playback_started_at"] == iso(START + DAY)
    assert body["expires_at"] == iso(START + DAY + timedelta(hours=48))
    assert d.event_types("acct-1")[-1] == "PlaybackStarted"


def test_the_first_playback_never_extends_expiry() -> None:
    d, lic = _one_license()
    d.clock.advance(29 * DAY)

    body = d.service.handle(StartPlayback("acct-1", lic)).body

    assert body["expires_at"] == iso(START + 30 * DAY)
    assert body["playback_started_at"] == iso(START + 29 * DAY)


def test_a_second_playback_changes_nothing() -> None:
    d, lic = _one_license()
    first = d.service.handle(StartPlayback("acct-1", lic)).body
    before = d.stream_version("acct-1")
    d.clock.advance(DAY)

    second = d.service.handle(StartPlayback("acct-1", lic)).body

    assert second == first
    assert d.stream_version("acct-1") == before


def test_the_playback_window_is_the_studios() -> None:
    studios = {"default": Studio(), "quick": Studio(playback_window=timedelta(hours=2))}
    d = start_service(policy=make_policy(studios=studios))
    d.account("acct-1")
    lic = d.license("acct-1", "phone", d.title("film", studio="quick"))

    assert d.service.handle(StartPlayback("acct-1", lic)).body["expires_at"] == iso(START + timedelta(hours=2))


def test_a_license_expires_at_the_end_of_its_playback_window() -> None:
    d, lic = _one_license()
    d.service.handle(StartPlayback("acct-1", lic))
    d.clock.advance(timedelta(hours=48))

    assert d.service.get_license("acct-1", lic)["status"] == "expired"


@pytest.mark.parametrize("command", [StartPlayback, RenewLicense, ReleaseLicense])
def test_an_unknown_license_answers_license_not_found(
    command: type[StartPlayback | RenewLicense | ReleaseLicense],
) -> None:
    d, _ = _one_license()

    error = refusal(lambda: d.service.handle(command("acct-1", "nope")), NotFound)

    assert error.code == "LICENSE_NOT_FOUND"


def test_reading_an_unknown_license_answers_license_not_found() -> None:
    d, _ = _one_license()

    assert refusal(lambda: d.service.get_license("acct-1", "nope"), NotFound).code == "LICENSE_NOT_FOUND"


def test_playing_a_released_license_answers_license_not_active() -> None:
    d, lic = _one_license()
    d.service.handle(ReleaseLicense("acct-1", lic))

    error = refusal(lambda: d.service.handle(StartPlayback("acct-1", lic)), Denied)

    assert error.code == "LICENSE_NOT_ACTIVE" and error.details["status"] == "released"


# -- renewal -----------------------------------------------------------------------------------


def test_renewing_an_active_license_gives_a_full_new_duration_and_clears_the_playback_window() -> None:
    d, lic = _one_license()
    d.service.handle(StartPlayback("acct-1", lic))
    d.clock.advance(DAY)

    body = d.service.handle(RenewLicense("acct-1", lic)).body

    assert body["status"] == "active"
    assert body["expires_at"] == iso(START + DAY + 30 * DAY)
    assert body["playback_started_at"] is None
    assert body["renewals"] == 1
    assert d.event_types("acct-1")[-1] == "LicenseRenewed"
    d.clock.advance(DAY)
    assert d.service.handle(StartPlayback("acct-1", lic)).body["expires_at"] == iso(
        START + 2 * DAY + timedelta(hours=48)
    )


def test_renewing_an_expired_license_makes_it_active_again() -> None:
    d, lic = _one_license()
    d.clock.advance(40 * DAY)

    body = d.service.handle(RenewLicense("acct-1", lic)).body

    assert (body["status"], body["renewals"]) == ("active", 1)
    assert body["expires_at"] == iso(START + 70 * DAY)
    assert d.event_types("acct-1")[-2:] == ["LicenseExpired", "LicenseRenewed"]
    assert d.service.handle(RenewLicense("acct-1", lic)).body["renewals"] == 2


def test_renewing_a_released_license_answers_license_not_active() -> None:
    d, lic = _one_license()
    d.service.handle(ReleaseLicense("acct-1", lic))
    before = d.stream_version("acct-1")

    error = refusal(lambda: d.service.handle(RenewLicense("acct-1", lic)), Denied)

    assert error.code == "LICENSE_NOT_ACTIVE"
    assert d.stream_version("acct-1") == before


def test_renewing_a_license_whose_title_is_no_longer_downloadable_is_refused() -> None:
    d = start_service()
    d.account("acct-1")
    lic = d.license("acct-1", "phone", d.title("film"))
    d.title("film", downloadable=False)

    assert refusal(lambda: d.service.handle(RenewLicense("acct-1", lic)), Denied).code == "TITLE_NOT_DOWNLOADABLE"


def test_renewing_an_expired_license_rechecks_the_device_limit() -> None:
    d, lic = _one_license()  # basic plan: one device with downloads
    d.clock.advance(30 * DAY)
    d.license("acct-1", "tablet", "demo-title-1")

    error = refusal(lambda: d.service.handle(RenewLicense("acct-1", lic)), Denied)

    assert error.code == "DEVICE_LIMIT_REACHED"
    assert error.details["limit"] == 1 and error.details["used"] == 1


def test_renewing_an_expired_license_rechecks_the_per_device_limit() -> None:
    d, lic = _one_license(policy=make_policy(max_active_downloads=1))
    d.clock.advance(30 * DAY)
    d.license("acct-1", "phone", "demo-title-2")

    assert (
        refusal(lambda: d.service.handle(RenewLicense("acct-1", lic)), Denied).code == "DEVICE_DOWNLOAD_LIMIT_REACHED"
    )


def test_renewing_an_active_license_does_not_count_it_twice_against_the_device_limits() -> None:
    d, lic = _one_license(policy=make_policy(max_active_downloads=1))  # basic plan, phone at both limits

    assert d.service.handle(RenewLicense("acct-1", lic)).body["renewals"] == 1


def test_renewals_count_toward_the_yearly_limit_when_the_studio_says_so() -> None:
    d = start_service()
    d.account("acct-1")
    lic = d.license("acct-1", "phone", d.title("film", studio="restricted"))
    d.clock.advance(DAY)
    d.service.handle(RenewLicense("acct-1", lic))
    d.clock.advance(DAY)
    d.service.handle(RenewLicense("acct-1", lic))
    d.clock.advance(DAY)

    error = refusal(lambda: d.service.handle(RenewLicense("acct-1", lic)), Denied)

    assert error.code == "TITLE_YEARLY_LIMIT_REACHED"
    assert error.details["next_available_at"] == START + 365 * DAY
    assert d.service.title_downloads("acct-1", "film")["used"] == 3


def test_renewals_do_not_count_toward_the_yearly_limit_when_the_studio_says_not() -> None:
    studios = {"default": Studio(), "lenient": Studio(max_downloads_per_title=2, renewals_count_as_downloads=False)}
    d = start_service(policy=make_policy(studios=studios))
    d.account("acct-1")
    lic = d.license("acct-1", "phone", d.title("film", studio="lenient"))

    for _ in range(5):
        d.clock.advance(DAY)
        d.service.handle(RenewLicense("acct-1", lic))

    assert d.service.get_license("acct-1", lic)["renewals"] == 5
    assert d.service.title_downloads("acct-1", "film")["used"] == 1


# -- release -----------------------------------------------------------------------------------


def test_releasing_a_license_frees_it_and_records_the_member_as_the_reason() -> None:
    d, lic = _one_license()

    body = d.service.handle(ReleaseLicense("acct-1", lic)).body

    assert body["status"] == "released"
    last = d.events("acct-1")[-1]
    assert (last["type"], last["data"]["reason"]) == ("LicenseReleased", "member")
    assert d.service.get_account("acct-1")["devices_with_downloads"] == 0


def test_releasing_a_released_license_is_idempotent_and_records_nothing() -> None:
    d, lic = _one_license()
    first = d.service.handle(ReleaseLicense("acct-1", lic)).body
    before = d.stream_version("acct-1")

    again = d.service.handle(ReleaseLicense("acct-1", lic)).body

    assert again == first
    assert d.stream_version("acct-1") == before
