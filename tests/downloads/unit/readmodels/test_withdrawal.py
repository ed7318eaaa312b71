"""Title withdrawal, one algorithm on every store: decisions and the manager, on the in-memory backend."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from downloads.application import SyncDevice
from downloads.readmodels import withdrawal
from eskit.projection import StreamTarget
from tests.downloads.unit.readmodels.support import Wired, wired


@pytest.fixture
def side() -> Iterator[Wired]:
    with wired() as found:
        yield found


def status(side: Wired, account: str, license_id: str) -> str:
    return str(side.app.service.get_license(account, license_id)["status"])


def revocations(side: Wired, account: str) -> int:
    return side.app.event_types(account).count("LicenseRevoked")


def test_withdrawing_a_title_revokes_its_active_licenses_on_every_account_once(side: Wired) -> None:
    app = side.app
    app.title("film")
    app.title("other")
    held = {f"a{n}": app.license(app.account(f"a{n}"), "phone", "film") for n in range(5)}
    kept = app.license("a0", "phone", "other")
    side.caught_up()

    app.title("film", downloadable=False)
    side.caught_up()

    assert {a: status(side, a, lic) for a, lic in held.items()} == {a: "revoked" for a in held}
    assert status(side, "a0", kept) == "active"
    side.caught_up()  # nothing more to do: no second revocation
    assert [revocations(side, a) for a in held] == [1] * 5
    synced = app.service.handle(SyncDevice("a3", "phone", (held["a3"],)))
    assert synced.body["revoked"] == [held["a3"]]


@pytest.mark.parametrize("title_first", [True, False], ids=["title stream first", "account stream first"])
def test_a_license_is_revoked_whichever_stream_is_followed_first(side: Wired, title_first: bool) -> None:
    """No order between streams: the license's row is written before its title is read, the title before its mark."""
    app = side.app
    app.title("film")
    license_id = app.license(app.account("a1"), "phone", "film")  # decided while the title was downloadable
    app.title("film", downloadable=False)

    target = side.read_side.runner.target(withdrawal.NAME)
    side.read_side.step(manage=False)  # registers the versions (and follows: undone below)
    tables = side.read_side.runner.tables(withdrawal.NAME)
    tables.drop()
    tables.create()
    assert isinstance(target, StreamTarget)
    store = side.read_side.runner.stores.events
    streams = ["title-film", "account-a1"] if title_first else ["account-a1", "title-film"]
    for stream in streams:
        target.apply(stream, store.read(stream))

    assert withdrawal.marked(tables) >= 1  # by the withdrawal, or by the license that met it (or both)
    assert side.read_side.runner.managers[0].act(tables) == 1
    assert status(side, "a1", license_id) == "revoked"


def test_a_title_downloadable_again_before_the_manager_acts_keeps_its_licenses(side: Wired) -> None:
    app = side.app
    app.title("film")
    license_id = app.license(app.account("a1"), "phone", "film")
    app.title("film", downloadable=False)
    side.read_side.step(manage=False)  # marked ...
    app.title("film", downloadable=True)  # ... and back before the manager acts on its stale view

    side.caught_up()

    assert status(side, "a1", license_id) == "active"  # the account refused a revocation decided on stale knowledge
    assert revocations(side, "a1") == 0


def test_a_title_whose_availability_ends_has_its_licenses_revoked_once_when_the_time_comes(side: Wired) -> None:
    app = side.app
    ends = side.clock() + timedelta(hours=2)
    app.title("film", available_until=ends)
    license_id = app.license(app.account("a1"), "phone", "film")
    side.caught_up()
    assert status(side, "a1", license_id) == "active"

    side.clock.advance(timedelta(hours=3))
    manager = withdrawal.TitleWithdrawal(app.service, ends_every=0.0)  # looks for ended titles every time
    tables = side.read_side.runner.tables(withdrawal.NAME)

    assert manager.act(tables) == 1
    assert status(side, "a1", license_id) == "revoked"
    assert [manager.act(tables) for _ in range(3)] == [0, 0, 0]  # that end is handled: never again
    assert revocations(side, "a1") == 1


def test_a_license_renewed_after_a_withdrawal_is_revoked_by_the_next_one(side: Wired) -> None:
    app = side.app
    app.title("film")
    license_id = app.license(app.account("a1"), "phone", "film")
    side.clock.advance(timedelta(days=31))  # past its expiry, not yet recorded
    app.title("film", downloadable=False)
    side.caught_up()
    assert status(side, "a1", license_id) == "expired"  # nothing to revoke the first time

    app.title("film", downloadable=True)
    from downloads.application import RenewLicense

    assert app.service.handle(RenewLicense("a1", license_id)).body["status"] == "active"
    app.title("film", downloadable=False)
    side.caught_up()

    assert status(side, "a1", license_id) == "revoked"
    assert revocations(side, "a1") == 1
