"""The Account aggregate on its own: commands check, then record events; refusals change nothing."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from downloads.domain import Account, Denied, DomainError, Invalid, NotFound, Policy, Studio, TitleInfo
from downloads.domain.events import (
    AccountClosed,
    AccountOpened,
    DeviceRegistered,
    LicenseExpired,
    LicenseIssued,
    LicenseReleased,
    LicenseRenewed,
    LicenseRevoked,
    PlanChanged,
    PlaybackStarted,
)
from eskit import EventMetadata

T0 = datetime(2030, 1, 1, tzinfo=UTC)
DAY = timedelta(days=1)
POLICY = Policy()
FILM = TitleInfo("film", "default")
STRICT = TitleInfo("strict-film", "restricted")


def saved(account: Account) -> Account:
    """Mark the account's pending events as stored, as the repository does after an append."""
    account.mark_saved(EventMetadata(recorded_at=T0))
    return account


def an_account(*, plan: str = "premium", devices: tuple[str, ...] = ("phone",)) -> Account:
    account = Account("acct-1")
    account.open(plan=plan, policy=POLICY, now=T0)
    for device_id in devices:
        account.register_device(device_id=device_id, model="model", policy=POLICY, now=T0)
    return saved(account)


def issue(
    account: Account, device_id: str = "phone", title: TitleInfo = FILM, *, now: datetime = T0, policy: Policy = POLICY
) -> str:
    lic, created = account.acquire(device_id=device_id, title_id=title.title_id, title=title, policy=policy, now=now)
    assert created
    saved(account)
    return lic.license_id


def pending_types(account: Account) -> list[str]:
    return [type(e).__name__ for e in account.pending_events]


def test_opening_records_account_opened_with_the_plan_and_time() -> None:
    account = Account("acct-1")

    account.open(plan="basic", policy=POLICY, now=T0)

    assert account.pending_events == (AccountOpened("acct-1", "basic", T0),)
    assert (account.status, account.plan, account.version) == ("active", "basic", 1)


def test_an_unknown_plan_is_invalid_and_records_nothing() -> None:
    account = Account("acct-1")

    with pytest.raises(Invalid) as caught:
        account.open(plan="gold", policy=POLICY, now=T0)

    assert caught.value.code == "UNKNOWN_PLAN"
    assert account.pending_events == () and not account.exists


def test_changing_to_the_same_plan_records_nothing_and_another_records_plan_changed() -> None:
    account = an_account(plan="basic")

    account.change_plan(plan="basic", policy=POLICY, now=T0)
    assert pending_types(account) == []
    account.change_plan(plan="standard", policy=POLICY, now=T0)
    assert account.pending_events == (PlanChanged("standard", T0),)


def test_an_issued_license_records_the_issue_and_expiry_and_counts_as_a_download() -> None:
    account = an_account()

    _, created = account.acquire(
        device_id="phone", title_id="film", title=FILM, policy=POLICY, now=T0, license_id="lic-1"
    )

    assert created
    assert account.pending_events == (LicenseIssued("lic-1", "phone", "film", T0, T0 + 30 * DAY, True),)
    assert account.title_quota(FILM, POLICY, T0).used == 1


def test_expire_due_records_license_expired_for_every_license_past_its_expiry_oldest_first() -> None:
    account = an_account(devices=("phone", "tablet"))
    late = issue(account, "phone", now=T0 + DAY)
    early = issue(account, "tablet", now=T0)

    account.expire_due(T0 + 30 * DAY)

    assert account.pending_events == (LicenseExpired(early, T0 + 30 * DAY),)
    account.expire_due(T0 + 31 * DAY)
    assert account.pending_events[-1] == LicenseExpired(late, T0 + 31 * DAY)


def test_every_command_expires_due_licenses_before_its_own_event() -> None:
    account = an_account(devices=("phone", "tablet"))
    lic = issue(account)

    account.register_device(device_id="laptop", model="model", policy=POLICY, now=T0 + 40 * DAY)

    assert account.pending_events == (
        LicenseExpired(lic, T0 + 30 * DAY),
        DeviceRegistered("laptop", "model", T0 + 40 * DAY),
    )


def test_playback_and_renewal_record_their_new_expiry() -> None:
    account = an_account()
    lic = issue(account)

    account.start_playback(license_id=lic, title=FILM, policy=POLICY, now=T0 + DAY)
    account.renew(license_id=lic, title=FILM, policy=POLICY, now=T0 + 2 * DAY)

    assert account.pending_events == (
        PlaybackStarted(lic, T0 + DAY, T0 + DAY + timedelta(hours=48)),
        LicenseRenewed(lic, T0 + 2 * DAY, T0 + 32 * DAY, True),
    )
    assert account.licenses[lic].renewals == 1 and account.licenses[lic].playback_started_at is None


def test_closing_records_a_revocation_per_active_license_then_the_closing() -> None:
    account = an_account(devices=("phone", "tablet"))
    first, second = issue(account, "phone"), issue(account, "tablet")

    account.close(now=T0 + DAY)

    assert account.pending_events == (
        LicenseRevoked(first, T0 + DAY, "account_closed"),
        LicenseRevoked(second, T0 + DAY, "account_closed"),
        AccountClosed(T0 + DAY),
    )


def test_a_member_release_records_the_member_as_the_reason() -> None:
    account = an_account()
    lic = issue(account)

    account.release(license_id=lic, now=T0)

    assert account.pending_events == (LicenseReleased(lic, T0, "member"),)


