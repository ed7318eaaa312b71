"""Three regions 70 ms apart: what a command costs against Paxos's own floor, and a region cut off under load."""

from __future__ import annotations

import functools
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import goal_at_least, goal_at_most, median, progress, scratch_dir

NAME = "regions_wan"
TITLE = "Regions 70 ms apart: accepted commands against a raw SERIAL append, reads, and a region cut off under load"

WAN_MS = 70.0
REGIONS = ("dc1", "dc2", "dc3")
PAYLOAD = b'{"license_id":"' + b"x" * 36 + b'","device_id":"d1","title_id":"demo-title-1"}'


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class _RawAppender:
    """The contender: the driver alone appending one event with the store's conditional batch."""

    def __init__(self, hosts: list[str], keyspace: str, dc: str) -> None:
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

        profile = ExecutionProfile(load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=dc)))
        self.cluster = Cluster(
            hosts,
            protocol_version=5,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            sockopts=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],  # as the store's session
        )
        self.session = self.cluster.connect()
        where = "WHERE stream_id = ? AND bucket = ?"
        self.set_head_if_null = self.session.prepare(f"UPDATE {keyspace}.events SET head = ? {where} IF head = null")
        self.set_head_if = self.session.prepare(f"UPDATE {keyspace}.events SET head = ? {where} IF head = ?")
        self.insert = self.session.prepare(
            f"INSERT INTO {keyspace}.events (stream_id, bucket, position, event_id, type_name, schema_version,"
            " data, metadata, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self.streams: dict[str, int] = {}

    def append(self, stream: str, commit_level: str) -> float:
        """One conditional append to ``stream`` at SERIAL, committed at ``commit_level``; returns its seconds."""
        from cassandra import ConsistencyLevel
        from cassandra.query import BatchStatement, BatchType

        version = self.streams.get(stream, 0)
        batch = BatchStatement(
            batch_type=BatchType.UNLOGGED,
            consistency_level=getattr(ConsistencyLevel, commit_level),
            serial_consistency_level=ConsistencyLevel.SERIAL,
        )
        if version == 0:
            batch.add(self.set_head_if_null, (1, stream, 0))
        else:
            batch.add(self.set_head_if, (version + 1, stream, 0, version))
        micros = int(time.time() * 1_000_000)
        batch.add(self.insert, (stream, 0, version + 1, uuid.uuid4(), "LicenseIssued", 1, PAYLOAD, b"{}", micros))
        started = time.perf_counter()
        result = self.session.execute(batch)
        seconds = time.perf_counter() - started
        if not result.was_applied:
            raise AssertionError("a raw conditional append was refused")
        self.streams[stream] = version + 1
        return seconds

    def close(self) -> None:
        self.cluster.shutdown()


def _level_name(level: Any) -> str:
    from cassandra import ConsistencyLevel

    return str(ConsistencyLevel.value_to_name[level])


def _region(url: str, hosts: list[str], keyspace: str, dc: str, rounds: int) -> tuple[dict[str, list[float]], str]:
    """From region ``dc``: acquire, read, release and raw appends, interleaved, one at a time."""
    from downloads.application import AcquireLicense, OpenAccount, RegisterDevice, ReleaseLicense
    from downloads.bootstrap import bootstrap
    from downloads.settings import Settings
    from tests.support.cassandra import MASTER_KEY
    from tests.support.regions import regional

    # Cassandra is production mode: every region's process wraps members' keys with one master key
    runtime = bootstrap(Settings(store=regional(url, dc), master_key=MASTER_KEY))
    db = runtime.stores.events.db  # type: ignore[attr-defined]
    commit_level = _level_name(getattr(db, "commit_cl", db.write_cl))
    raw = _RawAppender(hosts, keyspace, dc)
    service = runtime.service
    times: dict[str, list[float]] = {"acquire": [], "release": [], "read": [], "raw": [], "raw_quorum": []}

    def timed(name: str, call: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        result = call()
        times[name].append(time.perf_counter() - started)
        return result

    try:
        account = f"wan-{dc}-{uuid.uuid4().hex[:8]}"
        service.handle(OpenAccount(account, "standard"))
        service.handle(RegisterDevice(account, "d1", "phone"))
        stream, other = f"raw-{dc}-{uuid.uuid4().hex}", f"rawq-{dc}-{uuid.uuid4().hex}"
        raw.append(stream, commit_level)
        raw.append(other, "QUORUM")
        acquire = AcquireLicense(account, "d1", "demo-title-1")
        for _ in range(rounds):
            license_id = timed("acquire", lambda: service.handle(acquire)).body["license_id"]
            timed("read", lambda: service.get_account(account))
            timed("release", functools.partial(service.handle, ReleaseLicense(account, license_id)))
            times["raw"].append(raw.append(stream, commit_level))
            times["raw_quorum"].append(raw.append(other, "QUORUM"))
    finally:
        raw.close()
        runtime.close()
    return times, commit_level


def _latencies(url: str, hosts: list[str], keyspace: str, rounds: int) -> tuple[list[dict[str, Any]], str]:
    """Per region in turn: p50 and p99 of each case."""
    rows: list[dict[str, Any]] = []
    commit_level = "?"
    for dc in REGIONS:
        times, commit_level = _region(url, hosts, keyspace, dc, rounds)
        for name, label in (
            ("acquire", "acquire, accepted"),
            ("release", "release"),
            ("read", "read the account (GET)"),
            ("raw", f"raw SERIAL conditional append, commit {commit_level}"),
            ("raw_quorum", "raw SERIAL conditional append, commit QUORUM"),
        ):
            rows.append(
                {
                    "region": dc,
                    "case": label,
                    "p50 ms": median(times[name]) * 1000,
                    "p99 ms": _percentile(times[name], 0.99) * 1000,
                }
            )
        progress(
            f"{dc}: acquire p50 {median(times['acquire']) * 1000:.0f} ms, raw {median(times['raw']) * 1000:.0f} ms, "
            f"read {median(times['read']) * 1000:.1f} ms"
        )
    return rows, commit_level


def _partition(cluster: Any, url: str, phase: float, tmp: Path) -> dict[str, Any]:
    """Clients in every region; dc3 cut off for ``phase`` seconds; the read side (in dc1) after the heal."""
    from tests.downloads.e2e.conftest import STRICT_POLICY
    from tests.support.regions import RegionalLoad, regional, wait
    from tests.support.server import running_server

    policy = tmp / "policy.toml"
    policy.write_text(STRICT_POLICY)
    for dc in REGIONS:
        (tmp / dc).mkdir()
    accounts = [f"cut-{uuid.uuid4().hex[:8]}-{i}" for i in range(6)]
    servers: dict[str, Any] = {}
    with (
        running_server(tmp / "dc1", store=regional(url, "dc1"), policy=policy, read_side=True) as east,
        running_server(tmp / "dc2", store=regional(url, "dc2"), policy=policy) as west,
        running_server(tmp / "dc3", store=regional(url, "dc3"), policy=policy) as south,
    ):
        servers = {"dc1": east, "dc2": west, "dc3": south}
        load = RegionalLoad(servers, accounts, clients_per_region=2)
        with east.client() as http:  # two devices of an account may hold downloads; six compete
            for account in accounts:
                assert http.post("/v1/accounts", json={"account_id": account, "plan": "standard"}).is_success
                for device in load.devices():
                    body = {"device_id": device, "model": "phone"}
                    assert http.post(f"/v1/accounts/{account}/devices", json=body).is_success
        load.start()
        try:
            time.sleep(phase)
            cut = time.monotonic()
            cluster.partition("dc3")
            try:
                time.sleep(phase)
            finally:
                healed = time.monotonic()
                cluster.heal()
        finally:
            load.stop()
        errors = [a for a in load.attempts if a.status >= 500 or a.status == 0]
        dc3_cut = [a for a in load.answered("dc3", cut, healed) if a.status == 503]
        fast = [a for a in dc3_cut if a.seconds < 0.5]
        first_fast = min((a.started + a.seconds for a in fast), default=None)
        before = load.acked_between(("dc1", "dc2"), cut - phase, cut) / phase
        during = load.acked_between(("dc1", "dc2"), cut, healed) / phase
        keys = [a.key for a in load.acked]

        def visible() -> bool:
            nonlocal keys
            with east.client("support") as http:
                keys = [k for k in keys if not http.get("/v1/lookup", params={"idempotency_key": k}).json()["accounts"]]
            return not keys

        wait(visible, timeout=300, every=1.0, what="the read side showing every acknowledged command")
        after_heal = time.monotonic() - healed
    return {
        "before": before,
        "during": during,
        "first_fast": None if first_fast is None else first_fast - cut,
        "dc3_503": len(dc3_cut),
        "dc3_503_p50": median([a.seconds for a in dc3_cut]) if dc3_cut else None,
        "dc3_503_p99": _percentile([a.seconds for a in dc3_cut], 0.99) if dc3_cut else None,
        "caught_up": after_heal,
        "acked": len(load.acked),
        "errors": len(errors),
    }


def run(quick: bool) -> dict[str, Any]:
    try:
        import cassandra  # noqa: F401
    except ImportError:
        return {"skipped": "the cassandra-driver package is not installed"}
    if shutil.which("mvn") is None and not Path(".cache/cassandra").exists():
        return {"skipped": "no Maven to fetch Cassandra with"}
    if shutil.which("go") is None and not Path(".cache/toxiproxy").exists():
        return {"skipped": "no Go to build Toxiproxy with"}
    from bench._requests import count_commands, table
    from eskit import open_stores
    from tools.cassandra_cluster import LocalCassandraCluster

    cluster = LocalCassandraCluster(3, dcs=3)
    progress("three-region cluster: starting")
    cluster.start()
    try:
        cluster.set_wan(WAN_MS)
        hosts = list(cluster.contact_points)
        keyspace = f"bench_wan_{uuid.uuid4().hex[:8]}"
        url = f"cassandra://{','.join(hosts)}/{keyspace}?dc=dc1&replication=dc1:1,dc2:1,dc3:1&create_schema=true"
        open_stores(url).close()
        rounds = 10 if quick else 40
        rows, commit_level = _latencies(url, hosts, keyspace, rounds)
        progress("requests per command")
        counts = {row["command"]: row for row in table(count_commands(url))}
        progress("partition under load")
        with scratch_dir() as tmp:
            cut = _partition(cluster, url, 10.0 if quick else 20.0, tmp)
    finally:
        cluster.heal() if cluster.is_running() else None
        cluster.stop(wipe=True)
    by = {(r["region"], r["case"].split(",")[0]): r for r in rows}
    goals = []
    for dc in REGIONS:
        acquire = by[(dc, "acquire")]["p50 ms"]
        raw = next(r["p50 ms"] for r in rows if r["region"] == dc and r["case"].endswith(commit_level))
        goals.append(goal_at_most(f"{dc}: accepted acquire p50 / raw SERIAL append p50 (≤ 1.15)", acquire / raw, 1.15))
        read = by[(dc, "read the account (GET)")]["p50 ms"]
        goals.append(goal_at_most(f"{dc}: read p50 / one round trip (≤ 0.2)", read / WAN_MS, 0.2))
    if cut["first_fast"] is not None:
        goals.append(goal_at_most("seconds from the cut to dc3's first fast 503 (≤ 10)", cut["first_fast"], 10.0))
    goals.append(
        goal_at_least("dc1+dc2 commands/s during the cut / before it (≥ 0.5)", cut["during"] / cut["before"], 0.5)
    )
    notes = [
        f"Commit level of the appends: {commit_level}. Partition (dc3 cut off for the middle phase, clients in all "
        f"three regions): dc1+dc2 acknowledged {cut['before']:.1f} commands/s before the cut and {cut['during']:.1f} "
        f"during it; dc3 answered {cut['dc3_503']} commands 503 while cut off (p50 {_ms(cut['dc3_503_p50'])}, "
        f"p99 {_ms(cut['dc3_503_p99'])}), the first fast one (< 0.5 s) {_s(cut['first_fast'])} after the cut; "
        f"{cut['acked']} commands acknowledged in all, every one with its key; the read side (in dc1) showed "
        f"every acknowledged command {cut['caught_up']:.1f} s after the heal.",
    ]
    return {
        "title": TITLE,
        "method": (
            f"A local cluster of three one-node data centres (Cassandra 5.0, Paxos v2, all on this 2-core machine), "
            f"every connection between regions through a Toxiproxy proxy adding {WAN_MS:.0f} ms per round trip "
            f"(35 ms each way), keyspace {{dc1: 1, dc2: 1, dc3: 1}}. Latencies: from each region in turn, the "
            f"service in process (`bootstrap`, command cache on) on one account, {rounds} rounds of an accepted "
            f"acquire, a read of the account, a release, and the raw driver's conditional append of one event "
            f"(`UPDATE events SET head ... IF head = ?` + the event row, SERIAL) committed at the store's commit "
            f"level and at QUORUM, one at a time. Requests per command: a driver request listener on the service's "
            f"session (see `bench/_requests.py`). Partition: a `downloads serve` process per region (the read side "
            f"runs in dc1's), two clients per region on six shared accounts sending keyed acquire/release cycles and "
            f"resending a failed command with its key; dc3 is cut off (its proxies disabled) for the middle phase."
        ),
        "rows": [_with_requests(row, counts) for row in rows],
        "goals": goals,
        "notes": notes,
    }


def _with_requests(row: dict[str, Any], counts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A latency row with the requests its command sends and the cross-region round trips it waits for."""
    found = counts.get(row["case"])
    if found is None:
        return {**row, "requests": None, "round trips": None, "which": None}
    return {**row, "requests": found["requests"], "round trips": found["round trips"], "which": found["which"]}


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _s(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.1f} s"
