"""Cassandra: eskit's conditional append against the raw driver, the cost of linearizability,
and the service on a 3-node cluster against the service on SQLite."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import goal_at_least, median, progress, scratch_dir
from downloads.application import AcquireLicense, OpenAccount, RegisterDevice, ReleaseLicense, StartPlayback

NAME = "cassandra"
TITLE = "Cassandra: conditional appends, the cost of linearizability, the service on 3 nodes"

PAYLOAD = b'{"license_id":"' + b"x" * 36 + b'","device_id":"d1","title_id":"demo-title-1"}'
METADATA = b'{"request_id":"bench-0123456789abcdef","command":"acquire_license"}'
CONCURRENCY = 16
BUCKET_SIZE = 10_000  # the store's default, stated so the raw contender writes the same buckets


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _run_threads(threads: int, work: Callable[[int], list[float]]) -> tuple[float, list[float]]:
    """Run ``work(thread_index)`` in ``threads`` threads at once; return (ops/s, latencies)."""
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)

    def body(i: int) -> None:
        try:
            start.wait()
            latencies[i] = work(i)
        except BaseException as exc:  # reported after the run
            errors.append(exc)

    pool = [threading.Thread(target=body, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in pool:
        t.join(timeout=600)
    elapsed = time.perf_counter() - began
    if errors:
        raise errors[0]
    flat = [x for per in latencies for x in per]
    return len(flat) / elapsed, flat


class _RawDriver:
    """The contender: the driver alone, its own session and statements, on the keyspace eskit created."""

    def __init__(self, hosts: list[str], keyspace: str) -> None:
        from cassandra import ConsistencyLevel
        from cassandra.cluster import Cluster
        from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

        self.cluster = Cluster(
            hosts, protocol_version=5, load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy("dc1"))
        )
        self.session = self.cluster.connect()
        self.cl, self.serial_cl = ConsistencyLevel.LOCAL_QUORUM, ConsistencyLevel.LOCAL_SERIAL
        prepare = self.session.prepare
        where = "WHERE stream_id = ? AND bucket = ?"
        self.set_head = prepare(f"UPDATE {keyspace}.events SET head = ? {where}")
        self.set_head_if = prepare(f"UPDATE {keyspace}.events SET head = ? {where} IF head = ?")
        self.set_head_if_null = prepare(f"UPDATE {keyspace}.events SET head = ? {where} IF head = null")
        self.insert_event = prepare(
            f"INSERT INTO {keyspace}.events (stream_id, bucket, position, event_id, type_name, schema_version,"
            " data, metadata, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )

    def close(self) -> None:
        self.cluster.shutdown()


def _append_contenders(store: Any, db: _RawDriver, per_thread: int) -> dict[str, Callable[[int], list[float]]]:
    """Ours (CassandraEventStore.append), the raw driver with the identical conditional batch,
    and the raw driver with the same rows written unconditionally."""
    from cassandra.query import BatchStatement, BatchType

    from eskit import NewEvent

    bucket_size = BUCKET_SIZE
    now = datetime.now(UTC)
    micros = int(now.timestamp() * 1_000_000)

    def ours(i: int) -> list[float]:
        stream = f"ours-{uuid.uuid4().hex}"
        out = []
        for v in range(per_thread):
            event = NewEvent("LicenseIssued", 1, PAYLOAD, METADATA, now)
            t = time.perf_counter()
            store.append(stream, [event], expected_version=v)
            out.append(time.perf_counter() - t)
        return out

    def raw(conditional: bool) -> Callable[[int], list[float]]:
        def work(i: int) -> list[float]:
            stream = f"raw-{uuid.uuid4().hex}"
            out = []
            for v in range(per_thread):
                bucket = v // bucket_size
                batch = BatchStatement(
                    batch_type=BatchType.UNLOGGED, consistency_level=db.cl, serial_consistency_level=db.serial_cl
                )
                if not conditional:
                    batch.add(db.set_head, (v + 1, stream, bucket))
                elif v % bucket_size == 0:
                    batch.add(db.set_head_if_null, (v + 1, stream, bucket))
                else:
                    batch.add(db.set_head_if, (v + 1, stream, bucket, v))
                batch.add(
                    db.insert_event,
                    (stream, bucket, v + 1, uuid.uuid4(), "LicenseIssued", 1, PAYLOAD, METADATA, micros),
                )
                t = time.perf_counter()
                result = db.session.execute(batch)
                out.append(time.perf_counter() - t)
                if conditional and not result.was_applied:
                    raise AssertionError("a raw conditional append was refused")
            return out

        return work

    return {
        "eskit append (conditional)": ours,
        "raw driver, same conditional batch": raw(True),
        "raw driver, same rows unconditional": raw(False),
    }


def _measure_appends(nodes: int, quick: bool, rows: list[dict[str, Any]]) -> dict[str, float]:
    from eskit import open_stores
    from tools.cassandra_cluster import LocalCassandraCluster

    cluster = LocalCassandraCluster(nodes)
    progress(f"{nodes}-node cluster: starting")
    cluster.start()
    try:
        hosts = ",".join(cluster.contact_points)
        keyspace = f"bench_{uuid.uuid4().hex[:8]}"
        url = f"cassandra://{hosts}/{keyspace}?dc=dc1&replication={nodes}&bucket_size={BUCKET_SIZE}&create_schema=true"
        store = open_stores(url).events
        raw = _RawDriver(list(cluster.contact_points), keyspace)
        try:
            per_thread = 15 if quick else 60
            contenders = _append_contenders(store, raw, per_thread)
            rates: dict[str, list[float]] = {name: [] for name in contenders}
            lats: dict[str, list[float]] = {name: [] for name in contenders}
            names = list(contenders)
            rounds = 2 if quick else 4
            for r in range(rounds):
                for name in names[r % 3 :] + names[: r % 3]:
                    rate, latencies = _run_threads(CONCURRENCY, contenders[name])
                    rates[name].append(rate)
                    lats[name].extend(latencies)
                    progress(f"{nodes} node(s), round {r + 1}/{rounds}: {name}: {rate:,.0f} appends/s")
            for name in names:
                rows.append(
                    {
                        "cluster": f"{nodes} node{'s' if nodes > 1 else ''}",
                        "case": name,
                        "appends/s": median(rates[name]),
                        "p50 ms": median(lats[name]) * 1000,
                        "p99 ms": _percentile(lats[name], 0.99) * 1000,
                    }
                )
            return {name: median(rates[name]) for name in names}
        finally:
            raw.close()
            store.close()
    finally:
        cluster.stop(wipe=True)


def _service_rate(store_url: str, accounts: int, rounds: int) -> float:
    from downloads.bootstrap import bootstrap
    from downloads.settings import Settings
    from eskit.privacy import MasterKey

    app = bootstrap(Settings(store=store_url, master_key=MasterKey.generate().text()))  # production mode
    service = app.service
    prefix = uuid.uuid4().hex[:6]
    try:
        for a in range(accounts):
            service.handle(OpenAccount(f"{prefix}-{a}", "standard"))
            service.handle(RegisterDevice(f"{prefix}-{a}", "d1", "phone"))

        def work(i: int) -> list[float]:
            account = f"{prefix}-{i}"
            out = []
            for _ in range(rounds):
                t = time.perf_counter()
                license_id = service.handle(AcquireLicense(account, "d1", "demo-title-1")).body["license_id"]
                service.handle(StartPlayback(account, license_id))
                service.handle(ReleaseLicense(account, license_id))
                out.extend([(time.perf_counter() - t) / 3] * 3)
            return out

        rate, _ = _run_threads(accounts, work)
        return rate
    finally:
        app.close()


def _measure_service(quick: bool, rows: list[dict[str, Any]]) -> float:
    from tools.cassandra_cluster import LocalCassandraCluster

    cluster = LocalCassandraCluster(3)
    progress("3-node cluster: starting for the service comparison")
    cluster.start()
    try:
        hosts = ",".join(cluster.contact_points)
        cassandra_url = (
            f"cassandra://{hosts}/bench_service_{uuid.uuid4().hex[:8]}?dc=dc1&replication=3&create_schema=true"
        )
        rounds = 5 if quick else 20
        results: dict[str, list[float]] = {"SQLite (one file)": [], "Cassandra, 3 nodes, RF 3": []}
        with scratch_dir() as tmp:
            for r in range(2 if quick else 3):
                for name in list(results) if r % 2 == 0 else list(reversed(results)):
                    url = f"sqlite:///{tmp / f'svc-{r}.db'}" if name.startswith("SQLite") else cassandra_url
                    rate = _service_rate(url, CONCURRENCY, rounds)
                    results[name].append(rate)
                    progress(f"service round {r + 1}: {name}: {rate:,.0f} commands/s")
        for name, rates in results.items():
            rows.append(
                {
                    "cluster": "service",
                    "case": f"{name}: acquire/play/release, {CONCURRENCY} threads",
                    "appends/s": median(rates),
                    "p50 ms": None,
                    "p99 ms": None,
                }
            )
        return median(results["Cassandra, 3 nodes, RF 3"]) / median(results["SQLite (one file)"])
    finally:
        cluster.stop(wipe=True)


def run(quick: bool) -> dict[str, Any]:
    try:
        import cassandra  # noqa: F401
    except ImportError:
        return {"skipped": "the cassandra-driver package is not installed (pip install '.[cassandra]')"}
    if shutil.which("mvn") is None and not Path(".cache/cassandra").exists():
        return {"skipped": "no Maven to fetch Cassandra with"}
    rows: list[dict[str, Any]] = []
    goals = []
    notes = []
    for nodes in (1, 3):
        rates = _measure_appends(nodes, quick, rows)
        ours = rates["eskit append (conditional)"]
        raw = rates["raw driver, same conditional batch"]
        plain = rates["raw driver, same rows unconditional"]
        goals.append(
            goal_at_least(f"{nodes} node(s): eskit append ≥ 0.8 of the raw driver's conditional batch", ours / raw, 0.8)
        )
        notes.append(
            f"{nodes} node(s): a conditional append has {raw / plain:.2f}x the throughput of the same rows "
            f"written unconditionally (the price of linearizability)."
        )
    service_ratio = _measure_service(quick, rows)
    notes.append(
        f"Service on the 3-node cluster: {service_ratio:.2f}x the command throughput of the same service "
        "on one SQLite file (both at 16 threads, every command durable)."
    )
    return {
        "title": TITLE,
        "method": (
            f"Local clusters started by `tools.cassandra_cluster` (Cassandra 5.0, 512 MB heap per node, "
            f"all nodes on this 2-core machine), keyspace with replication factor = node count, LOCAL_QUORUM "
            f"and LOCAL_SERIAL. Appends: {CONCURRENCY} threads, each appending one event at a time to its own "
            f"stream (so no contention), sequential versions. `eskit append` is `CassandraEventStore.append`; "
            f"the raw driver executes the identical conditional batch (`UPDATE events SET head = ? ... IF head = ?` "
            f"+ the event row, same prepared statements, same consistency) with `session.execute`; the "
            f"unconditional case writes the same rows without the `IF`. The three run in rotating order, "
            f"several rounds, medians of per-round throughput; latencies pooled over rounds. Service: "
            f"`DownloadsService` with {CONCURRENCY} threads, each on its own account (acquire, play, release), "
            f"on a fresh SQLite file and on the 3-node cluster, alternating."
        ),
        "rows": rows,
        "goals": goals,
        "notes": notes,
    }
