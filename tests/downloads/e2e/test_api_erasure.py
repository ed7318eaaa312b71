"""Forgetting a member over real HTTP: ``POST /v1/accounts/{a}/erase``, then ACCOUNT_ERASED everywhere.

Each test that takes a server runs on SQLite and on the 3-node Cassandra cluster (with its read side).
"""

from __future__ import annotations

import gzip
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.downloads.e2e.test_api_cli import _downloads
from tests.downloads.e2e.test_read_side import eventually
from tests.support.server import ISO_UTC_Z, Server, expect_error, unique_id

ON_CASSANDRA = True
READ_SIDE = True

MODEL = "Pixel-Secret-Model-42"


def member(http: httpx.Client, *, title: str = "demo-title-1") -> dict[str, str]:
    """An account with a device (a recognisable model), a license played, a command under a key, a denial."""
    account = unique_id()
    device, key = f"dev-{account}", f"idem-{account}"
    assert http.post("/v1/accounts", json={"account_id": account, "plan": "basic"}).status_code == 201
    registered = http.post(
        f"/v1/accounts/{account}/devices", json={"device_id": device, "model": MODEL}, headers={"Idempotency-Key": key}
    )
    assert registered.status_code == 201, registered.text
    assert http.post(f"/v1/accounts/{account}/devices", json={"device_id": "tablet", "model": "t"}).status_code == 201
    got = http.post(f"/v1/accounts/{account}/licenses", json={"device_id": device, "title_id": title})
    assert got.status_code == 201, got.text
    license_id = got.json()["license_id"]
    assert http.post(f"/v1/accounts/{account}/licenses/{license_id}/play").status_code == 200
    denied = http.post(f"/v1/accounts/{account}/licenses", json={"device_id": "tablet", "title_id": title})
    expect_error(denied, 409, "DEVICE_LIMIT_REACHED")
    return {"account": account, "device": device, "key": key, "license": license_id}


