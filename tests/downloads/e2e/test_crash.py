"""A server killed mid-load loses no acknowledged command, and retries after the restart act exactly once.

A few clients write to one account, every command under its own Idempotency-Key. The whole server
process group is SIGKILLed while they run; a new server opens the same SQLite file. Every command that
was answered 2xx before the kill must be in the history, the history must replay, and the commands
that were in flight when the server died must have exactly one effect once retried with their keys.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import Server, read_all_events, running_server, unique_id

WRITERS = 4
#: how many times the server is killed, each time after this many more acknowledged commands
KILLS = 2
KILL_AFTER = 40
#: the most commands one writer sends, so the load ends even if the kill never comes
MAX_STEPS = 3000

#: the event each command writes, to count its effects
EFFECT = {"register": "DeviceRegistered", "acquire": "LicenseIssued", "release": "LicenseReleased"}


@dataclass
class Command:
    kind: str
    key: str
    method: str
    path: str
    body: dict[str, Any] | None = None


@dataclass
class Ledger:
    """What the clients were told: acknowledged commands, and the ones whose outcome they never learned."""

    acknowledged: list[tuple[Command, int, dict[str, Any]]] = field(default_factory=list)
    in_flight: list[Command] = field(default_factory=list)
    refused: list[tuple[Command, int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    progress: threading.Condition = field(init=False)

    def __post_init__(self) -> None:
        self.progress = threading.Condition(self.lock)


def send(http: httpx.Client, command: Command) -> httpx.Response:
    return http.request(command.method, command.path, json=command.body, headers={"Idempotency-Key": command.key})


def writer(server: Server, account: str, name: str, ledger: Ledger, stop: threading.Event) -> None:
    """Register a device, download a title on it, delete the download; again and again, until the server dies."""
    with server.client() as http:
        step = 0
        while not stop.is_set() and step < MAX_STEPS:
            device = f"{name}-d{step}"
            plan = [
                Command(
                    "register",
                    f"{account}-{device}-register",
                    "POST",
                    f"/v1/accounts/{account}/devices",
                    {"device_id": device, "model": "phone"},
                ),
                Command(
                    "acquire",
                    f"{account}-{device}-acquire",
                    "POST",
                    f"/v1/accounts/{account}/licenses",
                    {"device_id": device, "title_id": "demo-title-1"},
                ),
            ]
            license_id = None
            for command in [*plan, None]:
                if command is None:  # the release needs the license id the acquire answered
                    command = Command(
                        "release",
                        f"{account}-{device}-release",
                        "DELETE",
                        f"/v1/accounts/{account}/licenses/{license_id}",
                    )
                try:
                    response = send(http, command)
                except httpx.TransportError:
                    with ledger.lock:
                        ledger.in_flight.append(command)
                    return  # the server is gone: this writer's last command is the one in flight
                with ledger.progress:
                    if response.is_success:
                        ledger.acknowledged.append((command, response.status_code, response.json()))
                        ledger.progress.notify_all()
                    else:
                        # A busy account (503) is an unacknowledged command too: it is retried after the restart.
                        ledger.refused.append((command, response.status_code, response.text))
                        ledger.in_flight.append(command)
                        return
                if command.kind == "acquire":
                    license_id = response.json()["license_id"]
            step += 1


def load_then_kill(server: Server, account: str, ledger: Ledger, cycle: int) -> None:
    """Run the writers until :data:`KILL_AFTER` more commands are acknowledged, then SIGKILL the server."""
    wanted = len(ledger.acknowledged) + KILL_AFTER
    stop = threading.Event()
    threads = [
        threading.Thread(target=writer, args=(server, account, f"c{cycle}w{w}", ledger, stop)) for w in range(WRITERS)
    ]
    for thread in threads:
        thread.start()
    try:
        with ledger.progress:
            ledger.progress.wait_for(lambda: len(ledger.acknowledged) >= wanted or ledger.in_flight, timeout=120)
        server.kill()
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a writer never finished"
    assert len(ledger.acknowledged) >= wanted, (ledger.refused, server.log_tail())
    assert all(status == 503 for _, status, _ in ledger.refused), ledger.refused


def effects_of(events: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter((e["type"], e["metadata"].get("request_id")) for e in events)


def check_then_retry(server: Server, account: str, ledger: Ledger) -> None:
    """Every acknowledged command is there once; each in-flight one, retried with its key, acts exactly once."""
    with server.client() as http:
        events = read_all_events(http, account, page=13)  # gap-free 1..N, across pages
        state = http.get(f"/v1/accounts/{account}")
        assert state.status_code == 200, state.text
        assert state.json()["version"] == len(events)
        devices = {d["device_id"]: d for d in state.json()["devices"]}

        effects = effects_of(events)
        for command, _, body in ledger.acknowledged:
            assert effects[(EFFECT[command.kind], command.key)] == 1, command
            if command.kind == "register":
                assert devices[body["device_id"]]["status"] == "active"
            else:
                stored = http.get(f"/v1/accounts/{account}/licenses/{body['license_id']}")
                assert stored.status_code == 200, stored.text
                if command.kind == "release":
                    assert stored.json()["status"] == "released"

        # The commands in flight at the kill may or may not have landed: a retry tells, and acts exactly once.
        in_flight, ledger.in_flight, ledger.refused = ledger.in_flight, [], []
        landed = {command.key: effects[(EFFECT[command.kind], command.key)] for command in in_flight}
        assert set(landed.values()) <= {0, 1}, landed
        for command in in_flight:
            retried = send(http, command)
            assert retried.is_success, retried.text
            assert retried.headers.get("Idempotent-Replayed") == ("true" if landed[command.key] else None)
            again = send(http, command)
            assert (again.status_code, again.json()) == (retried.status_code, retried.json())
            assert again.headers.get("Idempotent-Replayed") == "true"
            ledger.acknowledged.append((command, retried.status_code, retried.json()))
            if command.kind == "acquire":  # free the device slot, as its writer would have
                release = Command(
                    "release",
                    command.key.replace("-acquire", "-release"),
                    "DELETE",
                    f"/v1/accounts/{account}/licenses/{retried.json()['license_id']}",
                )
                released = send(http, release)
                assert released.status_code == 200, released.text
                ledger.acknowledged.append((release, released.status_code, released.json()))

        after = read_all_events(http, account, page=13)
        releases = sum(command.kind == "acquire" for command in in_flight)
        assert len(after) == len(events) + sum(1 for n in landed.values() if n == 0) + releases
        # Nothing else was written: each event is the one effect of one command a client sent.
        effects = effects_of(after)
        assert all(count == 1 for count in effects.values()), effects
        assert after[0]["type"] == "AccountOpened"
        sent = {(EFFECT[c.kind], c.key) for c, _, _ in ledger.acknowledged}
        assert set(effects) == sent | {("AccountOpened", after[0]["metadata"]["request_id"])}


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_a_server_killed_mid_load_keeps_every_acknowledged_command_and_retries_act_once(
    tmp_path: Path, workers: int
) -> None:
    account = unique_id("crash")
    ledger = Ledger()
    store = f"sqlite:///{tmp_path / 'downloads.db'}"
    policy = tmp_path / "policy.toml"
    policy.write_text("[accounts]\nmax_devices = 100000\n")  # every step registers one more device
    for cycle in range(KILLS + 1):
        with running_server(tmp_path, store=store, workers=workers, policy=policy) as server:
            if cycle == 0:
                with server.client() as http:
                    opened = http.post("/v1/accounts", json={"account_id": account, "plan": "premium"})
                    assert opened.status_code == 201, opened.text
            else:
                check_then_retry(server, account, ledger)
            if cycle < KILLS:
                load_then_kill(server, account, ledger, cycle)
