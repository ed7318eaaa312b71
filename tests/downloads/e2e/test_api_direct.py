"""The license commands' direct path answers as the FastAPI routes declare, and leaves the rest to them.

Acquire, play, renew and release are answered by the middleware without FastAPI's request
handling when the request is well-formed; what it does not take (a bad body, identifier or
header) must still get the route's own 422, and every answer its headers and metrics label.
"""

from __future__ import annotations

import re

import httpx

from downloads.application.presenters import LicenseOut
from tests.support.server import Server, expect_error, unique_id

LICENSES = "/v1/accounts/{account_id}/licenses"
ONE_LICENSE = "/v1/accounts/{account_id}/licenses/{license_id}"


def _account(http: httpx.Client, devices: int = 1) -> str:
    account = unique_id()
    http.post("/v1/accounts", json={"account_id": account, "plan": "premium"}).raise_for_status()
    for d in range(devices):
        http.post(f"/v1/accounts/{account}/devices", json={"device_id": f"d{d}", "model": "m"}).raise_for_status()
    return account


def _counted(http: httpx.Client, method: str, route: str, status: int) -> float:
    text = http.get("/metrics").text
    pattern = (
        rf'downloads_http_requests_total\{{method="{method}",route="{re.escape(route)}",status="{status}"\}} (\S+)'
    )
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


