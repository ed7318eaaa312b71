"""The price of global linearizability: the service on three regions at SERIAL against LOCAL_SERIAL."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.harness import median, progress
from downloads.application import AcquireLicense, OpenAccount, RegisterDevice, ReleaseLicense

NAME = "regions"
TITLE = "Regions: the service on three one-node regions, SERIAL against LOCAL_SERIAL with one writing region"

THREADS = 8
SERIAL = "SERIAL, every region may write (the default)"
LOCAL = "LOCAL_SERIAL, single_writer_region=true"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _service_round(url: str, commands: int) -> tuple[float, list[float]]:
    """Commands per second and per-command latencies of acquire+release pairs on THREADS accounts."""
    from downloads.bootstrap import bootstrap
    from downloads.settings import Settings
    from eskit.privacy import MasterKey

    app = bootstrap(Settings(store=url, master_key=MasterKey.generate().text()))  # production mode
    service = app.service
    prefix = uuid.uuid4().hex[:6]
    latencies: list[float] = []
    lock = threading.Lock()
    try:
        for a in range(THREADS):
            service.handle(OpenAccount(f"{prefix}-{a}", "standard"))
            service.handle(RegisterDevice(f"{prefix}-{a}", "d1", "phone"))

        def work(i: int) -> None:
            account, mine = f"{prefix}-{i}", []
            for _ in range(commands // 2):
                t0 = time.perf_counter()
                license_id = service.handle(AcquireLicense(account, "d1", "demo-title-1")).body["license_id"]
                t1 = time.perf_counter()
                service.handle(ReleaseLicense(account, license_id))
                mine += [t1 - t0, time.perf_counter() - t1]
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(THREADS)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return len(latencies) / (time.perf_counter() - started), latencies
    finally:
        app.close()


def run(quick: bool) -> dict[str, Any]:
    try:
        import cassandra  # noqa: F401
    except ImportError:
        return {"skipped": "the cassandra-driver package is not installed"}
    if shutil.which("mvn") is None and not Path(".cache/cassandra").exists():
        return {"skipped": "no Maven to fetch Cassandra with"}
    from tools.cassandra_cluster import LocalCassandraCluster

    cluster = LocalCassandraCluster(3, dcs=3)
    progress("three-region cluster: starting")
    cluster.start()
    try:
        hosts = ",".join(cluster.contact_points)
        keyspace = f"bench_regions_{uuid.uuid4().hex[:8]}"
        base = f"cassandra://{hosts}/{keyspace}?dc=dc1&replication=dc1:1,dc2:1,dc3:1"
        urls = {
            SERIAL: base + "&create_schema=true",
            LOCAL: base + "&serial_consistency=LOCAL_SERIAL&single_writer_region=true",
        }
        commands = 20 if quick else 60
        rounds = 2 if quick else 4
        rates: dict[str, list[float]] = {name: [] for name in urls}
        lats: dict[str, list[float]] = {name: [] for name in urls}
        for r in range(rounds):
            for name in list(urls) if r % 2 == 0 else list(reversed(urls)):
                rate, latencies = _service_round(urls[name], commands)
                rates[name].append(rate)
                lats[name].extend(latencies)
                progress(f"round {r + 1}/{rounds}: {name}: {rate:,.0f} commands/s")
    finally:
        cluster.stop(wipe=True)
    rows = [
        {
            "case": name,
            "commands/s": median(rates[name]),
            "p50 ms": median(lats[name]) * 1000,
            "p99 ms": _percentile(lats[name], 0.99) * 1000,
        }
        for name in urls
    ]
    ratio = median(rates[SERIAL]) / median(rates[LOCAL])
    return {
        "title": TITLE,
        "method": (
            f"A local cluster of three one-node data centres (127.0.0.1 in dc1, .2 in dc2, .3 in dc3, Cassandra "
            f"5.0, Paxos v2, 512 MB heap each, all on this 2-core machine), keyspace {{dc1: 1, dc2: 1, dc3: 1}}. "
            f"`DownloadsService` in dc1 with {THREADS} threads, each on its own account, sending acquire+release "
            f"pairs ({commands} commands per thread per round); every command is one conditional append. "
            f"SERIAL runs each Paxos round across a global quorum (two of three regions) and commits at QUORUM; "
            f"LOCAL_SERIAL with one writing region runs Paxos and the commit inside dc1 (one replica there). "
            f"{rounds} rounds alternate the order; medians of per-round throughput, latencies pooled."
        ),
        "rows": rows,
        "goals": [],
        "notes": [
            f"SERIAL has {ratio:.2f}x the throughput of LOCAL_SERIAL here. On loopback a cross-region round trip "
            "costs what a local one does, so this measures the extra replicas' work, not distance: with Paxos v2 "
            "an append at SERIAL waits for 2 cross-region round trips (prepare with the read, propose; the commit "
            "waits for the local replicas); at LOCAL_SERIAL with one writing region it waits for none. "
            "`regions_wan` measures them at 70 ms between regions."
        ],
    }
