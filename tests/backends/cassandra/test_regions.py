"""Three regions on one machine: 127.0.0.1 in dc1, .2 in dc2, .3 in dc3, a keyspace {dc1: 1, dc2: 1, dc3: 1}.

A lightweight transaction at LOCAL_SERIAL runs Paxos in one data centre only, so
two regions could both win the same append; on this keyspace the store runs
Paxos at SERIAL (a global quorum, two of three) and refuses LOCAL_SERIAL unless
one region alone writes. These tests race service processes in two regions on
the same accounts for each limit, lose a whole region under load, and check
every acknowledged answer against the stores read at consistency ALL.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from eskit import EventCodec, open_stores
from eskit.exceptions import ConcurrencyError, SchemaError
from eskit.stores.cassandra import CassandraEventStore
from eskit.testing.contract import new_event
from tests.downloads.e2e.conftest import STRICT_POLICY
from tests.support.cassandra import ClusterPool, fresh_keyspace, store_url
from tests.support.server import Server, running_server

pytestmark = [pytest.mark.cassandra, pytest.mark.slow, pytest.mark.cluster(nodes=3, dcs=3)]

RACES = 8
MAX_ATTEMPTS = 10


def regional(url: str, dc: str) -> str:
    """The same store URL for a process in region ``dc``."""
    return url.replace("dc=dc1", f"dc={dc}")


def at_all(url: str) -> str:
    """The store URL read at consistency ALL (every replica answers)."""
    return url.replace("create_schema=true", "consistency=ALL")


@pytest.fixture(scope="module")
def regions(cluster_pool: ClusterPool) -> str:
    """A fresh keyspace on the three-region cluster; returns the dc1 store URL."""
    cluster = cluster_pool.get(3, dcs=3)
    assert cluster.data_centres == ["dc1", "dc2", "dc3"]
    url = store_url(cluster, fresh_keyspace("regions"))
    events = open_stores(url).events  # creates the keyspace
    events.close()
    return url


def test_a_store_at_local_serial_on_a_multi_region_keyspace_refuses_to_start(regions: str) -> None:
    with pytest.raises(SchemaError, match="LOCAL_SERIAL") as refused:
        open_stores(regions + "&serial_consistency=LOCAL_SERIAL")
    assert "single_writer_region" in str(refused.value)

    declared = open_stores(regions + "&serial_consistency=LOCAL_SERIAL&single_writer_region=true").events
    declared.close()


def test_the_store_runs_paxos_globally_when_the_keyspace_spans_regions(regions: str) -> None:
    from cassandra import ConsistencyLevel

    events = open_stores(regional(regions, "dc2")).events
    try:
        assert events.db.data_centres == ["dc1", "dc2", "dc3"]
        assert (events.db.serial_cl, events.db.write_cl) == (ConsistencyLevel.SERIAL, ConsistencyLevel.QUORUM)
    finally:
        events.close()


def _race(stores: list[CassandraEventStore], stream: str) -> list[int]:
    """Both regions append at version 0 at once; returns the indices of the stores that won."""
    barrier = threading.Barrier(len(stores))
    won: list[int] = []
    lock = threading.Lock()

    def attempt(i: int) -> None:
        barrier.wait()
        try:
            stores[i].append(stream, [new_event(i)], expected_version=0)
        except ConcurrencyError:
            return
        with lock:
            won.append(i)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return won


def test_two_regions_racing_on_one_version_never_both_win(regions: str) -> None:
    stores = [open_stores(regional(regions, dc)).events for dc in ("dc1", "dc2")]
    checker = open_stores(at_all(regions)).events
    try:
        for _ in range(40):
            stream = f"race-{uuid.uuid4().hex}"
            won = _race(stores, stream)
            assert len(won) == 1, f"{len(won)} regions won version 1 of {stream}"
            stored = checker.read(stream)
            assert [e.data for e in stored] == [b'{"n":%d}' % won[0]]
    finally:
        for store in (*stores, checker):
            store.close()


def send(http: httpx.Client, method: str, path: str, body: dict[str, Any] | None, key: str) -> httpx.Response:
    """Send a command, retrying failed attempts with the same key; return the first answer below 500."""
    last: object = None
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            response = http.request(method, path, json=body, headers={"Idempotency-Key": key})
            if response.status_code < 500:
                return response
            last = f"{response.status_code}: {response.text}"
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.3 * attempt)
    raise AssertionError(f"{method} {path} failed {MAX_ATTEMPTS} times, last: {last}")


def _concurrently(*calls: Callable[[], httpx.Response]) -> list[httpx.Response]:
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


@pytest.fixture(scope="module")
def two_regions(regions: str, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A service process in dc1 and one in dc2 on the same keyspace, with the strict policy."""
    tmp = tmp_path_factory.mktemp("regions")
    policy = tmp / "policy.toml"
    policy.write_text(STRICT_POLICY)
    (tmp / "dc1").mkdir()
    (tmp / "dc2").mkdir()
    with (
        running_server(tmp / "dc1", store=regions, policy=policy) as east,
        running_server(tmp / "dc2", store=regional(regions, "dc2"), policy=policy) as west,
    ):
        yield east, west


def _setup(server: Server, account: str, plan: str, devices: list[str]) -> None:
    with server.client() as http:
        assert send(http, "POST", "/v1/accounts", {"account_id": account, "plan": plan}, f"o-{account}").is_success
        for d in devices:
            body = {"device_id": d, "model": "phone"}
            assert send(http, "POST", f"/v1/accounts/{account}/devices", body, f"r-{account}-{d}").is_success


