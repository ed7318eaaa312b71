"""The read side over real HTTP: a title's licenses, lookup, reports, projections, and title withdrawal.

Each test that takes a server runs on SQLite and on the 3-node Cassandra cluster, where the read
models live in the cluster and follow its feed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.support.server import Server, expect_error, running_server, unique_id

ON_CASSANDRA = True
READ_SIDE = True  # on Cassandra too, the server runs the read side


def eventually(check: Callable[[], Any], what: str, *, seconds: float = 60) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not within {seconds} s: {what}")


def member(http: httpx.Client, *, devices: int = 1) -> str:
    account = unique_id()
    assert http.post("/v1/accounts", json={"account_id": account, "plan": "premium"}).status_code == 201
    for n in range(devices):
        assert (
            http.post(f"/v1/accounts/{account}/devices", json={"device_id": f"d{n}", "model": "m"}).status_code == 201
        )
    return account


def acquire(http: httpx.Client, account: str, title: str, device: str = "d0") -> str:
    got = http.post(f"/v1/accounts/{account}/licenses", json={"device_id": device, "title_id": title})
    assert got.status_code == 201, got.text
    return str(got.json()["license_id"])


def test_withdrawing_a_title_revokes_its_active_licenses_on_every_account_once(server: Server) -> None:
    title = unique_id("film")
    with server.client("admin") as admin, server.client("service") as http, server.client("support") as support:
        assert admin.put(f"/v1/titles/{title}", json={"studio": "default"}).status_code == 200
        accounts = [member(http) for _ in range(3)]
        held = {account: acquire(http, account, title) for account in accounts}
        released = acquire(http, accounts[0], "demo-title-1")
        assert http.delete(f"/v1/accounts/{accounts[0]}/licenses/{released}").status_code == 200

        listed = eventually(
            lambda: (
                (r := support.get(f"/v1/titles/{title}/licenses").json())["licenses"] and len(r["licenses"]) == 3 and r
            ),
            "the title's three licenses in the read model",
        )
        assert {row["account_id"]: row["license_id"] for row in listed["licenses"]} == held
        assert {row["status"] for row in listed["licenses"]} == {"active"}

        assert admin.put(f"/v1/titles/{title}", json={"studio": "default", "downloadable": False}).status_code == 200

        for account, license_id in held.items():
            eventually(
                lambda a=account, lic=license_id: (
                    http.get(f"/v1/accounts/{a}/licenses/{lic}").json()["status"] == "revoked"
                ),
                f"license {license_id} revoked",
            )
            synced = http.post(f"/v1/accounts/{account}/devices/d0/sync", json={"license_ids": [license_id]})
            assert synced.json()["revoked"] == [license_id]
            revocations = [
                e for e in http.get(f"/v1/accounts/{account}/events").json()["events"] if e["type"] == "LicenseRevoked"
            ]
            assert [(e["data"]["license_id"], e["data"]["reason"]) for e in revocations] == [
                (license_id, "title_withdrawn")
            ]
        # the license released before stays released, and the read model follows
        assert http.get(f"/v1/accounts/{accounts[0]}/licenses/{released}").json()["status"] == "released"
        eventually(
            lambda: (
                len(support.get(f"/v1/titles/{title}/licenses", params={"status": "revoked"}).json()["licenses"]) == 3
            ),
            "the revoked licenses in the read model",
        )
        # downloadable again: nothing more is revoked, new licenses stay active
        assert admin.put(f"/v1/titles/{title}", json={"studio": "default", "downloadable": True}).status_code == 200
        fresh = acquire(http, accounts[1], title)
        time.sleep(1.0)
        assert http.get(f"/v1/accounts/{accounts[1]}/licenses/{fresh}").json()["status"] == "active"


def test_a_license_issued_after_the_title_ended_is_revoked_too(server: Server) -> None:
    title = unique_id("film")
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    with server.client("admin") as admin, server.client("service") as http:
        assert admin.put(f"/v1/titles/{title}", json={"studio": "default", "available_until": soon}).status_code == 200
        account = member(http)
        license_id = acquire(http, account, title)
        eventually(
            lambda: http.get(f"/v1/accounts/{account}/licenses/{license_id}").json()["status"] == "revoked",
            "the license revoked once available_until passed",
        )


def test_lookup_finds_accounts_by_device_license_and_idempotency_key(shared_server: Server) -> None:
    with shared_server.client("service") as http, shared_server.client("support") as support:
        account = member(http)
        key = unique_id("key")
        got = http.post(
            f"/v1/accounts/{account}/licenses",
            json={"device_id": "d0", "title_id": "demo-title-1"},
            headers={"Idempotency-Key": key},
        )
        license_id = got.json()["license_id"]

        # A retry under another key, answered without a change: its key is remembered by an event of its own.
        again_key = unique_id("key")
        again = http.post(
            f"/v1/accounts/{account}/licenses",
            json={"device_id": "d0", "title_id": "demo-title-1"},
            headers={"Idempotency-Key": again_key},
        )
        assert again.status_code == 200 and again.json()["license_id"] == license_id

        for kind, value in (("license_id", license_id), ("idempotency_key", key), ("idempotency_key", again_key)):
            found = eventually(
                lambda k=kind, v=value: support.get("/v1/lookup", params={k: v}).json()["accounts"], f"lookup by {kind}"
            )
            assert found == [account]
        assert account in support.get("/v1/lookup", params={"device_id": "d0"}).json()["accounts"]
        assert support.get("/v1/lookup", params={"license_id": "no-such-license"}).json() == {"accounts": []}

        expect_error(support.get("/v1/lookup"), 422, "VALIDATION_ERROR")
        expect_error(support.get("/v1/lookup", params={"device_id": "d0", "license_id": "x"}), 422, "VALIDATION_ERROR")
        expect_error(http.get("/v1/lookup", params={"device_id": "d0"}), 403, "FORBIDDEN")


def test_the_downloads_report_counts_downloads_and_renewals_per_studio_title_and_period(shared_server: Server) -> None:
    title = unique_id("film")
    today = datetime.now(UTC).date().isoformat()
    with shared_server.client("admin") as admin, shared_server.client("service") as http:
        assert admin.put(f"/v1/titles/{title}", json={"studio": "restricted"}).status_code == 200
        account = member(http, devices=2)
        first = acquire(http, account, title, "d0")
        acquire(http, account, title, "d1")
        assert http.post(f"/v1/accounts/{account}/licenses/{first}/renew").status_code == 200

        def rows(**params: str) -> list[dict[str, Any]]:
            answer = admin.get("/v1/reports/downloads", params={"title_id": title, **params})
            assert answer.status_code == 200, answer.text
            return list(answer.json()["rows"])

        # (on Cassandra the title's stream and the account's are followed apart: its studio may come second)
        daily = eventually(
            lambda: (r := rows()) and r[0]["renewals"] == 1 and r[0]["studio"] == "restricted" and r, "the report's row"
        )
        assert daily == [{"period": today, "studio": "restricted", "title_id": title, "downloads": 2, "renewals": 1}]
        assert rows(granularity="month")[0]["period"] == today[:7]
        assert rows(studio="default") == []
        assert rows(**{"from": "2000-01-01", "to": "2000-12-31"}) == []
        expect_error(admin.get("/v1/reports/downloads", params={"granularity": "week"}), 422, "VALIDATION_ERROR")
        expect_error(
            admin.get("/v1/reports/downloads", params={"from": "2026-02-01", "to": "2026-01-01"}),
            422,
            "VALIDATION_ERROR",
        )
    with shared_server.client("support") as support:
        expect_error(support.get("/v1/reports/downloads"), 403, "FORBIDDEN")


def test_projections_report_position_lag_and_no_error(shared_server: Server) -> None:
    with shared_server.client("service") as http, shared_server.client("support") as support:
        member(http)
        answer = eventually(
            lambda: (
                (r := support.get("/v1/projections").json())
                and all(p["status"] == "caught_up" for p in r["projections"])
                and r
            ),
            "every projection caught up",
        )
        names = {p["name"] for p in answer["projections"]}
        assert names == {"licenses_by_title", "lookup", "download_reports", "title_withdrawal", "licenses_by_device"}
        for projection in answer["projections"]:
            assert projection["lag_events"] == 0 and projection["error"] is None and projection["position"] > 0
        scraped = httpx.get(shared_server.url + "/metrics").text
        for name in names:
            assert f'downloads_projection_lag_events{{projection="{name}"}} 0.0' in scraped
            assert f'downloads_projection_failing{{projection="{name}"}} 0.0' in scraped
        expect_error(http.get("/v1/projections"), 403, "FORBIDDEN")
        expect_error(http.get("/v1/titles/x/licenses"), 403, "FORBIDDEN")
        for cursor in ("no-slash", "abc", "a/b/c"):
            expect_error(support.get("/v1/titles/x/licenses", params={"after": cursor}), 422, "INVALID_CURSOR")


def test_two_server_processes_on_one_file_project_every_event_once(tmp_path: Any) -> None:
    title = unique_id("film")
    with (
        running_server(tmp_path, workers=2) as server,
        server.client("admin") as admin,
        server.client("service") as http,
        server.client("support") as support,
    ):
        assert admin.put(f"/v1/titles/{title}", json={"studio": "default"}).status_code == 200
        accounts = [member(http) for _ in range(12)]
        for account in accounts:
            acquire(http, account, title)
        eventually(
            lambda: len(support.get(f"/v1/titles/{title}/licenses").json()["licenses"]) == 12,
            "all twelve licenses projected",
        )
        listed = support.get(f"/v1/titles/{title}/licenses", params={"limit": 5}).json()["licenses"]
        seen = [row["account_id"] for row in listed]
        after = support.get(f"/v1/titles/{title}/licenses", params={"limit": 5}).json()["next"]
        while after:
            page = support.get(f"/v1/titles/{title}/licenses", params={"limit": 5, "after": after}).json()
            seen += [row["account_id"] for row in page["licenses"]]
            after = page["next"]
        assert seen == sorted(accounts)
