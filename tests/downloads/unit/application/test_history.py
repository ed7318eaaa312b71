"""History: time travel, snapshots that agree with events, and a restart on the same file."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest

from downloads.application import (
    AcquireLicense,
    ChangePlan,
    DeactivateDevice,
    DownloadsService,
    OpenAccount,
    RegisterDevice,
    ReleaseLicense,
    RenewLicense,
    StartPlayback,
    SyncDevice,
)
from downloads.domain import Account, DomainError, NotFound, Studio
from eskit import Repository
from tests.downloads.factories import START, Downloads, make_policy, refusal, start_service

HOUR = timedelta(hours=1)


def _three_steps() -> Downloads:
    d = start_service()
    d.service.handle(OpenAccount("acct-1", "basic"))  # v1 at START
    d.clock.advance(HOUR)
    d.service.handle(RegisterDevice("acct-1", "phone", "model"))  # v2 at START + 1h
    d.clock.advance(HOUR)
    d.license("acct-1", "phone", "demo-title-1")  # v3 at START + 2h
    d.clock.advance(HOUR)
    return d


def test_get_account_as_of_a_time_shows_the_state_then() -> None:
    d = _three_steps()

    then = d.service.get_account("acct-1", as_of=START + 90 * timedelta(minutes=1))

    assert then["version"] == 2
    assert [x["device_id"] for x in then["devices"]] == ["phone"]
    assert then["devices_with_downloads"] == 0
    assert d.service.get_account("acct-1", as_of=START)["devices"] == []
    assert d.service.get_account("acct-1", as_of=START + 2 * HOUR)["devices_with_downloads"] == 1


def test_get_account_at_a_version_shows_the_state_then() -> None:
    d = _three_steps()

    assert d.service.get_account("acct-1", version=1)["devices"] == []
    assert d.service.get_account("acct-1", version=2)["devices"][0]["active_downloads"] == 0
    assert d.service.get_account("acct-1", version=3)["devices"][0]["active_downloads"] == 1
    assert d.service.get_account("acct-1", version=99) == d.service.get_account("acct-1")


@pytest.mark.parametrize("point", [{"as_of": START - timedelta(seconds=1)}, {"version": 0}])
def test_a_point_before_the_account_existed_answers_account_not_found(point: dict[str, object]) -> None:
    d = _three_steps()

    assert refusal(lambda: d.service.get_account("acct-1", **point), NotFound).code == "ACCOUNT_NOT_FOUND"  # type: ignore[arg-type]


def test_time_travel_shows_licenses_expired_at_that_time_although_no_command_recorded_it() -> None:
    d = _three_steps()
    d.clock.advance(60 * timedelta(days=1))

    then = d.service.get_account("acct-1", as_of=START + 2 * HOUR + timedelta(days=30))

    assert then["devices_with_downloads"] == 0 and then["version"] == 3


def test_time_travel_sees_through_snapshots() -> None:
    d = start_service(snapshot_every=1)
    d.account("acct-1", devices=["a"])
    for device in ["b", "c", "d"]:
        d.clock.advance(HOUR)
        d.service.handle(RegisterDevice("acct-1", device, "model"))

    assert [x["device_id"] for x in d.service.get_account("acct-1", version=3)["devices"]] == ["a", "b"]
    assert [x["device_id"] for x in d.service.get_account("acct-1", as_of=START + HOUR)["devices"]] == ["a", "b"]


# -- snapshots agree with events ---------------------------------------------------------------


def _random_history(d: Downloads, seed: int, commands: int) -> None:
    """Run a seeded mix of commands (many of them refused) with the clock moving irregularly."""
    rng = random.Random(seed)
    s = d.service
    devices, titles = ["d1", "d2", "d3", "d4", "d5"], ["free-1", "free-2", "strict-1", "strict-2", "lenient"]
    for title in titles:
        d.title(title, studio=title.split("-")[0])
    d.account("acct-1", plan="standard", devices=devices[:3])
    for n in range(commands):
        every = [x["license_id"] for x in s.list_licenses("acct-1")] or ["none"]
        active = [x["license_id"] for x in s.list_licenses("acct-1", status="active")] or every
        licenses = active if rng.random() < 0.8 else every
        request_id = f"r{rng.randrange(100)}" if rng.random() < 0.3 else None
        roll = rng.random()
        try:
            if roll < 0.08:
                s.handle(RegisterDevice("acct-1", rng.choice(devices), f"model-{n}"), idempotency_key=request_id)
            elif roll < 0.12:
                s.handle(DeactivateDevice("acct-1", rng.choice(devices)), idempotency_key=request_id)
            elif roll < 0.40:
                s.handle(AcquireLicense("acct-1", rng.choice(devices), rng.choice(titles)), idempotency_key=request_id)
            elif roll < 0.52:
                s.handle(StartPlayback("acct-1", rng.choice(licenses)), idempotency_key=request_id)
            elif roll < 0.64:
                s.handle(RenewLicense("acct-1", rng.choice(licenses)), idempotency_key=request_id)
            elif roll < 0.76:
                s.handle(ReleaseLicense("acct-1", rng.choice(licenses)), idempotency_key=request_id)
            elif roll < 0.82:
                device = rng.choice(devices)
                held = [x for x in licenses if rng.random() < 0.7]
                s.handle(SyncDevice("acct-1", device, held), idempotency_key=request_id)
            elif roll < 0.86:
                s.handle(ChangePlan("acct-1", rng.choice(["basic", "standard", "premium"])), idempotency_key=request_id)
        except DomainError:
            pass
        d.clock.advance(timedelta(minutes=rng.choice([1, 1, 30, 30, 60 * 5, 60 * 24, 60 * 24 * 3, 60 * 24 * 20])))


def _events_only(d: Downloads) -> DownloadsService:
    """A second service over the same events, with no snapshot store: it rebuilds from events only."""
    repo = d.service.accounts
    accounts = Repository(Account, repo.events, repo.codec, stream_prefix=repo.stream_prefix, keys=repo.keys)
    return DownloadsService(accounts=accounts, titles=d.service.titles, policy=d.service.policy, clock=d.clock)


def test_an_account_loaded_from_a_snapshot_equals_one_rebuilt_from_its_events() -> None:
    studios = {
        "default": Studio(),
        "free": Studio(license_duration=timedelta(days=7)),
        "strict": Studio(max_downloads_per_title=3, playback_window=timedelta(hours=6)),
        "lenient": Studio(max_downloads_per_title=2, renewals_count_as_downloads=False),
    }
    d = start_service(
        snapshot_every=7, policy=make_policy(max_active_downloads=3, window=timedelta(days=60), studios=studios)
    )
    _random_history(d, seed=20161130, commands=300)
    rebuilt = _events_only(d)
    stream = d.service.accounts.stream_id("acct-1")
    final = d.stream_version("acct-1")
    snapshot = d.app.stores.snapshots.load(stream)
    assert final > 100, "the history should be long enough to cross many snapshots"
    assert snapshot is not None and snapshot.version > final - 7

    assert d.service.get_account("acct-1") == rebuilt.get_account("acct-1")
    assert d.service.list_licenses("acct-1") == rebuilt.list_licenses("acct-1")
    for title in ["free-1", "strict-1", "strict-2", "lenient"]:
        assert d.service.title_downloads("acct-1", title) == rebuilt.title_downloads("acct-1", title)
    # the whole state, remembered requests and per-title counts included, at every tenth version
    for version in [*range(1, final + 1, 10), final]:
        from_snapshot = d.service.accounts.load("acct-1", version=version)
        from_events = rebuilt.accounts.load("acct-1", version=version)
        assert from_snapshot.to_snapshot() == from_events.to_snapshot(), f"differs at version {version}"


def test_a_restarted_service_on_the_same_sqlite_file_sees_the_same_accounts(tmp_path: Path) -> None:
    d = start_service(store=f"sqlite:///{tmp_path}/downloads.db", snapshot_every=3)
    d.account("acct-1", devices=["phone", "tablet"])
    lic = d.license("acct-1", "phone", "demo-title-1")
    d.service.handle(StartPlayback("acct-1", lic))
    d.title("film", studio="restricted", downloadable=False)

    again = d.restart()

    assert again.service.get_account("acct-1") == d.service.get_account("acct-1")
    assert again.service.list_licenses("acct-1") == d.service.list_licenses("acct-1")
    assert again.service.get_title("film") == d.service.get_title("film")
    assert again.event_types("acct-1") == d.event_types("acct-1")
    d.close()


def test_history_filters_by_type_and_time_and_pages_through_the_matches() -> None:
    from datetime import timedelta

    from downloads.application import AcquireLicense, ReleaseLicense
    from tests.downloads.factories import start_service

    d = start_service()
    d.account("acct-1", devices=["phone"])
    times = []
    for _ in range(30):
        d.clock.advance(timedelta(hours=1))
        times.append(d.clock.now)
        lic = d.service.handle(AcquireLicense("acct-1", "phone", "demo-title-1")).body["license_id"]
        d.service.handle(ReleaseLicense("acct-1", lic))
    issued, after = [], 0
    while True:
        page = d.service.history("acct-1", after=after, limit=7, types=frozenset({"LicenseIssued"}))
        issued.extend(page["events"])
        if page["next"] is None:
            break
        after = page["next"]
    assert len(issued) == 30 and {e["type"] for e in issued} == {"LicenseIssued"}
    assert [e["seq"] for e in issued] == sorted(e["seq"] for e in issued)
    window = d.service.history("acct-1", since=times[10], until=times[12], limit=100)
    assert [e["type"] for e in window["events"]] == ["LicenseIssued", "LicenseReleased"] * 3
    assert window["next"] is None
    assert window["events"][0]["metadata"]["args"] == {"device_id": "phone", "title_id": "demo-title-1"}
    assert window["events"][0]["metadata"]["schema_version"] == 1


def test_a_filter_that_matches_little_stops_after_its_scan_budget_with_a_cursor() -> None:
    from downloads.application.queries import DownloadsQueries
    from tests.downloads.factories import start_service

    d = start_service()
    d.account("acct-1", devices=[f"d{n}" for n in range(15)])
    budget = DownloadsQueries.HISTORY_SCAN
    DownloadsQueries.HISTORY_SCAN = 5
    try:
        page = d.service.history("acct-1", types=frozenset({"AccountClosed"}))
        assert page["events"] == [] and page["next"] == 5
        page = d.service.history("acct-1", after=15, types=frozenset({"AccountClosed"}))
        assert page == {"events": [], "next": None}
    finally:
        DownloadsQueries.HISTORY_SCAN = budget
