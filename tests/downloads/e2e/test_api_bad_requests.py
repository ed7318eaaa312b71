"""Malformed, oversized, unauthenticated and unauthorised requests: a 4xx envelope and no write."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import jwt
import pytest

from downloads.adapters.tokens import TokenSigner
from tests.support.server import SECRET, Server, expect_error, unique_id

#: these tests also run with the server's store on the 3-node Cassandra cluster (see conftest)
ON_CASSANDRA = True


@pytest.fixture(scope="module")
def account(shared_server: Server) -> str:
    """An account with one device and one license, shared by the checks of this module."""
    account_id = unique_id()
    with shared_server.client() as http:
        http.post("/v1/accounts", json={"account_id": account_id, "plan": "basic"}).raise_for_status()
        http.post(f"/v1/accounts/{account_id}/devices", json={"device_id": "d1", "model": "m"}).raise_for_status()
        http.post(
            f"/v1/accounts/{account_id}/licenses", json={"device_id": "d1", "title_id": "demo-title-1"}
        ).raise_for_status()
    return account_id


def _version(http: httpx.Client, account: str) -> int:
    version: int = http.get(f"/v1/accounts/{account}").json()["version"]
    return version


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/accounts", {"account_id": "x"}),
        ("POST", "/v1/accounts", {"plan": "basic"}),
        ("POST", "/v1/accounts", {"account_id": 5, "plan": "basic"}),
        ("POST", "/v1/accounts", {"account_id": "x", "plan": ["basic"]}),
        ("POST", "/v1/accounts", {"account_id": "bad id", "plan": "basic"}),
        ("POST", "/v1/accounts", {"account_id": "a/b", "plan": "basic"}),
        ("POST", "/v1/accounts", {"account_id": "x" * 129, "plan": "basic"}),
        ("POST", "/v1/accounts", {"account_id": "", "plan": "basic"}),
        ("POST", "/v1/accounts", ["account_id", "plan"]),
        ("POST", "/v1/accounts", "a string"),
        ("POST", "/v1/accounts", None),
        ("PUT", "/v1/accounts/{a}/plan", {}),
        ("PUT", "/v1/accounts/{a}/plan", {"plan": 1}),
        ("PUT", "/v1/accounts/{a}/plan", {"plan": ""}),
        ("POST", "/v1/accounts/{a}/devices", {"device_id": "d2"}),
        ("POST", "/v1/accounts/{a}/devices", {"device_id": "d2", "model": None}),
        ("POST", "/v1/accounts/{a}/devices", {"device_id": "d 2", "model": "m"}),
        ("POST", "/v1/accounts/{a}/devices", {"device_id": "é", "model": "m"}),
        ("POST", "/v1/accounts/{a}/devices", {"device_id": "d" * 129, "model": "m"}),
        ("POST", "/v1/accounts/{a}/devices/d1/sync", {"license_ids": "l1"}),
        ("POST", "/v1/accounts/{a}/devices/d1/sync", {"license_ids": [1, 2]}),
        ("POST", "/v1/accounts/{a}/devices/d1/sync", {"license_ids": ["ok", "not ok"]}),
        ("POST", "/v1/accounts/{a}/devices/d1/sync", {}),
        ("POST", "/v1/accounts/{a}/licenses", {"device_id": "d1"}),
        ("POST", "/v1/accounts/{a}/licenses", {"device_id": "d1", "title_id": 7}),
        ("POST", "/v1/accounts/{a}/licenses", {"device_id": "d1", "title_id": "t;drop"}),
        ("POST", "/v1/accounts/{a}/licenses", {"device_id": True, "title_id": "demo-title-1"}),
        ("GET", "/v1/accounts/{a}/events?limit=0", None),
        ("GET", "/v1/accounts/{a}/events?limit=1001", None),
        ("GET", "/v1/accounts/{a}/events?limit=ten", None),
        ("GET", "/v1/accounts/{a}?version=0", None),
        ("GET", "/v1/accounts/{a}?version=two", None),
        ("GET", "/v1/accounts/{a}?as_of=yesterday", None),
        ("GET", "/v1/accounts/{a}/licenses?status=lost", None),
        ("GET", "/v1/accounts/{a}/licenses?device_id=bad%20id", None),
        ("GET", "/v1/accounts/bad%20id", None),
        ("GET", "/v1/accounts/" + "x" * 129, None),
        ("DELETE", "/v1/accounts/{a}/devices/d%21", None),
        ("GET", "/v1/accounts/{a}/licenses/" + "l" * 129, None),
    ],
)
def test_invalid_requests_are_422_validation_errors_and_change_nothing(
    shared_server: Server, account: str, method: str, path: str, body: object
) -> None:
    with shared_server.client() as http:
        before = _version(http, account)
        response = http.request(method, path.replace("{a}", account), json=body)
        details = expect_error(response, 422, "VALIDATION_ERROR")
        assert details
        assert _version(http, account) == before


@pytest.mark.parametrize("body", [b"{", b'{"account_id": "x", "plan": }', b"\xff\xfe", b"null"])
def test_a_malformed_json_body_is_a_validation_error(shared_server: Server, body: bytes) -> None:
    with shared_server.client() as http:
        response = http.post("/v1/accounts", content=body, headers={"Content-Type": "application/json"})
        expect_error(response, 422, "VALIDATION_ERROR")


def test_unknown_routes_are_404_not_found_and_wrong_methods_are_405(shared_server: Server, account: str) -> None:
    with shared_server.client() as http:
        for path in ("/", "/v1", "/v2/accounts", f"/v1/accounts/{account}/nothing", "/v1/titles"):
            expect_error(http.get(path), 404, "NOT_FOUND")
        expect_error(http.get("/nowhere", headers={"Authorization": ""}), 404, "NOT_FOUND")
        for method, path in (
            ("DELETE", "/v1/accounts"),
            ("GET", "/v1/accounts"),
            ("PATCH", f"/v1/accounts/{account}"),
            ("DELETE", f"/v1/accounts/{account}"),
            ("POST", "/v1/titles/demo-title-1"),
            ("GET", f"/v1/accounts/{account}/close"),
        ):
            response = http.request(method, path)
            assert response.status_code == 405, (method, path, response.status_code)
            expect_error(response, 405, response.json()["error"]["code"])


def _too_big() -> bytes:
    return b'{"account_id": "big", "plan": "basic", "pad": "' + b"x" * (64 * 1024) + b'"}'


def test_a_body_over_64_kib_is_refused_with_413_by_length_or_by_stream(shared_server: Server, account: str) -> None:
    with shared_server.client() as http:
        before = _version(http, account)
        body = _too_big()
        declared = http.post("/v1/accounts", content=body, headers={"Content-Type": "application/json"})
        details = expect_error(declared, 413, "PAYLOAD_TOO_LARGE")
        assert details["limit"] == 64 * 1024

        def chunks() -> Iterator[bytes]:
            for start in range(0, len(body), 8192):
                yield body[start : start + 8192]

    # A fresh connection: the server may close the one it refused a body on.
    with shared_server.client() as http:
        streamed = http.post(
            f"/v1/accounts/{account}/devices", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert "content-length" not in {k.lower() for k in streamed.request.headers}
        expect_error(streamed, 413, "PAYLOAD_TOO_LARGE")

    with shared_server.client() as http:
        expect_error(http.get("/v1/accounts/big"), 404, "ACCOUNT_NOT_FOUND")
        assert _version(http, account) == before
        # A body just under the limit is read normally.
        fits = b'{"device_id": "d9", "model": "' + b"m" * 150 + b'", "pad": "' + b"x" * 60000 + b'"}'
        assert (
            http.post(
                f"/v1/accounts/{account}/devices", content=fits, headers={"Content-Type": "application/json"}
            ).status_code
            == 201
        )


def _expect_401(server: Server, headers: dict[str, str]) -> None:
    with httpx.Client(base_url=server.url, headers=headers, timeout=30) as http:
        for response in (
            http.get("/v1/accounts/whoever"),
            http.post("/v1/accounts", json={"account_id": unique_id(), "plan": "basic"}),
            http.get("/v1/titles/demo-title-1"),
        ):
            expect_error(response, 401, "UNAUTHENTICATED")
            assert response.headers.get("www-authenticate", "").lower().startswith("bearer")


def test_requests_without_a_valid_token_are_401_unauthenticated(shared_server: Server) -> None:
    now = int(time.time())
    other = TokenSigner("another-secret-" + "y" * 32).issue("admin")
    expired = jwt.encode({"role": "admin", "sub": "t", "iat": now - 120, "exp": now - 60}, SECRET, algorithm="HS256")
    no_role = jwt.encode({"sub": "t", "exp": now + 600}, SECRET, algorithm="HS256")
    bad_role = jwt.encode({"role": "root", "sub": "t", "exp": now + 600}, SECRET, algorithm="HS256")
    no_expiry = jwt.encode({"role": "admin", "sub": "t"}, SECRET, algorithm="HS256")
    unsigned = jwt.encode({"role": "admin", "exp": now + 600}, None, algorithm="none")
    for headers in (
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer garbage"},
        {"Authorization": f"Basic {shared_server.token('admin')}"},
        {"Authorization": shared_server.token("admin")},
        {"Authorization": f"Bearer {other}"},
        {"Authorization": f"Bearer {expired}"},
        {"Authorization": f"Bearer {no_role}"},
        {"Authorization": f"Bearer {bad_role}"},
        {"Authorization": f"Bearer {no_expiry}"},
        {"Authorization": f"Bearer {unsigned}"},
    ):
        _expect_401(shared_server, headers)


def test_a_token_stops_working_when_it_expires(shared_server: Server) -> None:
    # Token times are whole seconds, so a 2-second token is good for at least one more second.
    token = TokenSigner(SECRET).issue("support", ttl_seconds=2)
    with httpx.Client(base_url=shared_server.url, headers={"Authorization": f"Bearer {token}"}) as http:
        expect_error(http.get("/v1/titles/nope"), 404, "TITLE_NOT_FOUND")
        time.sleep(3.1)
        expect_error(http.get("/v1/titles/nope"), 401, "UNAUTHENTICATED")


def _commands(account: str, license_id: str) -> list[tuple[str, str, object]]:
    """Every command route, in an order in which each one succeeds for an admin."""
    return [
        ("POST", "/v1/accounts", {"account_id": unique_id(), "plan": "basic"}),
        ("PUT", f"/v1/accounts/{account}/plan", {"plan": "premium"}),
        ("POST", f"/v1/accounts/{account}/devices", {"device_id": "d7", "model": "m"}),
        ("POST", f"/v1/accounts/{account}/devices/d1/sync", {"license_ids": [license_id]}),
        ("POST", f"/v1/accounts/{account}/licenses", {"device_id": "d1", "title_id": "demo-title-2"}),
        ("POST", f"/v1/accounts/{account}/licenses/{license_id}/play", None),
        ("POST", f"/v1/accounts/{account}/licenses/{license_id}/renew", None),
        ("DELETE", f"/v1/accounts/{account}/licenses/{license_id}", None),
        ("DELETE", f"/v1/accounts/{account}/devices/d1", None),
        ("PUT", "/v1/titles/demo-title-1", {"studio": "default"}),
        ("POST", f"/v1/accounts/{account}/close", None),
    ]


def _reads(account: str, license_id: str) -> list[str]:
    return [
        f"/v1/accounts/{account}",
        f"/v1/accounts/{account}?version=1",
        f"/v1/accounts/{account}?as_of=2999-01-01T00:00:00Z",
        f"/v1/accounts/{account}/licenses",
        f"/v1/accounts/{account}/licenses/{license_id}",
        f"/v1/accounts/{account}/titles/demo-title-1/downloads",
        f"/v1/accounts/{account}/events",
        "/v1/titles/demo-title-1",
    ]


def _license_id(server: Server, account: str) -> str:
    with server.client() as http:
        license_id: str = http.get(f"/v1/accounts/{account}/licenses").json()["licenses"][0]["license_id"]
        return license_id


def test_support_reads_everything_but_may_not_command(shared_server: Server, account: str) -> None:
    license_id = _license_id(shared_server, account)
    with shared_server.client("support") as support, shared_server.client() as http:
        for path in _reads(account, license_id):
            assert support.get(path).status_code == 200, path
        before = _version(http, account)
        for method, path, body in _commands(account, license_id):
            details = expect_error(support.request(method, path, json=body), 403, "FORBIDDEN")
            assert details["role"] == "support"
        assert _version(http, account) == before


def test_service_runs_commands_but_may_not_change_the_catalog(shared_server: Server, account: str) -> None:
    license_id = _license_id(shared_server, account)
    with shared_server.client("service") as service:
        for path in _reads(account, license_id):
            assert service.get(path).status_code == 200, path
        expect_error(service.put("/v1/titles/demo-title-1", json={"studio": "restricted"}), 403, "FORBIDDEN")
        expect_error(service.put(f"/v1/titles/{unique_id('title')}", json={"studio": "default"}), 403, "FORBIDDEN")
        assert service.get("/v1/titles/demo-title-1").json()["studio"] == "default"


def test_admin_may_do_everything(shared_server: Server) -> None:
    with shared_server.client("admin") as admin:
        account = unique_id()
        assert admin.post("/v1/accounts", json={"account_id": account, "plan": "basic"}).status_code == 201
        assert admin.post(f"/v1/accounts/{account}/devices", json={"device_id": "d1", "model": "m"}).status_code == 201
        lic = admin.post(f"/v1/accounts/{account}/licenses", json={"device_id": "d1", "title_id": "demo-title-1"})
        assert lic.status_code == 201
        license_id = lic.json()["license_id"]
        for path in _reads(account, license_id):
            assert admin.get(path).status_code == 200, path
        for method, path, body in _commands(account, license_id):
            response = admin.request(method, path, json=body)
            assert response.status_code in (200, 201), (method, path, response.text)


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data"])
def test_a_body_that_is_not_json_is_refused_with_415_and_changes_nothing(
    shared_server: Server, account: str, content_type: str
) -> None:
    with shared_server.client() as http:
        before = _version(http, account)
        response = http.put(
            f"/v1/accounts/{account}/plan", content=b'{"plan": "premium"}', headers={"Content-Type": content_type}
        )
        expect_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
        assert _version(http, account) == before


@pytest.mark.parametrize("content_type", [None, "application/json", "application/json; charset=utf-8"])
def test_a_json_body_is_read_with_or_without_its_content_type(
    shared_server: Server, account: str, content_type: str | None
) -> None:
    with shared_server.client() as http:
        headers = {"Content-Type": content_type} if content_type else {}  # raw bytes carry no content type
        response = http.put(f"/v1/accounts/{account}/plan", content=b'{"plan": "premium"}', headers=headers)
        assert response.status_code == 200, response.text
