"""Clients in every region sending keyed commands, and the checks of what the cluster kept.

:class:`RegionalLoad` runs client threads against one service process per region. Each client
loops on acquire-then-release cycles over shared accounts, every command under an
``Idempotency-Key`` of its own; an answer of 500 or more (or no answer) is sent again with the
same key after a pause, until an answer below 500 comes back, so that every key ends with one
answer. Every attempt is recorded (region, command, key, status, when, how long), and every
acknowledged command (2xx) too. Each client has a device of its own, so that every 2xx it gets is a
command that stored an event (a license issued on its device, or its own license released).

:func:`check_history` reads each account at consistency ``ALL`` and checks it against what was
acknowledged: each acknowledged key has exactly one effect (one command in the stream carries
its key record), a key answered only with errors has at most one, and no limit of the policy was
ever exceeded at any point of the account's history.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from downloads.domain.rules import window_quota
from tests.support.server import Server

__all__ = ["Acked", "Attempt", "RegionalLoad", "at_all", "check_history", "regional", "wait"]


def regional(url: str, dc: str) -> str:
    """The same store URL for a process in region ``dc``."""
    return url.replace("dc=dc1", f"dc={dc}")


def at_all(url: str) -> str:
    """The store URL read at consistency ALL (every replica answers)."""
    return url.replace("create_schema=true", "consistency=ALL")


@dataclass(frozen=True)
class Attempt:
    """One HTTP attempt: ``status`` is the HTTP status, or 0 when no answer came."""

    region: str
    command: str
    key: str
    status: int
    started: float  # time.monotonic()
    seconds: float


@dataclass(frozen=True)
class Acked:
    """A command answered 2xx (possibly after failed attempts with the same key)."""

    region: str
    account: str
    command: str
    key: str
    license_id: str
    at: float


@dataclass
class RegionalLoad:
    """Client threads in each region (``servers``: region -> its service process) over ``accounts``."""

    servers: Mapping[str, Server]
    accounts: Sequence[str]
    clients_per_region: int = 2
    title: str = "demo-title-1"
    pause: float = 0.05  # between cycles
    retry_pause: float = 0.3  # before sending a failed command again
    give_up_after: float = 180.0  # after stop(): a key still unanswered then is reported
    attempts: list[Attempt] = field(default_factory=list)
    acked: list[Acked] = field(default_factory=list)
    unanswered: list[tuple[str, str]] = field(default_factory=list)  # (region, key) given up on
    errors: list[BaseException] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._stopped_at: float | None = None
        self._threads: list[threading.Thread] = []

    @staticmethod
    def device(region: str, index: int) -> str:
        """The device a client uses: one of its own, so that each 2xx it gets changed something."""
        return f"d-{region}-{index}"

    def devices(self) -> list[str]:
        return [self.device(region, j) for region in self.servers for j in range(self.clients_per_region)]

    def start(self) -> None:
        for region in self.servers:
            for j in range(self.clients_per_region):
                thread = threading.Thread(target=self._client, args=(region, j), daemon=True)
                self._threads.append(thread)
                thread.start()

    def stop(self) -> None:
        """Stop starting cycles; wait (bounded) until every client's last key is answered."""
        self._stopped_at = time.monotonic()
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.give_up_after + 60)
        assert not any(t.is_alive() for t in self._threads), "a client thread did not finish"

    # -- what happened -----------------------------------------------------------------------

    def answered(self, region: str, since: float, until: float) -> list[Attempt]:
        with self._lock:
            return [a for a in self.attempts if a.region == region and since <= a.started + a.seconds < until]

    def acked_between(self, regions: Sequence[str], since: float, until: float) -> int:
        with self._lock:
            return sum(1 for a in self.acked if a.region in regions and since <= a.at < until)

    # -- the clients -------------------------------------------------------------------------

    def _client(self, region: str, index: int) -> None:
        server = self.servers[region]
        rng = random.Random(f"{region}-{index}")
        try:
            with server.client() as http:
                while not self._stop.is_set():
                    account = rng.choice(self.accounts)
                    device = self.device(region, index)
                    body = {"device_id": device, "title_id": self.title}
                    got = self._send(http, region, account, "acquire", "POST", f"/v1/accounts/{account}/licenses", body)
                    if got is not None and got.status_code in (200, 201):
                        license_id = got.json()["license_id"]
                        path = f"/v1/accounts/{account}/licenses/{license_id}"
                        self._send(http, region, account, "release", "DELETE", path, None, license_id)
                    time.sleep(self.pause)
        except BaseException as exc:
            with self._lock:
                self.errors.append(exc)

    def _send(
        self,
        http: httpx.Client,
        region: str,
        account: str,
        command: str,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        license_id: str = "",
    ) -> httpx.Response | None:
        """Send under a fresh key until an answer below 500 (or give up, bounded in time after stop)."""
        key = f"{region}-{command}-{uuid.uuid4().hex}"
        while True:
            started = time.monotonic()
            try:
                response: httpx.Response | None = http.request(
                    method, path, json=body, headers={"Idempotency-Key": key}
                )
                status = response.status_code if response is not None else 0
            except httpx.HTTPError:
                response, status = None, 0
            seconds = time.monotonic() - started
            with self._lock:
                self.attempts.append(Attempt(region, command, key, status, started, seconds))
            if response is not None and status < 500:
                if status in (200, 201):
                    found = response.json().get("license_id", license_id)
                    with self._lock:
                        self.acked.append(Acked(region, account, command, key, found, time.monotonic()))
                return response
            stopped = self._stopped_at
            if stopped is not None and time.monotonic() - stopped > self.give_up_after:
                with self._lock:
                    self.unanswered.append((region, key))
                return None
            time.sleep(self.retry_pause)


