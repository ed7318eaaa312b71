"""Edges found by a hostile review (issue 8, item 6), each against the real server process."""

from __future__ import annotations

import socket

import httpx

from tests.support.server import Server, expect_error, unique_id


def _raw(server: Server, request: bytes) -> bytes:
    """Send bytes as they are (no client normalisation) and return the whole answer."""
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_an_encoded_slash_or_backslash_in_a_path_is_refused_and_changes_nothing(shared_server: Server) -> None:
    account = unique_id()
    with shared_server.client() as http:
        http.post("/v1/accounts", json={"account_id": account, "plan": "basic"}).raise_for_status()
    token = shared_server.token()
    for raw_path in (
        f"/v1/accounts/{account}%2Fclose",
        f"/v1/accounts/{account}%2fclose",
        f"/v1/accounts/{account}%5Cx",
    ):
        answer = _raw(
            shared_server,
            f"POST {raw_path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            "Content-Length: 0\r\nConnection: close\r\n\r\n".encode(),
        )
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert b'"code":"INVALID_PATH"' in answer
    with shared_server.client() as http:
        assert http.get(f"/v1/accounts/{account}").json()["status"] == "active"


def test_ids_made_only_of_dots_are_refused(shared_server: Server) -> None:
    with shared_server.client() as http:
        for bad in (".", "..", "...."):
            expect_error(http.post("/v1/accounts", json={"account_id": bad, "plan": "basic"}), 422, "VALIDATION_ERROR")
        account = unique_id()
        http.post("/v1/accounts", json={"account_id": account, "plan": "basic"}).raise_for_status()
        refused = http.post(f"/v1/accounts/{account}/devices", json={"device_id": "..", "model": "m"})
        expect_error(refused, 422, "VALIDATION_ERROR")
        assert http.post(f"/v1/accounts/{account}/devices", json={"device_id": "a.b", "model": "m"}).status_code == 201


def test_authentication_comes_before_the_body_is_read(shared_server: Server) -> None:
    account = unique_id()
    broken = b'{"device_id": '
    with shared_server.client(role=None) as anonymous:
        answer = anonymous.post(f"/v1/accounts/{account}/devices", content=broken)
        expect_error(answer, 401, "UNAUTHENTICATED")
    with shared_server.client(role="support") as support:
        expect_error(support.post(f"/v1/accounts/{account}/devices", content=broken), 403, "FORBIDDEN")
        expect_error(support.put("/v1/titles/t", content=broken), 403, "FORBIDDEN")
    with shared_server.client() as service:
        expect_error(service.post(f"/v1/accounts/{account}/devices", content=broken), 422, "VALIDATION_ERROR")


def _metric(server: Server, status: int) -> float:
    with server.client(role=None) as http:
        text = http.get("/metrics").text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("downloads_http_requests_total{") and f'status="{status}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_413_and_415_answers_are_counted_in_the_metrics(shared_server: Server) -> None:
    before = (_metric(shared_server, 413), _metric(shared_server, 415))
    with shared_server.client() as http:
        too_large = http.post("/v1/accounts", content=b"x" * 70_000)
        expect_error(too_large, 413, "PAYLOAD_TOO_LARGE")
        assert too_large.headers["connection"] == "close"  # the unread body ends the connection
        answer = http.post(
            "/v1/accounts", content=b"a=b", headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        expect_error(answer, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert (_metric(shared_server, 413), _metric(shared_server, 415)) == (before[0] + 1, before[1] + 1)


def test_a_trailing_slash_is_not_found_and_never_redirects_to_the_host_header(shared_server: Server) -> None:
    with shared_server.client() as http:
        answer = http.get(f"/v1/accounts/{unique_id()}/", headers={"Host": "evil.example"}, follow_redirects=False)
    expect_error(answer, 404, "NOT_FOUND")
    assert "location" not in answer.headers


def test_405_lists_every_method_of_the_path(shared_server: Server) -> None:
    account = unique_id()
    with shared_server.client() as http:
        http.post("/v1/accounts", json={"account_id": account, "plan": "basic"}).raise_for_status()
        answer = http.patch(f"/v1/titles/{unique_id()}")
        expect_error(answer, 405, "METHOD_NOT_ALLOWED")
        assert set(answer.headers["allow"].replace(" ", "").split(",")) == {"GET", "PUT"}
        answer = http.request("PATCH", f"/v1/accounts/{account}/licenses")
        assert set(answer.headers["allow"].replace(" ", "").split(",")) == {"GET", "POST"}


def test_head_works_where_get_does(shared_server: Server) -> None:
    for path in ("/healthz", "/readyz"):
        answer = httpx.head(shared_server.url + path)
        assert answer.status_code == 200, (path, answer.status_code)
        assert answer.content == b""


def test_a_request_that_is_not_http_gets_a_bare_400_and_the_connection_closed(shared_server: Server) -> None:
    for request in (b"GARBAGE\r\n\r\n", b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"):
        answer = _raw(shared_server, request)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert b"connection: close" in head.lower()
        assert body == b""  # no text/plain from the server: the app's envelope or nothing
