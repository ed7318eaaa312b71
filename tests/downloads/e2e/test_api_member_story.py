"""The member story, end to end over real HTTP: devices, the device limit, history and time travel."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone

import httpx

from tests.support.server import ISO_UTC_Z, Server, expect_error, unique_id

#: these tests also run with the server's store on the 3-node Cassandra cluster (see conftest)
ON_CASSANDRA = True


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _all_events(http: httpx.Client, account: str) -> list[dict[str, object]]:
    response = http.get(f"/v1/accounts/{account}/events", params={"limit": 1000})
    assert response.status_code == 200, response.text
    events: list[dict[str, object]] = response.json()["events"]
    return events


def test_a_member_downloads_until_the_device_limit_then_frees_a_slot_by_releasing(shared_server: Server) -> None:
    account = unique_id()
    with shared_server.client() as http:
        opened = http.post("/v1/accounts", json={"account_id": account, "plan": "standard"})
        assert opened.status_code == 201, opened.text
        assert opened.json() == {
            "account_id": account,
            "plan": "standard",
            "status": "active",
            "device_limit": 2,
            "devices_with_downloads": 0,
            "devices": [],
            "version": 1,
        }

        for device in ("phone", "tablet", "laptop"):
            registered = http.post(f"/v1/accounts/{account}/devices", json={"device_id": device, "model": device})
            assert registered.status_code == 201, registered.text
            assert registered.json() == {
                "device_id": device,
                "model": device,
                "status": "active",
                "active_downloads": 0,
            }

        first = http.post(f"/v1/accounts/{account}/licenses", json={"device_id": "phone", "title_id": "demo-title-1"})
        second = http.post(f"/v1/accounts/{account}/licenses", json={"device_id": "tablet", "title_id": "demo-title-1"})
        assert (first.status_code, second.status_code) == (201, 201)
        # A device that already holds a download may take another one: the limit counts devices.
        more = http.post(f"/v1/accounts/{account}/licenses", json={"device_id": "phone", "title_id": "demo-title-2"})
        assert more.status_code == 201, more.text

        state = http.get(f"/v1/accounts/{account}").json()
        assert state["devices_with_downloads"] == 2
        before_denial = state["version"]
        denied = http.post(f"/v1/accounts/{account}/licenses", json={"device_id": "laptop", "title_id": "demo-title-1"})
        details = expect_error(denied, 409, "DEVICE_LIMIT_REACHED")
        assert details["limit"] == 2
        assert details["used"] == 2
        assert http.get(f"/v1/accounts/{account}").json()["version"] == before_denial

        released = http.delete(f"/v1/accounts/{account}/licenses/{second.json()['license_id']}")
        assert released.status_code == 200, released.text
        assert released.json()["status"] == "released"
        assert released.json()["license_id"] == second.json()["license_id"]

        again = http.post(f"/v1/accounts/{account}/licenses", json={"device_id": "laptop", "title_id": "demo-title-1"})
        assert again.status_code == 201, again.text
        assert again.json()["device_id"] == "laptop"
        assert again.json()["status"] == "active"

        state = http.get(f"/v1/accounts/{account}").json()
        downloads = {d["device_id"]: d["active_downloads"] for d in state["devices"]}
        assert downloads == {"phone": 2, "tablet": 0, "laptop": 1}
        assert state["devices_with_downloads"] == 2

        types = [e["type"] for e in _all_events(http, account)]
        assert types == [
            "AccountOpened",
            "DeviceRegistered",
            "DeviceRegistered",
            "DeviceRegistered",
            "LicenseIssued",
            "LicenseIssued",
            "LicenseIssued",
            "LicenseReleased",
            "LicenseIssued",
        ]


def test_the_history_lists_every_event_with_its_time_data_and_metadata_and_pages_by_sequence(
    shared_server: Server,
) -> None:
    account = unique_id()
    with shared_server.client() as http:
        http.post("/v1/accounts", json={"account_id": account, "plan": "premium"}).raise_for_status()
        for n in range(5):
            http.post(
                f"/v1/accounts/{account}/devices",
                json={"device_id": f"d{n}", "model": "phone"},
                headers={"Idempotency-Key": f"register-{n}"},
            ).raise_for_status()

        everything = http.get(f"/v1/accounts/{account}/events")
        assert everything.status_code == 200
        body = everything.json()
        assert set(body) == {"events", "next"}
        assert body["next"] is None
        events = body["events"]
        assert [e["seq"] for e in events] == [1, 2, 3, 4, 5, 6]
        for event in events:
            assert set(event) == {"seq", "type", "recorded_at", "data", "metadata"}
            assert isinstance(event["seq"], int)
            assert isinstance(event["type"], str)
            assert re.match(ISO_UTC_Z, event["recorded_at"]), event
            assert isinstance(event["data"], dict)
            assert isinstance(event["metadata"], dict)
        assert events[0]["type"] == "AccountOpened"
        assert events[0]["data"]["plan"] == "premium"
        assert events[1]["type"] == "DeviceRegistered"
        assert events[1]["data"]["device_id"] == "d0"
        assert events[1]["metadata"]["request_id"] == "register-0"
        times = [_parse(e["recorded_at"]) for e in events]
        assert times == sorted(times)

        page = http.get(f"/v1/accounts/{account}/events", params={"limit": 2}).json()
        assert [e["seq"] for e in page["events"]] == [1, 2]
        assert page["next"] == 2
        page = http.get(f"/v1/accounts/{account}/events", params={"after": page["next"], "limit": 2}).json()
        assert [e["seq"] for e in page["events"]] == [3, 4]
        assert page["next"] == 4
        page = http.get(f"/v1/accounts/{account}/events", params={"after": page["next"], "limit": 2}).json()
        assert [e["seq"] for e in page["events"]] == [5, 6]
        assert page["next"] is None
        page = http.get(f"/v1/accounts/{account}/events", params={"after": 6}).json()
        assert page == {"events": [], "next": None}
        assert [
            e["seq"] for e in http.get(f"/v1/accounts/{account}/events", params={"limit": 1000}).json()["events"]
        ] == [1, 2, 3, 4, 5, 6]

        expect_error(http.get(f"/v1/accounts/{unique_id()}/events"), 404, "ACCOUNT_NOT_FOUND")


def test_the_account_can_be_read_as_it_was_at_an_earlier_time_or_version(shared_server: Server) -> None:
    account = unique_id()
    with shared_server.client() as http:
        http.post("/v1/accounts", json={"account_id": account, "plan": "standard"}).raise_for_status()
        time.sleep(0.01)
        http.post(f"/v1/accounts/{account}/devices", json={"device_id": "phone", "model": "p"}).raise_for_status()
        time.sleep(0.01)
        http.post(f"/v1/accounts/{account}/devices", json={"device_id": "tablet", "model": "t"}).raise_for_status()
        time.sleep(0.01)
        http.put(f"/v1/accounts/{account}/plan", json={"plan": "premium"}).raise_for_status()

        now = http.get(f"/v1/accounts/{account}").json()
        assert now["version"] == 4
        assert now["plan"] == "premium"
        assert [d["device_id"] for d in now["devices"]] == ["phone", "tablet"]

        events = _all_events(http, account)
        second_at = _parse(str(events[1]["recorded_at"]))

        # Just before the second device and the plan change: one device, the old plan.
        as_of = (second_at + timedelta(microseconds=1)).isoformat().replace("+00:00", "Z")
        then = http.get(f"/v1/accounts/{account}", params={"as_of": as_of})
        assert then.status_code == 200, then.text
        assert then.json()["version"] == 2
        assert then.json()["plan"] == "standard"
        assert then.json()["device_limit"] == 2
        assert [d["device_id"] for d in then.json()["devices"]] == ["phone"]

        # The same instant written with another offset names the same state.
        shifted = (second_at + timedelta(microseconds=1)).astimezone(timezone(timedelta(hours=2))).isoformat()
        assert http.get(f"/v1/accounts/{account}", params={"as_of": shifted}).json() == then.json()

        at_version = http.get(f"/v1/accounts/{account}", params={"version": 2})
        assert at_version.status_code == 200, at_version.text
        assert at_version.json() == then.json()
        assert http.get(f"/v1/accounts/{account}", params={"version": 1}).json()["devices"] == []

        opened_at = _parse(str(events[0]["recorded_at"]))
        before = (opened_at - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
        expect_error(http.get(f"/v1/accounts/{account}", params={"as_of": before}), 404, "ACCOUNT_NOT_FOUND")
        expect_error(
            http.get(f"/v1/accounts/{account}", params={"as_of": "2001-01-01T00:00:00Z"}), 404, "ACCOUNT_NOT_FOUND"
        )

        # Time travel only reads: the account is where it was.
        assert http.get(f"/v1/accounts/{account}").json() == now
