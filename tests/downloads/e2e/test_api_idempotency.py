"""Idempotency-Key: a retried command gets the original answer and writes nothing more."""

from __future__ import annotations

import httpx

from tests.support.server import Server, expect_error, unique_id

#: these tests also run with the server's store on the 3-node Cassandra cluster (see conftest)
ON_CASSANDRA = True


def _event_count(http: httpx.Client, account: str) -> int:
    response = http.get(f"/v1/accounts/{account}/events", params={"limit": 1000})
    assert response.status_code == 200, response.text
    return len(response.json()["events"])


def _key() -> dict[str, str]:
    return {"Idempotency-Key": unique_id("key")}


def test_opening_an_account_twice_with_the_same_key_answers_201_both_times(shared_server: Server) -> None:
    account = unique_id()
    key = _key()
    with shared_server.client() as http:
        first = http.post("/v1/accounts", json={"account_id": account, "plan": "standard"}, headers=key)
        retry = http.post("/v1/accounts", json={"account_id": account, "plan": "standard"}, headers=key)
        assert first.status_code == retry.status_code == 201
        assert retry.json() == first.json()
        assert _event_count(http, account) == 1

        # Without the key the same request is a second, refused, attempt.
        expect_error(http.post("/v1/accounts", json={"account_id": account, "plan": "standard"}), 409, "ACCOUNT_EXISTS")
        # The same key with another plan is a mistake, not a retry.
        expect_error(
            http.post("/v1/accounts", json={"account_id": account, "plan": "premium"}, headers=key),
            422,
            "IDEMPOTENCY_KEY_REUSED",
        )
        assert http.get(f"/v1/accounts/{account}").json()["plan"] == "standard"
        assert _event_count(http, account) == 1


def test_every_command_retried_with_its_key_returns_the_same_answer_and_writes_one_event_set(
    shared_server: Server,
) -> None:
    account = unique_id()
    with shared_server.client() as http:
        http.post("/v1/accounts", json={"account_id": account, "plan": "basic"}).raise_for_status()
        http.post(f"/v1/accounts/{account}/devices", json={"device_id": "d0", "model": "m"}).raise_for_status()
        lic = http.post(f"/v1/accounts/{account}/licenses", json={"device_id": "d0", "title_id": "demo-title-1"})
        license_id = lic.json()["license_id"]

        steps: list[tuple[str, str, object]] = [
            ("PUT", f"/v1/accounts/{account}/plan", {"plan": "premium"}),
            ("POST", f"/v1/accounts/{account}/devices", {"device_id": "d1", "model": "m"}),
            ("POST", f"/v1/accounts/{account}/licenses", {"device_id": "d1", "title_id": "demo-title-1"}),
            ("POST", f"/v1/accounts/{account}/licenses/{license_id}/play", None),
            ("POST", f"/v1/accounts/{account}/licenses/{license_id}/renew", None),
            ("POST", f"/v1/accounts/{account}/devices/d0/sync", {"license_ids": []}),
            ("DELETE", f"/v1/accounts/{account}/devices/d1", None),
            ("POST", f"/v1/accounts/{account}/close", None),
        ]
        for method, path, body in steps:
            key = _key()
            first = http.request(method, path, json=body, headers=key)
            assert first.status_code in (200, 201), (method, path, first.text)
            count = _event_count(http, account)
            version = http.get(f"/v1/accounts/{account}").json()["version"]
            retry = http.request(method, path, json=body, headers=key)
            assert (retry.status_code, retry.json()) == (first.status_code, first.json()), (method, path)
            assert _event_count(http, account) == count, (method, path)
            assert http.get(f"/v1/accounts/{account}").json()["version"] == version

        # Even after the account was closed, retries of accepted commands get their original answer.
        assert http.get(f"/v1/accounts/{account}").json()["status"] == "closed"


def test_a_retried_acquire_gets_its_license_even_after_it_was_released(shared_server: Server) -> None:
    account = unique_id()
    key = _key()
    with shared_server.client() as http:
        http.post("/v1/accounts", json={"account_id": account, "plan": "basic"}).raise_for_status()
        http.post(f"/v1/accounts/{account}/devices", json={"device_id": "d1", "model": "m"}).raise_for_status()
        body = {"device_id": "d1", "title_id": "demo-title-2"}
        first = http.post(f"/v1/accounts/{account}/licenses", json=body, headers=key)
        assert first.status_code == 201
        license_id = first.json()["license_id"]
        released = http.delete(f"/v1/accounts/{account}/licenses/{license_id}", headers=_key())
        assert released.status_code == 200
        count = _event_count(http, account)

        retry = http.post(f"/v1/accounts/{account}/licenses", json=body, headers=key)
        assert retry.status_code == 201
        assert retry.json() == first.json()
        assert _event_count(http, account) == count
        # Only one download was counted toward the studio's yearly limit.
        assert http.get(f"/v1/accounts/{account}/titles/demo-title-2/downloads").json()["used"] == 1

        # X-Request-Id is a tracing id, not a key: the same one on another command is no reuse.
        trace = {"X-Request-Id": unique_id("req")}
        again = http.post(f"/v1/accounts/{account}/licenses", json=body, headers=trace)
        assert again.status_code == 201
        released = http.delete(f"/v1/accounts/{account}/licenses/{again.json()['license_id']}", headers=trace)
        assert released.status_code == 200 and released.json()["status"] == "released"
        assert "Idempotent-Replayed" not in released.headers


def test_a_key_reused_for_a_different_request_is_refused_and_writes_nothing(shared_server: Server) -> None:
    account = unique_id()
    key = _key()
    with shared_server.client() as http:
        http.post("/v1/accounts", json={"account_id": account, "plan": "premium"}).raise_for_status()
        http.post(
            f"/v1/accounts/{account}/devices", json={"device_id": "d1", "model": "m"}, headers=key
        ).raise_for_status()
        count = _event_count(http, account)
        for method, path, body in (
            ("POST", f"/v1/accounts/{account}/devices", {"device_id": "d2", "model": "m"}),
            ("POST", f"/v1/accounts/{account}/devices", {"device_id": "d1", "model": "other model"}),
            ("POST", f"/v1/accounts/{account}/licenses", {"device_id": "d1", "title_id": "demo-title-1"}),
            ("PUT", f"/v1/accounts/{account}/plan", {"plan": "basic"}),
        ):
            details = expect_error(http.request(method, path, json=body, headers=key), 422, "IDEMPOTENCY_KEY_REUSED")
            assert details["idempotency_key"] == key["Idempotency-Key"]
        assert _event_count(http, account) == count
        assert [d["device_id"] for d in http.get(f"/v1/accounts/{account}").json()["devices"]] == ["d1"]


def test_a_bad_idempotency_key_is_a_validation_error(shared_server: Server) -> None:
    account = unique_id()
    with shared_server.client() as http:
        for key in ("x" * 201, "has space"):
            expect_error(
                http.post(
                    "/v1/accounts", json={"account_id": account, "plan": "basic"}, headers={"Idempotency-Key": key}
                ),
                422,
                "VALIDATION_ERROR",
            )
        expect_error(http.get(f"/v1/accounts/{account}"), 404, "ACCOUNT_NOT_FOUND")