def test_the_yearly_limit_names_when_enough_counted_downloads_leave_the_window() -> None:
    account = an_account()
    lax = Policy(studios={"default": Studio(), "restricted": Studio()})
    for day in [0, 10, 20, 30, 40]:  # five counted under a laxer policy
        account.release(license_id=issue(account, title=STRICT, now=T0 + day * DAY, policy=lax), now=T0 + day * DAY)
        saved(account)

    with pytest.raises(Denied) as caught:
        account.acquire(device_id="phone", title_id=STRICT.title_id, title=STRICT, policy=POLICY, now=T0 + 50 * DAY)

    # three of five are allowed: one more fits once three are left, after the third-oldest (day 20) leaves
    assert caught.value.details["used"] == 5
    assert caught.value.details["next_available_at"] == T0 + 20 * DAY + 365 * DAY


def _licensed_and_closed() -> tuple[Account, str]:
    account = an_account()
    lic = issue(account)
    account.close(now=T0)
    return saved(account), lic


def _licensed_and_released() -> tuple[Account, str]:
    account = an_account()
    lic = issue(account)
    account.release(license_id=lic, now=T0)
    return saved(account), lic


def _basic_with_phone_downloading() -> tuple[Account, str]:
    account = an_account(plan="basic", devices=("phone", "tablet"))
    return account, issue(account)


REFUSED: dict[str, tuple[Callable[[], tuple[Account, str]], Callable[[Account, str], object], str]] = {
    "open twice": (
        lambda: (an_account(), ""),
        lambda a, _: a.open(plan="basic", policy=POLICY, now=T0),
        "ACCOUNT_EXISTS",
    ),
    "acquire after close": (
        _licensed_and_closed,
        lambda a, _: a.acquire(device_id="x", title_id="y", title=None, policy=POLICY, now=T0),
        "ACCOUNT_NOT_ACTIVE",
    ),
    "unknown device": (
        lambda: (an_account(), ""),
        lambda a, _: a.acquire(device_id="x", title_id="y", title=None, policy=POLICY, now=T0),
        "DEVICE_NOT_FOUND",
    ),
    "title not in catalog": (
        lambda: (an_account(), ""),
        lambda a, _: a.acquire(device_id="phone", title_id="y", title=None, policy=POLICY, now=T0),
        "TITLE_NOT_FOUND",
    ),
    "title not downloadable": (
        lambda: (an_account(), ""),
        lambda a, _: a.acquire(
            device_id="phone", title_id="film", title=TitleInfo("film", "default", False), policy=POLICY, now=T0
        ),
        "TITLE_NOT_DOWNLOADABLE",
    ),
    "title no longer available": (
        lambda: (an_account(), ""),
        lambda a, _: a.acquire(
            device_id="phone", title_id="film", title=TitleInfo("film", "default", True, T0), policy=POLICY, now=T0
        ),
        "TITLE_NOT_DOWNLOADABLE",
    ),
    "renew a released license": (
        lambda: _licensed_and_released(),
        lambda a, lic: a.renew(license_id=lic, title=FILM, policy=POLICY, now=T0),
        "LICENSE_NOT_ACTIVE",
    ),
    "device limit": (
        lambda: _basic_with_phone_downloading(),
        lambda a, _: a.acquire(device_id="tablet", title_id="film", title=FILM, policy=POLICY, now=T0),
        "DEVICE_LIMIT_REACHED",
    ),
    "unknown license": (
        lambda: (an_account(), ""),
        lambda a, _: a.release(license_id="nope", now=T0),
        "LICENSE_NOT_FOUND",
    ),
}


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_a_refused_command_records_no_event_and_changes_no_state(
    case: tuple[Callable[[], tuple[Account, str]], Callable[[Account, str], object], str],
) -> None:
    make, command, code = case
    account, lic = make()
    before = (account.version, account.to_snapshot())

    with pytest.raises(DomainError) as caught:
        command(account, lic)

    assert caught.value.code == code
    assert account.pending_events == ()
    assert (account.version, account.to_snapshot()) == before


def test_the_playback_of_an_expired_license_is_refused_as_not_active() -> None:
    account = an_account()
    lic = issue(account)

    with pytest.raises(Denied) as caught:
        account.start_playback(license_id=lic, title=FILM, policy=POLICY, now=T0 + 31 * DAY)

    assert caught.value.code == "LICENSE_NOT_ACTIVE" and caught.value.details["status"] == "expired"


def test_an_unknown_device_is_not_found_and_a_deactivated_one_not_active() -> None:
    account = an_account()
    with pytest.raises(NotFound):
        account.device("tablet")
    account.deactivate_device(device_id="phone", now=T0)

    with pytest.raises(Denied) as caught:
        account.acquire(device_id="phone", title_id="film", title=FILM, policy=POLICY, now=T0)

    assert caught.value.code == "DEVICE_NOT_ACTIVE"


def test_a_snapshot_of_the_account_restores_the_same_state() -> None:
    account = an_account(devices=("phone", "tablet"))
    lic = issue(account, title=STRICT)
    account.start_playback(license_id=lic, title=STRICT, policy=POLICY, now=T0 + DAY)
    account.release(license_id=issue(account, "tablet"), now=T0 + DAY)
    account.deactivate_device(device_id="tablet", now=T0 + DAY)
    saved(account)

    restored = Account.from_snapshot("acct-1", account.version, account.to_snapshot())

    assert restored.to_snapshot() == account.to_snapshot()
    assert restored.version == account.version
    assert restored.licenses == account.licenses and restored.devices == account.devices