def routes(m: dict[str, str]) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every route of an account, with a body that would be valid."""
    a, d, lic = m["account"], m["device"], m["license"]
    return [
        ("GET", f"/v1/accounts/{a}", None),
        ("GET", f"/v1/accounts/{a}?version=2", None),
        ("GET", f"/v1/accounts/{a}?as_of=2020-01-01T00:00:00Z", None),
        ("PUT", f"/v1/accounts/{a}/plan", {"plan": "premium"}),
        ("POST", f"/v1/accounts/{a}/close", None),
        ("POST", f"/v1/accounts/{a}/devices", {"device_id": "new", "model": "m"}),
        ("DELETE", f"/v1/accounts/{a}/devices/{d}", None),
        ("POST", f"/v1/accounts/{a}/devices/{d}/sync", {"license_ids": [lic]}),
        ("POST", f"/v1/accounts/{a}/licenses", {"device_id": d, "title_id": "demo-title-2"}),
        ("GET", f"/v1/accounts/{a}/licenses", None),
        ("GET", f"/v1/accounts/{a}/licenses/{lic}", None),
        ("POST", f"/v1/accounts/{a}/licenses/{lic}/play", None),
        ("POST", f"/v1/accounts/{a}/licenses/{lic}/renew", None),
        ("DELETE", f"/v1/accounts/{a}/licenses/{lic}", None),
        ("GET", f"/v1/accounts/{a}/titles/demo-title-1/downloads", None),
        ("GET", f"/v1/accounts/{a}/events", None),
        ("GET", f"/v1/accounts/{a}/denials", None),
        ("POST", f"/v1/accounts/{a}/what-if", {"policy": ""}),
        ("POST", "/v1/accounts", {"account_id": a, "plan": "basic"}),
    ]


def test_an_admin_erases_a_member_and_every_route_of_the_account_answers_410(shared_server: Server) -> None:
    with shared_server.client("service") as http, shared_server.client("admin") as admin:
        m = member(http)
        for role in ("service", "support"):
            with shared_server.client(role) as other:
                expect_error(other.post(f"/v1/accounts/{m['account']}/erase"), 403, "FORBIDDEN")
        erased = admin.post(f"/v1/accounts/{m['account']}/erase", headers={"X-Request-Id": "ticket-77"})
        assert erased.status_code == 200, erased.text
        body = erased.json()
        assert set(body) == {"account_id", "erased_at"} and body["account_id"] == m["account"]
        assert __import__("re").match(ISO_UTC_Z, body["erased_at"]), body
        for method, path, payload in routes(m):
            details = expect_error(admin.request(method, path, json=payload), 410, "ACCOUNT_ERASED")
            assert details["account_id"] == m["account"], (method, path)
        again = admin.post(f"/v1/accounts/{m['account']}/erase")
        assert again.status_code == 200 and again.json() == body  # idempotent: the first erasure's time
        expect_error(admin.post(f"/v1/accounts/{unique_id()}/erase"), 404, "ACCOUNT_NOT_FOUND")
        # An X-Request-Id the Edge does not take (too long) is replaced by a new id, as on every route:
        # the erasure is recorded under that id rather than refused.
        other = member(http)
        replaced = admin.post(f"/v1/accounts/{other['account']}/erase", headers={"X-Request-Id": "r" * 300})
        assert replaced.status_code == 200, replaced.text
        assert replaced.headers["x-request-id"] != "r" * 300


def test_the_read_side_forgets_the_member_and_the_studios_report_keeps_counting(shared_server: Server) -> None:
    with shared_server.client("service") as http, shared_server.client("admin") as admin:
        title = unique_id("film")
        assert admin.put(f"/v1/titles/{title}", json={"studio": "default"}).status_code == 200
        gone, kept = member(http, title=title), member(http, title=title)
        report = {"title_id": title, "granularity": "day"}

        def lookups(m: dict[str, str]) -> list[list[str]]:
            asked = [("device_id", m["device"]), ("license_id", m["license"]), ("idempotency_key", m["key"])]
            return [admin.get("/v1/lookup", params={k: v}).json()["accounts"] for k, v in asked]

        eventually(lambda: lookups(gone) == [[gone["account"]]] * 3, "the lookup finds the member")
        eventually(lambda: len(admin.get(f"/v1/titles/{title}/licenses").json()["licenses"]) == 2, "two licenses")
        counted = eventually(lambda: (r := admin.get("/v1/reports/downloads", params=report).json()["rows"]) and r, "")
        assert sum(row["downloads"] for row in counted) == 2

        assert admin.post(f"/v1/accounts/{gone['account']}/erase").status_code == 200
        eventually(lambda: lookups(gone) == [[], [], []], "the lookup forgets the member")
        eventually(
            lambda: (
                [x["account_id"] for x in admin.get(f"/v1/titles/{title}/licenses").json()["licenses"]]
                == [kept["account"]]
            ),
            "the title lists only the member who stays",
        )
        assert admin.get(f"/v1/devices/{gone['device']}/licenses").json() == {"licenses": []}
        assert admin.get("/v1/reports/downloads", params=report).json()["rows"] == counted
        assert lookups(kept) == [[kept["account"]]] * 3


def test_no_command_is_accepted_after_the_erasure_is(shared_server: Server) -> None:
    """Commands race with the erasure; every answer after the erasure's is ACCOUNT_ERASED, and every command
    answered 2xx wrote its events before the erasure's (it is the account's last event)."""
    with shared_server.client("admin") as admin:
        m = member(admin)
        account, device = m["account"], m["device"]
        outcomes: list[tuple[float, float, int, str]] = []  # sent, answered, status, what
        stop = threading.Event()

        def send() -> None:
            with shared_server.client("service") as http:
                n = 0
                while not stop.is_set() and n < 400:
                    n += 1
                    sent = time.monotonic()
                    got = http.post(
                        f"/v1/accounts/{account}/licenses", json={"device_id": device, "title_id": f"t{n % 7}"}
                    )
                    outcomes.append(
                        (sent, time.monotonic(), got.status_code, got.json().get("error", {}).get("code", ""))
                    )
                    lic = got.json().get("license_id")
                    if got.status_code == 201 and lic:
                        answered = http.delete(f"/v1/accounts/{account}/licenses/{lic}")
                        outcomes.append((sent, time.monotonic(), answered.status_code, "release"))

        for n in range(7):
            assert admin.put(f"/v1/titles/t{n}", json={"studio": "default"}).status_code == 200
        threads = [threading.Thread(target=send) for _ in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        erased = admin.post(f"/v1/accounts/{account}/erase")
        acknowledged = time.monotonic()
        time.sleep(0.3)
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        assert erased.status_code == 200, erased.text
        after = [o for o in outcomes if o[0] > acknowledged]
        assert after and all(status == 410 for _, _, status, _ in after), after[:5]
        issued = sum(1 for _, _, status, what in outcomes if status == 201)
        assert issued > 0
    export = Path(shared_server.store[len("sqlite:///") :]) if shared_server.store.startswith("sqlite:") else None
    if export is None:
        return  # on Cassandra the stream is read by the backend's own test
    runtime = __import__("downloads.bootstrap", fromlist=["bootstrap"]).bootstrap(
        __import__("downloads.settings", fromlist=["Settings"]).Settings(store=shared_server.store)
    )
    try:
        stored = runtime.stores.events.read(f"account-{account}")
    finally:
        runtime.close()
    types = [e.type_name for e in stored]
    assert types[-1] == "AccountErased" and types.count("AccountErased") == 1
    assert types.count("LicenseIssued") - 1 == issued  # the member's first license came from member()


def test_no_byte_of_the_members_personal_fields_stays_in_the_stores_files_or_an_export(
    shared_server: Server, tmp_path: Path
) -> None:
    if not shared_server.store.startswith("sqlite:"):
        pytest.skip("Cassandra's tables are searched at consistency ALL in tests/backends/cassandra/test_erasure.py")
    with shared_server.client("service") as http, shared_server.client("admin") as admin:
        m = member(http)
        secrets = [m["device"].encode(), m["key"].encode()]
        eventually(lambda: admin.get("/v1/lookup", params={"device_id": m["device"]}).json()["accounts"], "lookup")
        folder = Path(shared_server.store[len("sqlite:///") :]).parent
        assert any(s in _files(folder) for s in secrets)  # the read models hold them while the member is there
        assert admin.post(f"/v1/accounts/{m['account']}/erase").status_code == 200
        eventually(lambda: not admin.get("/v1/lookup", params={"device_id": m["device"]}).json()["accounts"], "gone")
        stored = eventually(lambda: (found := _files(folder)) and not any(s in found for s in secrets) and found, "")
        assert MODEL.encode() not in stored  # every member's model is sealed
    archive = tmp_path / "after.jsonl.gz"
    done = _downloads("store", "export", str(archive), "--store", shared_server.store, timeout=300)
    assert done.returncode == 0, done.stderr
    raw = gzip.decompress(archive.read_bytes())
    assert not any(s in raw for s in [*secrets, MODEL.encode()])


def _files(folder: Path) -> bytes:
    """Every byte of every file of the store's folder (the store, its log, read models, denials)."""
    return b"".join(p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and not p.name.endswith(".log"))
