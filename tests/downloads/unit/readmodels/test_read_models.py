"""Every read model's decisions, on the in-memory backend (the way Cassandra keeps them, without a cluster)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from downloads.application import AcquireLicense, ReleaseLicense, RenewLicense, StartPlayback
from downloads.readmodels import reports
from tests.downloads.unit.readmodels.support import Wired, wired


@pytest.fixture
def side() -> Iterator[Wired]:
    with wired() as found:
        yield found


def _page(side: Wired, title: str, status: str) -> list[dict[str, object]]:
    found = side.read_side.title_licenses(title, status=status, after=None, limit=100, now=side.clock())
    return [row.model_dump() for row in found.licenses]


def test_a_title_lists_its_licenses_by_status_as_they_are_issued_played_released_and_renewed(side: Wired) -> None:
    app = side.app
    app.title("film")
    app.account("a1", devices=("phone", "tablet"))
    first = app.license("a1", "phone", "film")
    second = app.license("a1", "tablet", "film")
    side.caught_up()
    assert sorted(row["license_id"] for row in _page(side, "film", "active")) == sorted([first, second])

    app.service.handle(StartPlayback("a1", first))
    app.service.handle(ReleaseLicense("a1", second))
    side.caught_up()
    active = _page(side, "film", "active")
    assert [row["license_id"] for row in active] == [first]
    assert active[0]["expires_at"] == app.service.get_license("a1", first)["expires_at"]  # playback shortened it
    assert [row["license_id"] for row in _page(side, "film", "released")] == [second]

    side.clock.advance(timedelta(days=3))  # past the playback window: expired, not yet recorded so
    assert _page(side, "film", "active") == []  # a page leaves out what is past its expiry
    app.service.handle(RenewLicense("a1", first))
    side.caught_up()
    assert [row["license_id"] for row in _page(side, "film", "active")] == [first]


def test_a_title_page_goes_on_from_its_cursor(side: Wired) -> None:
    app = side.app
    app.title("film")
    for n in range(5):
        app.account(f"a{n}")
        app.license(f"a{n}", "phone", "film")
    side.caught_up()
    seen: list[str] = []
    after = None
    while True:
        page = side.read_side.title_licenses("film", status="active", after=after, limit=2, now=side.clock())
        seen += [row.account_id for row in page.licenses]
        if page.next is None:
            break
        account, _, license_id = page.next.partition("/")
        after = (account, license_id)
    assert seen == [f"a{n}" for n in range(5)]


def test_lookup_finds_the_account_of_a_device_a_license_and_a_key(side: Wired) -> None:
    app = side.app
    app.title("film")
    app.account("a1")
    app.account("a2")
    license_id = str(
        app.service.handle(AcquireLicense("a2", "phone", "film"), idempotency_key="k-7").body["license_id"]
    )
    side.caught_up()
    lookup = side.read_side.lookup
    assert lookup("device_id", "phone").accounts == ["a1", "a2"]
    assert lookup("license_id", license_id).accounts == ["a2"]
    assert lookup("idempotency_key", "k-7").accounts == ["a2"]
    assert lookup("idempotency_key", "k-unknown").accounts == []


def test_the_report_counts_downloads_and_renewals_under_the_studio_the_title_names_when_read(side: Wired) -> None:
    app = side.app
    app.title("film", studio="restricted")
    app.account("a1")
    license_id = app.license("a1", "phone", "film")
    app.license("a1", "phone", "demo-title-2")  # in the policy's demo catalog only: its studio comes from there
    side.clock.advance(timedelta(days=40))
    app.service.handle(RenewLicense("a1", license_id))
    side.caught_up()

    def rows(**options: object) -> list[tuple[str, str, str, int, int]]:
        query = {"granularity": "day", "studio": None, "title_id": None, "start": None, "end": None, **options}
        found = side.read_side.report(**query)  # type: ignore[arg-type]
        return [(r.period, r.studio, r.title_id, r.downloads, r.renewals) for r in found.rows]

    day0, day40 = side.clock().date() - timedelta(days=40), side.clock().date()
    assert rows() == [
        (day0.isoformat(), "restricted", "demo-title-2", 1, 0),
        (day0.isoformat(), "restricted", "film", 1, 0),
        (day40.isoformat(), "restricted", "film", 0, 1),
    ]
    assert rows(granularity="month", title_id="film", start=day40.isoformat()) == [
        (day40.isoformat()[:7], "restricted", "film", 0, 1)
    ]
    app.title("film", studio="default")  # a title moved to another studio takes its counts along
    side.caught_up()
    assert rows(studio="default") == [
        (day0.isoformat(), "default", "film", 1, 0),
        (day40.isoformat(), "default", "film", 0, 1),
    ]
    with pytest.raises(reports.ReportTooLarge):
        reports.report(
            side.read_side.runner.tables("download_reports"),
            granularity="day",
            studio=None,
            title_id=None,
            start=None,
            end=None,
            demo_studio=lambda _t: "default",
            limit=2,
        )


def test_a_device_holds_its_licenses_from_issue_until_they_end(side: Wired) -> None:
    app = side.app
    app.title("film")
    app.title("show")
    app.account("a1")
    kept = app.license("a1", "phone", "film")
    ended = app.license("a1", "phone", "show")
    app.account("a2")
    other = app.license("a2", "phone", "film")
    side.caught_up()
    held = side.read_side.device_licenses("phone").licenses
    assert sorted((row.account_id, row.license_id) for row in held) == sorted(
        [("a1", kept), ("a1", ended), ("a2", other)]
    )
    app.service.handle(ReleaseLicense("a1", ended))
    side.caught_up()
    assert sorted(row.license_id for row in side.read_side.device_licenses("phone").licenses) == sorted([kept, other])
    assert side.read_side.device_licenses("tablet").licenses == []


def test_applying_every_stream_again_changes_no_read_model(side: Wired) -> None:
    """Effects are idempotent in position: a runner that dies before its checkpoints moved does no harm."""
    app = side.app
    app.title("film")
    app.account("a1", devices=("phone", "tablet"))
    first = app.license("a1", "phone", "film")
    app.license("a1", "tablet", "film")
    app.service.handle(ReleaseLicense("a1", first))
    app.title("show")
    side.caught_up()
    before = _snapshot(side)

    store = side.read_side.runner.stores.events
    for name in side.read_side.names:
        target = side.read_side.runner.target(name)
        for stream in store.stream_ids():
            target.apply(stream, store.read(stream))  # type: ignore[call-arg, arg-type]

    assert _snapshot(side) == before


def _snapshot(side: Wired) -> dict[str, list[dict[str, object]]]:
    found: dict[str, list[dict[str, object]]] = {}
    for name in side.read_side.names:
        tables = side.read_side.runner.tables(name)
        for table in tables.tables:
            found[f"{name}.{table}"] = tables.scan(table, limit=10_000)
    return found
