"""Limits hold under concurrency: many clients, two server processes, one SQLite file, one account.

Every race starts its clients together on a barrier, each with its own HTTP connection, against a
server running two worker processes, so the requests interleave across threads and processes. After
each race the final state must agree with every answer given, and the account's history must replay.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.downloads.e2e.conftest import start_server
from tests.support.server import Server, expect_error, read_all_events, unique_id

#: these tests also run with the server's store on the 3-node Cassandra cluster (see conftest)
ON_CASSANDRA = True

CLIENTS = 8

#: at most three active downloads per device; everything else is the built-in policy
POLICY = """
[devices]
max_active_downloads = 3
"""

Answer = tuple[int, dict[str, Any]]


@pytest.fixture(scope="module")
def server(backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Two worker processes on one store (a SQLite file or a keyspace of the cluster), running :data:`POLICY`."""
    tmp_path: Path = tmp_path_factory.mktemp("concurrency")
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY)
    with start_server(backend, request, tmp_path, workers=2, policy=policy) as running:
        yield running


def race(
    server: Server,
    request: Callable[[int, httpx.Client], httpx.Response],
    *,
    clients: int = CLIENTS,
    role: str = "service",
) -> list[Answer]:
    """Run ``request(i, http)`` in ``clients`` threads released together; return each (status, body) by i."""
    barrier = threading.Barrier(clients)
    answers: list[Answer | None] = [None] * clients
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            with server.client(role) as http:
                http.get("/healthz")  # connect before the start line, so the race is about the requests
                barrier.wait(timeout=60)
                response = request(i, http)
                answers[i] = (response.status_code, response.json())
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=client, args=(i,), name=f"client-{i}") for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a client never finished"
    if errors:
        raise errors[0]
    assert all(answer is not None for answer in answers)
    return [answer for answer in answers if answer is not None]


def no_server_errors(answers: list[Answer]) -> None:
    assert all(status < 500 for status, _ in answers), [a for a in answers if a[0] >= 500]


def open_account(http: httpx.Client, plan: str, devices: int) -> str:
    account = unique_id("race")
    assert http.post("/v1/accounts", json={"account_id": account, "plan": plan}).status_code == 201
    for d in range(devices):
        registered = http.post(f"/v1/accounts/{account}/devices", json={"device_id": f"d{d}", "model": "phone"})
        assert registered.status_code == 201, registered.text
    return account


def assert_replays(http: httpx.Client, account: str, *, issued: int) -> list[dict[str, Any]]:
    """The history reads back gap-free, folds into the account, and holds ``issued`` LicenseIssued events."""
    events = read_all_events(http, account, page=7)
    current = http.get(f"/v1/accounts/{account}")
    assert current.status_code == 200, current.text
    assert current.json()["version"] == len(events)
    at_last = http.get(f"/v1/accounts/{account}", params={"version": len(events)})
    assert at_last.status_code == 200, at_last.text
    assert at_last.json() == current.json()
    assert sum(e["type"] == "LicenseIssued" for e in events) == issued
    return events


def active_licenses(http: httpx.Client, account: str) -> list[dict[str, Any]]:
    listed = http.get(f"/v1/accounts/{account}/licenses", params={"status": "active"})
    assert listed.status_code == 200, listed.text
    licenses: list[dict[str, Any]] = listed.json()["licenses"]
    return licenses


def test_clients_racing_on_eight_devices_of_a_two_device_plan_get_downloads_on_exactly_two(server: Server) -> None:
    with server.client() as http:
        account = open_account(http, "standard", devices=CLIENTS)

    answers = race(
        server,
        lambda i, http: http.post(
            f"/v1/accounts/{account}/licenses", json={"device_id": f"d{i}", "title_id": "demo-title-1"}
        ),
    )

    no_server_errors(answers)
    granted = [body for status, body in answers if status == 201]
    assert len(granted) == 2, answers
    for status, body in answers:
        if status != 201:
            assert status == 409 and body["error"]["code"] == "DEVICE_LIMIT_REACHED", (status, body)
            assert body["error"]["details"]["limit"] == 2
    with server.client() as http:
        state = http.get(f"/v1/accounts/{account}").json()
        assert state["devices_with_downloads"] == 2
        downloading = {d["device_id"] for d in state["devices"] if d["active_downloads"] > 0}
        assert downloading == {lic["device_id"] for lic in granted}
        for lic in granted:
            stored = http.get(f"/v1/accounts/{account}/licenses/{lic['license_id']}")
            assert stored.status_code == 200 and stored.json()["status"] == "active", stored.text
            assert stored.json()["device_id"] == lic["device_id"]
        assert {lic["license_id"] for lic in active_licenses(http, account)} == {lic["license_id"] for lic in granted}
        assert_replays(http, account, issued=len(granted))