def _acquire(server: Server, account: str, device: str, title: str) -> Callable[[], httpx.Response]:
    def call() -> httpx.Response:
        with server.client() as http:
            body = {"device_id": device, "title_id": title}
            return send(http, "POST", f"/v1/accounts/{account}/licenses", body, f"k-{uuid.uuid4().hex}")

    return call


def _release_all(server: Server, account: str) -> None:
    with server.client() as http:
        for lic in http.get(f"/v1/accounts/{account}/licenses", params={"status": "active"}).json()["licenses"]:
            path = f"/v1/accounts/{account}/licenses/{lic['license_id']}"
            assert send(http, "DELETE", path, None, f"d-{lic['license_id']}").is_success


def _check_against_all(url: str, account: str, issued: list[str]) -> None:
    """Every acknowledged license is in the account's history read at ALL, exactly once."""
    store = open_stores(at_all(url)).events
    try:
        codec = EventCodec()
        stored = store.read(f"account-{account}")
        assert [e.position for e in stored] == list(range(1, len(stored) + 1))
        ids = [codec.serializer.loads(e.data)["license_id"] for e in stored if e.type_name == "LicenseIssued"]
        for license_id in issued:
            assert ids.count(license_id) == 1, (license_id, ids)
    finally:
        store.close()


def test_the_device_limit_holds_when_two_regions_race(two_regions: Any, regions: str) -> None:
    east, west = two_regions
    for _ in range(RACES):
        account = f"dev-{uuid.uuid4().hex[:10]}"
        _setup(east, account, "basic", ["d1", "d2"])
        answers = _concurrently(
            _acquire(east, account, "d1", "demo-title-1"), _acquire(west, account, "d2", "demo-title-1")
        )
        granted = [r.json()["license_id"] for r in answers if r.status_code == 201]
        assert len(granted) == 1, [r.text for r in answers]
        assert {r.status_code for r in answers} == {201, 409}
        with west.client() as http:
            assert http.get(f"/v1/accounts/{account}").json()["devices_with_downloads"] == 1
        _check_against_all(regions, account, granted)


def test_the_per_device_download_limit_holds_when_two_regions_race(two_regions: Any, regions: str) -> None:
    east, west = two_regions  # the strict policy: at most 2 active downloads per device
    for _ in range(RACES):
        account = f"per-{uuid.uuid4().hex[:10]}"
        _setup(east, account, "premium", ["d1"])
        first = _acquire(east, account, "d1", "demo-title-1")()
        assert first.status_code == 201
        with east.client("admin") as http:
            for t in ("t-a", "t-b"):
                assert http.put(f"/v1/titles/{t}", json={"studio": "default"}).status_code == 200
        answers = _concurrently(_acquire(east, account, "d1", "t-a"), _acquire(west, account, "d1", "t-b"))
        granted = [r.json()["license_id"] for r in answers if r.status_code == 201]
        assert len(granted) == 1, [r.text for r in answers]
        _check_against_all(regions, account, [first.json()["license_id"], *granted])


def test_the_title_limit_holds_when_two_regions_race(two_regions: Any, regions: str) -> None:
    east, west = two_regions  # demo-title-2 is restricted: 3 downloads per window
    for _ in range(RACES):
        account = f"tit-{uuid.uuid4().hex[:10]}"
        _setup(east, account, "premium", ["d1", "d2"])
        used = []
        for _ in range(2):
            got = _acquire(east, account, "d1", "demo-title-2")()
            assert got.status_code == 201
            used.append(got.json()["license_id"])
            _release_all(east, account)
        answers = _concurrently(
            _acquire(east, account, "d1", "demo-title-2"), _acquire(west, account, "d2", "demo-title-2")
        )
        granted = [r.json()["license_id"] for r in answers if r.status_code == 201]
        assert len(granted) == 1, [r.text for r in answers]
        for server in (east, west):
            with server.client() as http:
                assert http.get(f"/v1/accounts/{account}/titles/demo-title-2/downloads").json()["used"] == 3
        _check_against_all(regions, account, [*used, *granted])


def test_losing_a_whole_region_under_load_loses_no_acknowledged_command(
    cluster_pool: ClusterPool, two_regions: Any, regions: str
) -> None:
    cluster = cluster_pool.get(3, dcs=3)
    east, west = two_regions
    accounts = [f"loss-{uuid.uuid4().hex[:8]}-{i}" for i in range(4)]
    for account in accounts:
        _setup(east, account, "premium", ["d1"])
    acked: list[tuple[str, str]] = []  # account, license id of every 201
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def load(server: Server, account: str) -> None:
        try:
            with server.client() as http:
                while not stop.is_set():
                    got = send(
                        http,
                        "POST",
                        f"/v1/accounts/{account}/licenses",
                        {"device_id": "d1", "title_id": "demo-title-1"},
                        f"l-{uuid.uuid4().hex}",
                    )
                    assert got.status_code in (200, 201), got.text
                    license_id = got.json()["license_id"]
                    with lock:
                        acked.append((account, license_id))
                    path = f"/v1/accounts/{account}/licenses/{license_id}"
                    assert send(http, "DELETE", path, None, f"u-{uuid.uuid4().hex}").status_code == 200
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=load, args=(server, account))
        for server, account in zip([east, west, east, west], accounts, strict=True)
    ]
    for t in threads:
        t.start()
    try:
        time.sleep(4)
        cluster.stop_node(3)  # every node of dc3
        before = len(acked)
        time.sleep(12)
        while_down = len(acked) - before
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=180)
        if cluster.pid(3) is None:
            cluster.start_node(3)
    assert not errors, errors
    assert while_down > 0, "no command succeeded while dc3 was down"
    for account in accounts:
        _check_against_all(regions, account, [lic for a, lic in acked if a == account])
    print(f"acknowledged {len(acked)} acquires, {while_down} while dc3 was down")
