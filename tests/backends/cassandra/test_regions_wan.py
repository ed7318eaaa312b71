"""Three regions 70 ms apart: limits that hold worldwide, a region cut off under load, a region lost and back.

The three-region test cluster runs every connection between regions through a Toxiproxy proxy;
this module sets a 70 ms round trip between any two regions (``cluster.set_wan``) and puts it back
to 0 at the end. A ``downloads serve`` process runs in each region (``?dc=``), the dc1 one with
the read side. Every acknowledged answer is checked against the accounts read at consistency
``ALL``; every command is sent under an ``Idempotency-Key`` and, when it fails, sent again with it.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from downloads.adapters.policy_file import load_policy
from tests.downloads.e2e.conftest import STRICT_POLICY
from tests.support.cassandra import ClusterPool, drop_keyspace, fresh_keyspace, store_url
from tests.support.regions import RegionalLoad, check_history, regional, wait
from tests.support.server import Server, running_server
from tools.cassandra_cluster import LocalCassandraCluster

pytestmark = [pytest.mark.cassandra, pytest.mark.slow, pytest.mark.cluster(nodes=3, dcs=3)]

WAN_MS = 70
REGIONS = ("dc1", "dc2", "dc3")
COMMAND_TIMEOUT = 3.0  # the store's bound on one command (command_timeout in the URL)
RACES = 4


@pytest.fixture(scope="module")
def cluster(cluster_pool: ClusterPool) -> Iterator[LocalCassandraCluster]:
    """The three-region cluster, 70 ms between regions for this module (and healed, at 0 ms, after it)."""
    cluster = cluster_pool.get(3, dcs=3)
    cluster.set_wan(WAN_MS)
    try:
        yield cluster
    finally:
        if cluster.is_running():
            cluster.heal()
            cluster.set_wan(0)


@pytest.fixture(scope="module")
def url(cluster: LocalCassandraCluster) -> Iterator[str]:
    """A fresh keyspace (dropped afterwards: its read-side tables cost the nodes' small heaps)."""
    from eskit import open_stores

    keyspace = fresh_keyspace("wan")
    made = store_url(cluster, keyspace, command_timeout=str(COMMAND_TIMEOUT))
    open_stores(made).close()  # creates the keyspace
    try:
        yield made
    finally:
        if cluster.is_running():
            drop_keyspace(cluster, keyspace)


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("wan-policy") / "policy.toml"
    path.write_text(STRICT_POLICY)
    return path


@pytest.fixture(scope="module")
def servers(url: str, policy_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    """A service process per region on the same keyspace; dc1's runs the read side."""
    tmp = tmp_path_factory.mktemp("wan")
    for dc in REGIONS:
        (tmp / dc).mkdir()
    with (
        running_server(tmp / "dc1", store=regional(url, "dc1"), policy=policy_file, read_side=True) as east,
        running_server(tmp / "dc2", store=regional(url, "dc2"), policy=policy_file) as west,
        running_server(tmp / "dc3", store=regional(url, "dc3"), policy=policy_file) as south,
    ):
        yield {"dc1": east, "dc2": west, "dc3": south}


def _send(http: httpx.Client, method: str, path: str, body: dict[str, Any] | None, key: str) -> httpx.Response:
    """Send under ``key`` until an answer below 500 (bounded)."""
    last: object = None
    for attempt in range(1, 16):
        try:
            response = http.request(method, path, json=body, headers={"Idempotency-Key": key})
            if response.status_code < 500:
                return response
            last = f"{response.status_code}: {response.text}"
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2 * attempt)
    raise AssertionError(f"{method} {path} failed 15 times, last: {last}")


def _account(server: Server, plan: str, devices: list[str]) -> str:
    account = f"wan-{uuid.uuid4().hex[:10]}"
    with server.client() as http:
        assert _send(http, "POST", "/v1/accounts", {"account_id": account, "plan": plan}, f"o-{account}").is_success
        for device in devices:
            body = {"device_id": device, "model": "phone"}
            assert _send(http, "POST", f"/v1/accounts/{account}/devices", body, f"r-{account}-{device}").is_success
    return account


def _acquire(server: Server, account: str, device: str, title: str) -> Callable[[], httpx.Response]:
    def call() -> httpx.Response:
        with server.client() as http:
            body = {"device_id": device, "title_id": title}
            return _send(http, "POST", f"/v1/accounts/{account}/licenses", body, f"k-{uuid.uuid4().hex}")

    return call


def _race(*calls: Callable[[], httpx.Response]) -> list[httpx.Response]:
    barrier = threading.Barrier(len(calls))
    out: list[httpx.Response | None] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        out[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(r is not None for r in out), "a racing request did not finish"
    return [r for r in out if r is not None]


def _granted(answers: list[httpx.Response]) -> list[str]:
    assert {r.status_code for r in answers} <= {201, 409}, [r.text for r in answers]
    return [r.json()["license_id"] for r in answers if r.status_code == 201]


def _load(servers: dict[str, Server], title: str) -> RegionalLoad:
    """Clients in every region on six accounts (two devices may hold downloads; six compete)."""
    load = RegionalLoad(servers, [], clients_per_region=2, title=title)
    load.accounts.extend(_account(servers["dc1"], "standard", load.devices()) for _ in range(6))
    return load


def _title(server: Server, studio: str = "default") -> str:
    title = f"wan-film-{uuid.uuid4().hex[:8]}"
    with server.client("admin") as admin:
        assert admin.put(f"/v1/titles/{title}", json={"studio": studio}).status_code == 200
    return title


# -- three regions racing for each limit --------------------------------------------------


def test_the_device_limit_holds_when_three_regions_70ms_apart_race(
    servers: dict[str, Server], url: str, policy_file: Path
) -> None:
    east, south = servers["dc1"], servers["dc3"]
    load = RegionalLoad(servers, [])
    for _ in range(RACES):
        account = _account(east, "basic", ["d1", "d2", "d3"])  # one device may hold downloads
        answers = _race(*(_acquire(s, account, f"d{i}", "demo-title-1") for i, s in enumerate(servers.values(), 1)))
        assert len(_granted(answers)) == 1, [r.text for r in answers]
        with south.client() as http:  # the far region reads what was decided
            assert http.get(f"/v1/accounts/{account}").json()["devices_with_downloads"] == 1
        load.accounts.append(account)
    check_history(url, load, policy=load_policy(policy_file))


def test_the_per_device_limit_holds_when_three_regions_70ms_apart_race(
    servers: dict[str, Server], url: str, policy_file: Path
) -> None:
    east = servers["dc1"]
    titles = [_title(east) for _ in REGIONS]
    load = RegionalLoad(servers, [])
    for _ in range(RACES):
        account = _account(east, "premium", ["d1"])  # the strict policy: at most 2 active per device
        assert _acquire(east, account, "d1", "demo-title-1")().status_code == 201
        answers = _race(*(_acquire(s, account, "d1", t) for s, t in zip(servers.values(), titles, strict=True)))
        assert len(_granted(answers)) == 1, [r.text for r in answers]
        load.accounts.append(account)
    check_history(url, load, policy=load_policy(policy_file))


def test_the_title_limit_holds_when_three_regions_70ms_apart_race(
    servers: dict[str, Server], url: str, policy_file: Path
) -> None:
    east = servers["dc1"]
    load = RegionalLoad(servers, [])
    for _ in range(RACES):
        account = _account(east, "premium", ["d1", "d2", "d3"])
        with east.client() as http:  # demo-title-2 is restricted: 3 downloads per window; 2 used
            for _ in range(2):
                got = _acquire(east, account, "d1", "demo-title-2")()
                assert got.status_code == 201
                path = f"/v1/accounts/{account}/licenses/{got.json()['license_id']}"
                assert _send(http, "DELETE", path, None, f"d-{uuid.uuid4().hex}").is_success
        answers = _race(*(_acquire(s, account, f"d{i}", "demo-title-2") for i, s in enumerate(servers.values(), 1)))
        assert len(_granted(answers)) == 1, [r.text for r in answers]
        for server in servers.values():
            with server.client() as http:
                used = http.get(f"/v1/accounts/{account}/titles/demo-title-2/downloads").json()["used"]
                assert used == 3
        load.accounts.append(account)
    check_history(url, load, policy=load_policy(policy_file))


# -- faults under load ----------------------------------------------------------------------


def _check_read_side(east: Server, load: RegionalLoad, title: str, url: str) -> float:
    """The read side (in dc1) shows every acknowledged command once; returns the seconds it took."""
    from downloads.bootstrap import bootstrap
    from downloads.settings import Settings

    keys = {a.key for a in load.acked}
    started = time.monotonic()

    def shown() -> bool:
        with east.client("support") as support:
            for key in sorted(keys):
                if support.get("/v1/lookup", params={"idempotency_key": key}).json()["accounts"]:
                    keys.discard(key)
        return not keys

    wait(shown, timeout=180, every=1.0, what="the read side showing every acknowledged command")
    seconds = time.monotonic() - started
    # Nothing doubled or missing: every license of the title once, and the downloads counted once.
    from downloads.domain.events import LicenseIssued

    checker = bootstrap(Settings(store=url.replace("create_schema=true", "consistency=ALL")))
    try:
        accounts = checker.service.accounts  # sealed fields open with the members' keys
        issued: set[str] = set()
        for account in load.accounts:
            for recorded in accounts.history(account):
                if isinstance(recorded.event, LicenseIssued) and recorded.event.title_id == title:
                    issued.add(recorded.event.license_id)
    finally:
        checker.close()

    def counted() -> bool:
        listed: list[str] = []
        with east.client("support") as support, east.client("admin") as admin:
            for status in ("active", "released"):
                after = None
                while True:
                    params = {"status": status, "limit": 500, **({"after": after} if after else {})}
                    page = support.get(f"/v1/titles/{title}/licenses", params=params).json()
                    listed += [lic["license_id"] for lic in page["licenses"]]
                    after = page["next"]
                    if after is None:
                        break
            rows = admin.get("/v1/reports/downloads", params={"title_id": title, "granularity": "month"}).json()
        downloads = sum(row["downloads"] for row in rows["rows"])
        assert len(listed) == len(set(listed)), "a license listed twice"
        return set(listed) == issued and downloads == len(issued)

    wait(counted, timeout=120, every=1.0, what="every license listed once and counted once")
    return seconds


def test_a_region_cut_off_under_load_answers_fast_and_loses_nothing_acknowledged(
    cluster: LocalCassandraCluster, servers: dict[str, Server], url: str, policy_file: Path
) -> None:
    east, south = servers["dc1"], servers["dc3"]
    title = _title(east)
    load = _load(servers, title)
    load.start()
    readiness: list[int] = []
    reads: list[tuple[int, float]] = []
    try:
        time.sleep(8)
        cut = time.monotonic()
        cluster.partition("dc3")
        try:
            time.sleep(4 + COMMAND_TIMEOUT)
            with south.client() as http:
                for _ in range(5):
                    ready = httpx.get(south.url + "/readyz", timeout=10)
                    readiness.append(ready.status_code)
                    assert ready.json() == {"status": "read_only"}
                    started = time.monotonic()
                    got = http.get(f"/v1/accounts/{load.accounts[0]}")
                    reads.append((got.status_code, time.monotonic() - started))
                    time.sleep(0.5)
            time.sleep(4)
        finally:
            healed = time.monotonic()
            cluster.heal()
        time.sleep(6)
    finally:
        load.stop()
    assert not load.errors, load.errors
    assert not load.unanswered, load.unanswered
    # dc1 and dc2 kept accepting while dc3 was cut off.
    assert load.acked_between(("dc1", "dc2"), cut, healed) > 0
    # dc3 answered fast: within the command bound, and at once after its first refusals.
    during = load.answered("dc3", cut + 0.5, healed)
    assert during, "dc3's clients sent nothing while it was cut off"
    slow = [(a.command, a.status, round(a.started - cut, 2), round(a.seconds, 2)) for a in during if a.seconds > 4]
    print(
        "SLOWEST",
        sorted(((round(a.seconds, 2), a.command, a.status, round(a.started - cut, 2)) for a in during), reverse=True)[
            :6
        ],
    )
    assert max(a.seconds for a in during) < COMMAND_TIMEOUT + 3, slow  # (command, status, sent after the cut, s)
    # Nothing acknowledged there (a change needs a global quorum); a refusal decided on its own
    # replicas (409) is an answer it can give.
    assert {a.status for a in during if a.started > cut + COMMAND_TIMEOUT + 2} <= {503, 409}
    late = [a.seconds for a in during if a.started > cut + COMMAND_TIMEOUT + 2 and a.status == 503]
    assert late and sorted(late)[len(late) // 2] < 0.5, late
    # It said so, and kept answering reads from its own replicas.
    assert readiness and all(status == 503 for status in readiness), readiness
    assert all(status == 200 and seconds < 1.0 for status, seconds in reads), reads
    checked = check_history(url, load, policy=load_policy(policy_file))
    assert checked["commands"] >= len(load.acked)
    caught_up = _check_read_side(east, load, title, url)
    print(f"cut: {len(load.acked)} acknowledged, read side caught up {caught_up:.1f}s after the checks began")


def test_a_region_killed_under_load_and_restarted_loses_nothing_acknowledged(
    cluster: LocalCassandraCluster, servers: dict[str, Server], url: str, policy_file: Path
) -> None:
    east = servers["dc1"]
    title = _title(east)
    load = _load(servers, title)
    load.start()
    try:
        time.sleep(8)
        killed = time.monotonic()
        cluster.kill_node(3)  # every node of dc3, SIGKILL
        try:
            time.sleep(10)
        finally:
            restarted = time.monotonic()
            cluster.start_node(3)
        time.sleep(6)
    finally:
        load.stop()
        if cluster.pid(3) is None:
            cluster.start_node(3)
    assert not load.errors, load.errors
    assert not load.unanswered, load.unanswered
    assert load.acked_between(("dc1", "dc2"), killed, restarted) > 0
    check_history(url, load, policy=load_policy(policy_file))
    _check_read_side(east, load, title, url)