def test_clients_racing_for_different_titles_on_one_device_get_exactly_the_per_device_limit(
    server: Server,
) -> None:
    titles = [f"race-title-{i}" for i in range(CLIENTS)]
    with server.client("admin") as admin:
        for title in titles:
            put = admin.put(f"/v1/titles/{title}", json={"studio": "default"})
            assert put.status_code == 200, put.text
    with server.client() as http:
        account = open_account(http, "premium", devices=1)

    answers = race(
        server,
        lambda i, http: http.post(f"/v1/accounts/{account}/licenses", json={"device_id": "d0", "title_id": titles[i]}),
    )

    no_server_errors(answers)
    granted = [body for status, body in answers if status == 201]
    assert len(granted) == 3, answers
    for status, body in answers:
        if status != 201:
            assert status == 409 and body["error"]["code"] == "DEVICE_DOWNLOAD_LIMIT_REACHED", (status, body)
    with server.client() as http:
        state = http.get(f"/v1/accounts/{account}").json()
        assert [d["active_downloads"] for d in state["devices"]] == [3]
        active = active_licenses(http, account)
        assert {lic["license_id"] for lic in active} == {lic["license_id"] for lic in granted}
        assert {lic["title_id"] for lic in active} == {lic["title_id"] for lic in granted}
        assert_replays(http, account, issued=len(granted))


def test_clients_racing_for_a_restricted_title_on_many_devices_count_at_most_three_downloads(
    server: Server,
) -> None:
    with server.client() as http:
        account = open_account(http, "premium", devices=6)

    # Eight clients on six devices: two devices get two clients, whose second answer may be the first's license.
    answers = race(
        server,
        lambda i, http: http.post(
            f"/v1/accounts/{account}/licenses", json={"device_id": f"d{i % 6}", "title_id": "demo-title-2"}
        ),
    )

    no_server_errors(answers)
    granted = [body for status, body in answers if status == 201]
    assert len(granted) == 3, answers
    granted_ids = {lic["license_id"] for lic in granted}
    for status, body in answers:
        if status == 200:  # rule 3: this device already holds the title, the answer is that license
            assert body["license_id"] in granted_ids, body
        elif status != 201:
            assert status == 409 and body["error"]["code"] == "TITLE_YEARLY_LIMIT_REACHED", (status, body)
            assert body["error"]["details"]["next_available_at"], body
    with server.client() as http:
        downloads = http.get(f"/v1/accounts/{account}/titles/demo-title-2/downloads")
        assert downloads.status_code == 200, downloads.text
        assert downloads.json()["limit"] == 3 and downloads.json()["used"] == 3, downloads.json()
        assert {lic["license_id"] for lic in active_licenses(http, account)} == granted_ids
        assert_replays(http, account, issued=3)


def test_clients_racing_to_renew_a_restricted_title_renew_only_up_to_the_yearly_limit(server: Server) -> None:
    with server.client() as http:
        account = open_account(http, "premium", devices=1)
        issued = http.post(f"/v1/accounts/{account}/licenses", json={"device_id": "d0", "title_id": "demo-title-2"})
        assert issued.status_code == 201, issued.text
        license_id = issued.json()["license_id"]

    # One download is counted; renewals count too, so two of the racing renewals fit under the limit of 3.
    answers = race(server, lambda i, http: http.post(f"/v1/accounts/{account}/licenses/{license_id}/renew"))

    no_server_errors(answers)
    renewed = [body for status, body in answers if status == 200]
    assert len(renewed) == 2, answers
    for status, body in answers:
        if status != 200:
            assert status == 409 and body["error"]["code"] == "TITLE_YEARLY_LIMIT_REACHED", (status, body)
    assert sorted(body["renewals"] for body in renewed) == [1, 2]
    with server.client() as http:
        assert http.get(f"/v1/accounts/{account}/titles/demo-title-2/downloads").json()["used"] == 3
        assert http.get(f"/v1/accounts/{account}/licenses/{license_id}").json()["renewals"] == 2
        events = assert_replays(http, account, issued=1)
        assert sum(e["type"] == "LicenseRenewed" for e in events) == 2


