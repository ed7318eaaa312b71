"""Every refusal of the product's rules reaches the client with its code, status and details.

A refused command never changes the account: its version is the same before and after.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import httpx

from tests.support.server import ISO_UTC_Z, Server, expect_error, unique_id

#: these tests also run with the server's store on the 3-node Cassandra cluster (see conftest)
ON_CASSANDRA = True


def _iso(value: object) -> datetime:
    assert isinstance(value, str) and re.match(ISO_UTC_Z, value), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _version(http: httpx.Client, account: str) -> int:
    version: int = http.get(f"/v1/accounts/{account}").json()["version"]
    return version


def refused(
    http: httpx.Client, account: str, send: Callable[[], httpx.Response], status: int, code: str
) -> dict[str, object]:
    """Send a request that must be refused with ``status`` and ``code`` and leave the account as it was."""
    before = _version(http, account)
    details = expect_error(send(), status, code)
    assert _version(http, account) == before, f"{code} changed the account"
    return details


def _open(http: httpx.Client, plan: str, *devices: str) -> str:
    account = unique_id()
    assert http.post("/v1/accounts", json={"account_id": account, "plan": plan}).status_code == 201
    for device in devices:
        registered = http.post(f"/v1/accounts/{account}/devices", json={"device_id": device, "model": "m"})
        assert registered.status_code == 201, registered.text
    return account


def _acquire(http: httpx.Client, account: str, device: str, title: str) -> dict[str, object]:
    response = http.post(f"/v1/accounts/{account}/licenses", json={"device_id": device, "title_id": title})
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


def test_opening_refuses_a_taken_id_and_an_unknown_plan(shared_server: Server) -> None:
    with shared_server.client() as http:
        account = _open(http, "basic")
        details = refused(
            http,
            account,
            lambda: http.post("/v1/accounts", json={"account_id": account, "plan": "premium"}),
            409,
            "ACCOUNT_EXISTS",
        )
        assert details["account_id"] == account
        assert http.get(f"/v1/accounts/{account}").json()["plan"] == "basic"

        fresh = unique_id()
        expect_error(http.post("/v1/accounts", json={"account_id": fresh, "plan": "platinum"}), 422, "UNKNOWN_PLAN")
        expect_error(http.get(f"/v1/accounts/{fresh}"), 404, "ACCOUNT_NOT_FOUND")
        refused(
            http,
            account,
            lambda: http.put(f"/v1/accounts/{account}/plan", json={"plan": "platinum"}),
            422,
            "UNKNOWN_PLAN",
        )


def test_unknown_accounts_devices_licenses_and_titles_are_404(shared_server: Server) -> None:
    with shared_server.client() as http:
        ghost = unique_id()
        for response in (
            http.get(f"/v1/accounts/{ghost}"),
            http.put(f"/v1/accounts/{ghost}/plan", json={"plan": "basic"}),
            http.post(f"/v1/accounts/{ghost}/close"),
            http.post(f"/v1/accounts/{ghost}/devices", json={"device_id": "d1", "model": "m"}),
            http.delete(f"/v1/accounts/{ghost}/devices/d1"),
            http.post(f"/v1/accounts/{ghost}/devices/d1/sync", json={"license_ids": []}),
            http.post(f"/v1/accounts/{ghost}/licenses", json={"device_id": "d1", "title_id": "demo-title-1"}),
            http.get(f"/v1/accounts/{ghost}/licenses"),
            http.get(f"/v1/accounts/{ghost}/licenses/l1"),
            http.post(f"/v1/accounts/{ghost}/licenses/l1/play"),
            http.post(f"/v1/accounts/{ghost}/licenses/l1/renew"),
            http.delete(f"/v1/accounts/{ghost}/licenses/l1"),
            http.get(f"/v1/accounts/{ghost}/titles/demo-title-1/downloads"),
            http.get(f"/v1/accounts/{ghost}/events"),
        ):
            expect_error(response, 404, "ACCOUNT_NOT_FOUND")
        # Commands on an unknown account wrote nothing: it still does not exist.
        expect_error(http.get(f"/v1/accounts/{ghost}/events"), 404, "ACCOUNT_NOT_FOUND")

        account = _open(http, "basic", "d1")
        send = {
            "DEVICE_NOT_FOUND": [
                lambda: http.post(
                    f"/v1/accounts/{account}/licenses", json={"device_id": "nope", "title_id": "demo-title-1"}
                ),
                lambda: http.delete(f"/v1/accounts/{account}/devices/nope"),
                lambda: http.post(f"/v1/accounts/{account}/devices/nope/sync", json={"license_ids": []}),
            ],
            "LICENSE_NOT_FOUND": [
                lambda: http.get(f"/v1/accounts/{account}/licenses/nope"),
                lambda: http.post(f"/v1/accounts/{account}/licenses/nope/play"),
                lambda: http.post(f"/v1/accounts/{account}/licenses/nope/renew"),
                lambda: http.delete(f"/v1/accounts/{account}/licenses/nope"),
            ],
            "TITLE_NOT_FOUND": [
                lambda: http.post(f"/v1/accounts/{account}/licenses", json={"device_id": "d1", "title_id": "nope"}),
                lambda: http.get("/v1/titles/nope"),
                lambda: http.get(f"/v1/accounts/{account}/titles/nope/downloads"),
            ],
        }
        for code, requests in send.items():
            for request in requests:
                refused(http, account, request, 404, code)


def test_a_closed_account_refuses_every_command_but_still_answers_reads(shared_server: Server) -> None:
    with shared_server.client() as http:
        account = _open(http, "standard", "d1", "d2")
        lic = _acquire(http, account, "d1", "demo-title-1")
        closed = http.post(f"/v1/accounts/{account}/close")
        assert closed.status_code == 200
        assert closed.json()["devices_with_downloads"] == 0
        revoked = http.get(f"/v1/accounts/{account}/licenses/{lic['license_id']}").json()
        assert revoked["status"] == "revoked"
        events = http.get(f"/v1/accounts/{account}/events").json()["events"]
        assert [e["type"] for e in events[-2:]] == ["LicenseRevoked", "AccountClosed"]
        assert events[-2]["data"]["reason"] == "account_closed"

        lid = lic["license_id"]
        for request in (
            lambda: http.put(f"/v1/accounts/{account}/plan", json={"plan": "premium"}),
            lambda: http.post(f"/v1/accounts/{account}/close"),
            lambda: http.post(f"/v1/accounts/{account}/devices", json={"device_id": "d3", "model": "m"}),
            lambda: http.delete(f"/v1/accounts/{account}/devices/d2"),
            lambda: http.post(f"/v1/accounts/{account}/devices/d1/sync", json={"license_ids": [lid]}),
            lambda: http.post(f"/v1/accounts/{account}/licenses", json={"device_id": "d2", "title_id": "demo-title-1"}),
            lambda: http.post(f"/v1/accounts/{account}/licenses/{lid}/play"),
            lambda: http.post(f"/v1/accounts/{account}/licenses/{lid}/renew"),
            lambda: http.delete(f"/v1/accounts/{account}/licenses/{lid}"),
        ):
            refused(http, account, request, 409, "ACCOUNT_NOT_ACTIVE")

        assert http.get(f"/v1/accounts/{account}").json()["status"] == "closed"
        assert http.get(f"/v1/accounts/{account}/licenses").status_code == 200
        assert http.get(f"/v1/accounts/{account}/titles/demo-title-1/downloads").status_code == 200


def test_deactivated_devices_undownloadable_titles_and_ended_licenses_are_refused(shared_server: Server) -> None:
    with shared_server.client() as http, shared_server.client("admin") as admin:
        account = _open(http, "premium", "d1", "d2")
        held = _acquire(http, account, "d2", "demo-title-1")
        deactivated = http.delete(f"/v1/accounts/{account}/devices/d2")
        assert deactivated.json()["released"] == [held["license_id"]]
        details = refused(
            http,
            account,
            lambda: http.post(f"/v1/accounts/{account}/licenses", json={"device_id": "d2", "title_id": "demo-title-1"}),
            409,
            "DEVICE_NOT_ACTIVE",
        )
        assert details["device_id"] == "d2"

        hidden = unique_id("title")
        assert admin.put(f"/v1/titles/{hidden}", json={"studio": "default", "downloadable": False}).status_code == 200
        details = refused(
            http,
            account,
            lambda: http.post(f"/v1/accounts/{account}/licenses", json={"device_id": "d1", "title_id": hidden}),
            409,
            "TITLE_NOT_DOWNLOADABLE",
        )
        assert details["title_id"] == hidden
        gone = unique_id("title")
        assert (
            admin.put(
                f"/v1/titles/{gone}", json={"studio": "default", "available_until": "2020-01-01T00:00:00Z"}
            ).status_code
            == 200
        )
        refused(
            http,
            account,
            lambda: http.post(f"/v1/accounts/{account}/licenses", json={"device_id": "d1", "title_id": gone}),
            409,
            "TITLE_NOT_DOWNLOADABLE",
        )

        # A license whose title stopped being downloadable cannot be renewed. Where the server runs a
        # read side, the withdrawal revokes it first (wait for that); where it has none, the renewal
        # meets the title rule itself.
        later = unique_id("title")
        assert admin.put(f"/v1/titles/{later}", json={"studio": "default"}).status_code == 200
        lic = _acquire(http, account, "d1", later)
        assert admin.put(f"/v1/titles/{later}", json={"studio": "default", "downloadable": False}).status_code == 200
        license_url = f"/v1/accounts/{account}/licenses/{lic['license_id']}"
        if shared_server.env.get("DOWNLOADS_READ_SIDE") != "off":
            deadline = time.monotonic() + 20
            while http.get(license_url).json()["status"] != "revoked" and time.monotonic() < deadline:
                time.sleep(0.05)
            details = refused(http, account, lambda: http.post(f"{license_url}/renew"), 409, "LICENSE_NOT_ACTIVE")
            assert details["status"] == "revoked"
        else:
            refused(http, account, lambda: http.post(f"{license_url}/renew"), 409, "TITLE_NOT_DOWNLOADABLE")

        released = held["license_id"]
        for request in (
            lambda: http.post(f"/v1/accounts/{account}/licenses/{released}/play"),
            lambda: http.post(f"/v1/accounts/{account}/licenses/{released}/renew"),
        ):
            details = refused(http, account, request, 409, "LICENSE_NOT_ACTIVE")
            assert details["license_id"] == released
            assert details["status"] == "released"


def test_a_downgrade_keeps_licenses_but_blocks_new_devices_until_under_the_limit(shared_server: Server) -> None:
    with shared_server.client() as http:
        account = _open(http, "premium", "d1", "d2", "d3")
        first = _acquire(http, account, "d1", "demo-title-1")
        second = _acquire(http, account, "d2", "demo-title-1")
        downgraded = http.put(f"/v1/accounts/{account}/plan", json={"plan": "basic"})
        assert downgraded.status_code == 200
        assert (downgraded.json()["device_limit"], downgraded.json()["devices_with_downloads"]) == (1, 2)
        for lic in (first, second):
            assert http.get(f"/v1/accounts/{account}/licenses/{lic['license_id']}").json()["status"] == "active"

        details = refused(
            http,
            account,
            lambda: http.post(f"/v1/accounts/{account}/licenses", json={"device_id": "d3", "title_id": "demo-title-1"}),
            409,
            "DEVICE_LIMIT_REACHED",
        )
        assert (details["limit"], details["used"]) == (1, 2)
        # A device that already holds a download is not a new device.
        _acquire(http, account, "d1", "demo-title-2")

        http.delete(f"/v1/accounts/{account}/licenses/{second['license_id']}").raise_for_status()
        details = refused(
            http,
            account,
            lambda: http.post(f"/v1/accounts/{account}/licenses", json={"device_id": "d3", "title_id": "demo-title-1"}),
            409,
            "DEVICE_LIMIT_REACHED",
        )
        assert (details["limit"], details["used"]) == (1, 1)


def test_a_studio_limits_downloads_of_a_title_per_year_and_renewals_count(shared_server: Server) -> None:
    # demo-title-2 belongs to the "restricted" studio: 3 downloads per account per 365 days.
    with shared_server.client() as http:
        account = _open(http, "premium", "d1", "d2")
        first = _acquire(http, account, "d1", "demo-title-2")
        renewed = http.post(f"/v1/accounts/{account}/licenses/{first['license_id']}/renew")
        assert renewed.status_code == 200 and renewed.json()["renewals"] == 1
        http.delete(f"/v1/accounts/{account}/licenses/{first['license_id']}").raise_for_status()
        third = _acquire(http, account, "d2", "demo-title-2")

        counts = http.get(f"/v1/accounts/{account}/titles/demo-title-2/downloads").json()
        assert (counts["limit"], counts["used"]) == (3, 3)
        expected_free = _iso(first["issued_at"]) + timedelta(days=365)
        assert _iso(counts["next_available_at"]) == expected_free

        details = refused(
            http,
            account,
            lambda: http.post(f"/v1/accounts/{account}/licenses", json={"device_id": "d1", "title_id": "demo-title-2"}),
            409,
            "TITLE_YEARLY_LIMIT_REACHED",
        )
        assert (details["limit"], details["used"]) == (3, 3)
        assert _iso(details["next_available_at"]) == expected_free

        details = refused(
            http,
            account,
            lambda: http.post(f"/v1/accounts/{account}/licenses/{third['license_id']}/renew"),
            409,
            "TITLE_YEARLY_LIMIT_REACHED",
        )
        assert _iso(details["next_available_at"]) == expected_free

        # Other titles are not affected.
        _acquire(http, account, "d1", "demo-title-1")


def test_a_device_may_hold_at_most_max_active_downloads(strict_server: Server) -> None:
    with strict_server.client() as http, strict_server.client("admin") as admin:
        third_title = unique_id("title")
        assert admin.put(f"/v1/titles/{third_title}", json={"studio": "default"}).status_code == 200
        account = _open(http, "basic", "d1")
        _acquire(http, account, "d1", "demo-title-1")
        _acquire(http, account, "d1", "demo-title-2")
        details = refused(
            http,
            account,
            lambda: http.post(f"/v1/accounts/{account}/licenses", json={"device_id": "d1", "title_id": third_title}),
            409,
            "DEVICE_DOWNLOAD_LIMIT_REACHED",
        )
        assert (details["limit"], details["used"]) == (2, 2)


def test_licenses_expire_and_an_expired_license_renews_only_within_the_device_limits(strict_server: Server) -> None:
    # Titles of the "short" studio get licenses that last two seconds.
    with strict_server.client() as http, strict_server.client("admin") as admin:
        title = unique_id("title")
        assert admin.put(f"/v1/titles/{title}", json={"studio": "short"}).status_code == 200
        account = _open(http, "basic", "d1", "d2")
        lic = _acquire(http, account, "d1", title)
        lid = lic["license_id"]
        assert _iso(lic["expires_at"]) - _iso(lic["issued_at"]) == timedelta(seconds=2)

        time.sleep(2.2)
        # Reads show the license as expired, and it no longer takes the plan's only slot.
        assert http.get(f"/v1/accounts/{account}/licenses/{lid}").json()["status"] == "expired"
        expired = http.get(f"/v1/accounts/{account}/licenses", params={"status": "expired"}).json()["licenses"]
        assert [x["license_id"] for x in expired] == [lid]
        state = http.get(f"/v1/accounts/{account}").json()
        assert state["devices_with_downloads"] == 0
        refused(
            http, account, lambda: http.post(f"/v1/accounts/{account}/licenses/{lid}/play"), 409, "LICENSE_NOT_ACTIVE"
        )

        other = _acquire(http, account, "d2", "demo-title-1")
        types = [e["type"] for e in http.get(f"/v1/accounts/{account}/events").json()["events"]]
        assert types[-2:] == ["LicenseExpired", "LicenseIssued"]

        # Renewing the expired license would make d1 a second device with downloads on a one-device plan.
        details = refused(
            http,
            account,
            lambda: http.post(f"/v1/accounts/{account}/licenses/{lid}/renew"),
            409,
            "DEVICE_LIMIT_REACHED",
        )
        assert (details["limit"], details["used"]) == (1, 1)

        http.delete(f"/v1/accounts/{account}/licenses/{other['license_id']}").raise_for_status()
        renewed = http.post(f"/v1/accounts/{account}/licenses/{lid}/renew")
        assert renewed.status_code == 200, renewed.text
        body = renewed.json()
        assert (body["status"], body["renewals"], body["playback_started_at"]) == ("active", 1, None)
        assert _iso(body["expires_at"]) > _iso(lic["expires_at"])
        assert http.get(f"/v1/accounts/{account}").json()["devices_with_downloads"] == 1
