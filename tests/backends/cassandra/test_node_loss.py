"""Node loss on a 3-node cluster: a node is SIGKILLed under load and restarted.

With replication factor 3 and quorum consistency, commands keep succeeding
(a client retries a failed attempt with the same Idempotency-Key), no
acknowledged command is lost or applied twice, and afterwards every account
reads the same at consistency ALL as through the service.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from downloads.bootstrap import bootstrap
from downloads.settings import Settings
from tests.support.cassandra import ClusterPool, fresh_keyspace, store_url
from tests.support.server import Server, running_server

pytestmark = [pytest.mark.cassandra, pytest.mark.slow, pytest.mark.cluster(nodes=3)]

ACCOUNTS = 3
CLIENTS_PER_ACCOUNT = 2
MAX_ATTEMPTS = 8


@dataclass
class Ledger:
    """What the clients were told: every acknowledged command, and how hard it was to get."""

    acked: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)  # account, key, command, body
    attempts: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def send(http: httpx.Client, method: str, path: str, body: dict[str, Any] | None, key: str) -> httpx.Response:
    """Send a command, retrying failed attempts with the same key; return the first 2xx/4xx answer."""
    last: Exception | None = None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            response = http.request(method, path, json=body, headers={"Idempotency-Key": key})
            if response.status_code < 500:
                response.extensions["attempts"] = attempt
                return response
            last = RuntimeError(f"{response.status_code}: {response.text}")
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.5 * attempt)
    raise AssertionError(f"{method} {path} failed {MAX_ATTEMPTS} times, last: {last}")


def client_loop(server: Server, account: str, device: str, ledger: Ledger, stop: threading.Event) -> None:
    with server.client() as http:
        while not stop.is_set():
            key = f"acq-{uuid.uuid4().hex}"
            issued = send(
                http, "POST", f"/v1/accounts/{account}/licenses", {"device_id": device, "title_id": "demo-title-1"}, key
            )
            assert issued.status_code in (200, 201), issued.text
            with ledger.lock:
                ledger.acked.append((account, key, "acquire", issued.json()))
                ledger.attempts.append(issued.extensions["attempts"])
            license_id = issued.json()["license_id"]
            key = f"rel-{uuid.uuid4().hex}"
            released = send(http, "DELETE", f"/v1/accounts/{account}/licenses/{license_id}", None, key)
            assert released.status_code == 200, released.text
            with ledger.lock:
                ledger.acked.append((account, key, "release", released.json()))
                ledger.attempts.append(released.extensions["attempts"])


def all_events(http: httpx.Client, account: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    after = 0
    while True:
        page = http.get(f"/v1/accounts/{account}/events", params={"after": after, "limit": 1000}).json()
        events.extend(page["events"])
        if page["next"] is None:
            return events
        after = page["next"]


def test_a_killed_node_loses_no_acknowledged_command_and_the_cluster_agrees_afterwards(
    cluster_pool: ClusterPool, tmp_path: Path
) -> None:
    cluster = cluster_pool.get(3)
    url = store_url(cluster, fresh_keyspace("nodeloss"))
    ledger = Ledger()
    stop = threading.Event()
    errors: list[BaseException] = []
    with running_server(tmp_path, store=url, workers=2) as server:
        accounts = [f"acct-{i}" for i in range(ACCOUNTS)]
        with server.client() as http:
            for account in accounts:
                assert http.post("/v1/accounts", json={"account_id": account, "plan": "premium"}).status_code == 201
                for c in range(CLIENTS_PER_ACCOUNT):
                    http.post(f"/v1/accounts/{account}/devices", json={"device_id": f"d{c}", "model": "phone"})

        def run(account: str, device: str) -> None:
            try:
                client_loop(server, account, device, ledger, stop)
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(target=run, args=(a, f"d{c}")) for a in accounts for c in range(CLIENTS_PER_ACCOUNT)
        ]
        for t in threads:
            t.start()
        try:
            time.sleep(5)
            before_kill = len(ledger.acked)
            cluster.kill_node(2)
            time.sleep(12)
            while_down = len(ledger.acked) - before_kill
            cluster.start_node(2)
            time.sleep(5)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=120)
            if cluster.pid(2) is None:
                cluster.start_node(2)
        assert not errors, errors
        assert while_down > 0, "no command succeeded while the node was down"

        # Every acknowledged command is in its account's history exactly once, with the answer given.
        with server.client() as http:
            histories = {account: all_events(http, account) for account in accounts}
            for account, key, command, body in ledger.acked:
                mine = [e for e in histories[account] if e["metadata"].get("request_id") == key]
                kind = "LicenseIssued" if command == "acquire" else "LicenseReleased"
                matching = [e for e in mine if e["type"] == kind]
                assert len(matching) == 1, (command, key, mine)
                assert matching[0]["data"]["license_id"] == body["license_id"]
            for account, events in histories.items():
                assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
                state = http.get(f"/v1/accounts/{account}").json()
                assert state["version"] == len(events)
                assert state["devices_with_downloads"] <= state["device_limit"]

    # Read back at consistency ALL: every replica answers, and the events are the ones the service saw.
    checker = bootstrap(Settings(store=url.replace("create_schema=true", "consistency=ALL")))
    store, accounts = checker.stores.events, checker.service.accounts
    try:
        for account, events in histories.items():
            stored = store.read(f"account-{account}")
            assert [s.position for s in stored] == [e["seq"] for e in events]
            assert [s.type_name for s in stored] == [e["type"] for e in events]
            assert [accounts.decode(s).metadata.request_id for s in stored] == [  # sealed: read with the key
                e["metadata"].get("request_id") for e in events
            ]
    finally:
        checker.close()
    print(
        f"acknowledged {len(ledger.acked)} commands, {while_down} while a node was down; "
        f"attempts per command: max {max(ledger.attempts)}"
    )