def check_history(url: str, load: RegionalLoad, *, policy: Any) -> dict[str, int]:
    """Read every account of ``load`` at ``ALL``; check keys' effects and the policy's limits.

    Returns how many commands and events were checked. ``policy`` is the service's
    :class:`~downloads.domain.Policy`.
    """
    from downloads.bootstrap import bootstrap
    from downloads.domain import Account
    from downloads.domain.requests import reply_record
    from downloads.settings import Settings

    checker = bootstrap(Settings(store=at_all(url)))  # the service's repository: sealed fields open with their keys
    try:
        accounts = checker.service.accounts
        acked_keys = {a.key: a for a in load.acked}
        attempted = {a.key for a in load.attempts}
        commands = events = 0
        for account_id in load.accounts:
            history = accounts.history(account_id)
            assert [r.position for r in history] == list(range(1, len(history) + 1)), account_id
            keyed: dict[str, int] = {}
            folded = Account(account_id)
            for recorded in history:
                events += 1
                record = reply_record(recorded.metadata.extra)
                if record is not None and recorded.metadata.request_id is not None:
                    keyed[recorded.metadata.request_id] = keyed.get(recorded.metadata.request_id, 0) + 1
                folded.replay(recorded.event, recorded.metadata)
                _check_limits(folded, policy, recorded.metadata.recorded_at)
            for key, count in keyed.items():
                if key in attempted:
                    assert count == 1, f"key {key} has {count} effects in {account_id}"
            commands += len(keyed)
        for key, acked in acked_keys.items():
            assert key in _keys_of(accounts, acked.account), f"acknowledged {key} is not in {acked.account} at ALL"
        return {"commands": commands, "events": events}
    finally:
        checker.close()


def _keys_of(accounts: Any, account_id: str) -> set[str]:
    from downloads.domain.requests import reply_record

    return {
        r.metadata.request_id
        for r in accounts.history(account_id)
        if r.metadata.request_id is not None and reply_record(r.metadata.extra) is not None
    }


def _check_limits(account: Any, policy: Any, at: Any) -> None:
    """The account as folded up to one event: no limit of ``policy`` exceeded at that point."""
    if not account.exists:
        return
    devices = account.devices_with_downloads()
    assert len(devices) <= account.device_limit(policy), (account.id, "device limit", sorted(devices))
    for device in devices:
        held = account.active_licenses(device)
        assert len(held) <= policy.max_active_downloads, (account.id, "per-device limit", device, len(held))
    for title_id in {lic.title_id for lic in account.licenses.values()}:
        studio_name = policy.titles[title_id].studio if title_id in policy.titles else "default"
        limit = policy.studio(studio_name).max_downloads_per_title
        if limit:
            used = window_quota(account.downloads.get(title_id, []), limit=limit, now=at, window=policy.window).used
            assert used <= limit, (account.id, "title limit", title_id, used)


def wait(condition: Any, *, timeout: float, every: float = 0.5, what: str = "condition") -> float:
    """Poll ``condition()`` until true; return the seconds it took, fail after ``timeout``."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} not met within {timeout:.0f}s")
        time.sleep(every)
    return time.monotonic() - started