def test_clients_sending_one_command_with_one_idempotency_key_at_once_have_exactly_one_effect(
    server: Server,
) -> None:
    with server.client() as http:
        account = open_account(http, "standard", devices=1)
        before = len(read_all_events(http, account))
    key = unique_id("acquire-key")

    def acquire(_: int, http: httpx.Client) -> httpx.Response:
        return http.post(
            f"/v1/accounts/{account}/licenses",
            json={"device_id": "d0", "title_id": "demo-title-1"},
            headers={"Idempotency-Key": key},
        )

    answers = race(server, acquire)

    assert len(set(map(repr, answers))) == 1, answers  # the same status and the same body, for everyone
    status, body = answers[0]
    assert status == 201 and body["status"] == "active", answers[0]
    with server.client() as http:
        events = assert_replays(http, account, issued=1)
        assert len(events) == before + 1
        assert [e["metadata"]["request_id"] for e in events if e["type"] == "LicenseIssued"] == [key]

    # Late retries from other clients, again all at once: the original answer, and nothing written.
    assert race(server, acquire) == answers
    with server.client() as http:
        assert len(read_all_events(http, account)) == before + 1
        assert [lic["license_id"] for lic in active_licenses(http, account)] == [body["license_id"]]
        reused = http.post(
            f"/v1/accounts/{account}/licenses",
            json={"device_id": "d0", "title_id": "demo-title-2"},
            headers={"Idempotency-Key": key},
        )
        expect_error(reused, 422, "IDEMPOTENCY_KEY_REUSED")
        assert len(read_all_events(http, account)) == before + 1


def test_clients_registering_one_device_with_one_idempotency_key_at_once_register_it_once(server: Server) -> None:
    with server.client() as http:
        account = open_account(http, "basic", devices=0)
    key = unique_id("register-key")

    def register(_: int, http: httpx.Client) -> httpx.Response:
        return http.post(
            f"/v1/accounts/{account}/devices",
            json={"device_id": "tablet", "model": "tablet"},
            headers={"Idempotency-Key": key},
        )

    answers = race(server, register)

    assert (
        answers
        == [(201, {"device_id": "tablet", "model": "tablet", "status": "active", "active_downloads": 0})] * CLIENTS
    )
    with server.client() as http:
        events = assert_replays(http, account, issued=0)
        assert Counter(e["type"] for e in events) == {"AccountOpened": 1, "DeviceRegistered": 1}
    assert race(server, register) == answers
    with server.client() as http:
        assert len(read_all_events(http, account)) == len(events)


def test_clients_each_with_their_own_key_register_one_device_once_and_the_rest_see_it_registered(
    server: Server,
) -> None:
    with server.client() as http:
        account = open_account(http, "basic", devices=0)

    answers = race(
        server,
        lambda i, http: http.post(
            f"/v1/accounts/{account}/devices",
            json={"device_id": "tv", "model": "tv"},
            headers={"Idempotency-Key": f"{account}-register-{i}"},
        ),
    )

    assert sorted(status for status, _ in answers) == [200] * (CLIENTS - 1) + [201], answers
    assert all(body["device_id"] == "tv" and body["status"] == "active" for _, body in answers)
    with server.client() as http:
        events = assert_replays(http, account, issued=0)
        # Each of the others changed nothing; its key is kept by an event that changes no state.
        assert Counter(e["type"] for e in events) == {
            "AccountOpened": 1,
            "DeviceRegistered": 1,
            "RequestAnswered": CLIENTS - 1,
        }