def _answer(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body: dict[str, object] = response.json()
    LicenseOut.model_validate(body, strict=True)  # the route's response model, field for field
    assert list(body) == list(LicenseOut.model_fields)
    return body


def test_each_license_command_answers_with_its_model_headers_and_metrics_label(shared_server: Server) -> None:
    with shared_server.client() as http:
        account = _account(http)
        before = {
            ("POST", LICENSES, 201): _counted(http, "POST", LICENSES, 201),
            ("POST", ONE_LICENSE + "/play", 200): _counted(http, "POST", ONE_LICENSE + "/play", 200),
            ("POST", ONE_LICENSE + "/renew", 200): _counted(http, "POST", ONE_LICENSE + "/renew", 200),
            ("DELETE", ONE_LICENSE, 200): _counted(http, "DELETE", ONE_LICENSE, 200),
        }

        acquired = _answer(
            http.post(f"/v1/accounts/{account}/licenses", json={"device_id": "d0", "title_id": "demo-title-1"}), 201
        )
        license_id = acquired["license_id"]
        assert acquired["status"] == "active" and acquired["account_id"] == account
        assert http.get(f"/v1/accounts/{account}/licenses/{license_id}").json() == acquired  # FastAPI's own answer

        played = _answer(http.post(f"/v1/accounts/{account}/licenses/{license_id}/play"), 200)
        assert played["playback_started_at"] is not None
        renewed = _answer(http.post(f"/v1/accounts/{account}/licenses/{license_id}/renew"), 200)
        assert renewed["renewals"] == 1
        released = _answer(http.delete(f"/v1/accounts/{account}/licenses/{license_id}"), 200)
        assert released["status"] == "released"
        assert http.get(f"/v1/accounts/{account}/licenses/{license_id}").json() == released

        for (method, route, status), count in before.items():
            assert _counted(http, method, route, status) == count + 1, (method, route, status)


def test_a_retried_command_is_replayed_with_its_header_and_the_original_body(shared_server: Server) -> None:
    with shared_server.client() as http:
        account = _account(http)
        key = {"Idempotency-Key": unique_id("key")}
        body = {"device_id": "d0", "title_id": "demo-title-1"}
        first = _answer(http.post(f"/v1/accounts/{account}/licenses", json=body, headers=key), 201)
        retry = http.post(f"/v1/accounts/{account}/licenses", json=body, headers=key)
        assert _answer(retry, 201) == first
        assert retry.headers["idempotent-replayed"] == "true"
        release = f"/v1/accounts/{account}/licenses/{first['license_id']}"
        gone = http.delete(release, headers={"Idempotency-Key": "release-1"})
        again = http.delete(release, headers={"Idempotency-Key": "release-1"})
        assert _answer(again, 200) == _answer(gone, 200)
        assert "idempotent-replayed" not in gone.headers and again.headers["idempotent-replayed"] == "true"


def test_input_the_direct_path_does_not_take_gets_the_routes_own_refusal(shared_server: Server) -> None:
    with shared_server.client() as http:
        account = _account(http)
        path = f"/v1/accounts/{account}/licenses"
        wrong_type = expect_error(
            http.post(path, json={"device_id": 5, "title_id": "demo-title-1"}), 422, "VALIDATION_ERROR"
        )
        assert ["body", "device_id"] in [e["loc"] for e in wrong_type["errors"]]  # type: ignore[union-attr]
        missing = expect_error(http.post(path, json={"device_id": "d0"}), 422, "VALIDATION_ERROR")
        assert ["body", "title_id"] in [e["loc"] for e in missing["errors"]]  # type: ignore[union-attr]
        expect_error(
            http.post(path, content=b"{not json", headers={"Content-Type": "application/json"}), 422, "VALIDATION_ERROR"
        )
        expect_error(http.post(path), 422, "VALIDATION_ERROR")
        bad_key = {"Idempotency-Key": "two words"}
        expect_error(
            http.post(path, json={"device_id": "d0", "title_id": "demo-title-1"}, headers=bad_key),
            422,
            "VALIDATION_ERROR",
        )
        expect_error(
            http.post(f"/v1/accounts/{'a' * 129}/licenses", json={"device_id": "d0", "title_id": "t"}),
            422,
            "VALIDATION_ERROR",
        )
        expect_error(http.delete(f"/v1/accounts/{account}/licenses/bad!id"), 422, "VALIDATION_ERROR")
        expect_error(http.post(f"/v1/accounts/{account}/licenses/{'x' * 129}/play"), 422, "VALIDATION_ERROR")
        # None of these wrote anything: the account still has its two events (opened, device registered).
        events = http.get(f"/v1/accounts/{account}/events").json()["events"]
        assert len(events) == 2
        # A well-formed body with a field the model ignores is a command like any other.
        extra = http.post(path, json={"device_id": "d0", "title_id": "demo-title-1", "note": "x"})
        _answer(extra, 201)


def test_refusals_and_errors_of_the_service_come_in_the_envelope(shared_server: Server) -> None:
    with shared_server.client() as http:
        account = _account(http)
        expect_error(
            http.post(f"/v1/accounts/{unique_id()}/licenses", json={"device_id": "d0", "title_id": "demo-title-1"}),
            404,
            "ACCOUNT_NOT_FOUND",
        )
        unknown = http.post(f"/v1/accounts/{account}/licenses/{unique_id('lic')}/play")
        assert unknown.status_code == 404 and unknown.headers["cache-control"] == "no-store"
        assert set(unknown.json()["error"]) == {"code", "message", "details"}
        lic = _answer(
            http.post(f"/v1/accounts/{account}/licenses", json={"device_id": "d0", "title_id": "demo-title-1"}), 201
        )
        _answer(http.delete(f"/v1/accounts/{account}/licenses/{lic['license_id']}"), 200)
        late = http.post(f"/v1/accounts/{account}/licenses/{lic['license_id']}/play")  # a released license
        assert late.status_code == 409 and late.headers["cache-control"] == "no-store", late.text
        assert set(late.json()["error"]) == {"code", "message", "details"}
    with shared_server.client(role="support") as http:  # a reader may not command: refused before the body
        expect_error(
            http.post(f"/v1/accounts/{account}/licenses", json={"device_id": "d0", "title_id": "demo-title-1"}),
            403,
            "FORBIDDEN",
        )
    with shared_server.client(role=None) as http:
        expect_error(http.delete(f"/v1/accounts/{account}/licenses/{lic['license_id']}"), 401, "UNAUTHENTICATED")


def test_every_answer_of_the_direct_path_and_of_the_edge_carries_the_request_id(shared_server: Server) -> None:
    """The request id is given by the one middleware, so the direct path's answers carry it as FastAPI's do:
    the client's valid id echoed, a new one for an invalid or missing id, on refusals of the edge too."""
    with shared_server.client() as http:
        account = _account(http)
        sent = {"X-Request-Id": unique_id("req")}
        acquired = http.post(
            f"/v1/accounts/{account}/licenses", json={"device_id": "d0", "title_id": "demo-title-1"}, headers=sent
        )
        _answer(acquired, 201)
        assert acquired.headers["x-request-id"] == sent["X-Request-Id"]
        refused = http.post(f"/v1/accounts/{account}/licenses/{unique_id('lic')}/play", headers=sent)
        assert refused.status_code == 404 and refused.headers["x-request-id"] == sent["X-Request-Id"]
        made = http.delete(f"/v1/accounts/{account}/licenses/{acquired.json()['license_id']}")
        _answer(made, 200)
        assert made.headers["x-request-id"] and made.headers["x-request-id"] != sent["X-Request-Id"]
        # an id the route's header check refuses: FastAPI's 422 answers, with a new id of the server's
        invalid = http.post(f"/v1/accounts/{account}/licenses/{unique_id('lic')}/play", headers={"X-Request-Id": "a b"})
        assert invalid.status_code == 422 and invalid.headers["x-request-id"] not in ("", "a b")
        too_large = http.post(f"/v1/accounts/{account}/licenses", content=b"{" + b" " * 100_000 + b"}", headers=sent)
        assert too_large.status_code == 413 and too_large.headers["x-request-id"] == sent["X-Request-Id"]
    with shared_server.client(role=None) as http:
        anonymous = http.post(f"/v1/accounts/{account}/licenses", json={"device_id": "d0"}, headers=sent)
        assert anonymous.status_code == 401 and anonymous.headers["x-request-id"] == sent["X-Request-Id"]
