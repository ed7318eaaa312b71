"""The data tools: export, import and copy rates against the store's raw read and write rates, and their memory."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.harness import goal_at_least, goal_at_most, median, progress, scratch_dir
from eskit.stores.sqlite.schema import FEED_INDEX, INSERT_EVENT, PRAGMAS, SCHEMA

NAME = "data_tools"
TITLE = "Data tools: export, import and copy against raw reads and writes, peak memory flat in store size"

_TEMPLATE_ACCOUNTS = 20


def _template(workdir: Path) -> list[tuple[Any, ...]]:
    """The rows of a few accounts the service built (devices, licenses, renewals, syncs, keys), as stored."""
    from downloads.bootstrap import bootstrap
    from downloads.settings import Settings
    from tests.support.history import build_history

    url = f"sqlite:///{workdir / 'template.db'}"
    runtime = bootstrap(Settings(store=url, snapshot_every=0))
    build_history(runtime.service, _TEMPLATE_ACCOUNTS)
    runtime.close()
    conn = sqlite3.connect(workdir / "template.db")
    rows = conn.execute(
        "SELECT stream_id, position, type_name, schema_version, data, metadata, recorded_at FROM events"
        " WHERE stream_id LIKE 'account-%' ORDER BY seq"
    ).fetchall()
    conn.close()
    return rows


def _make_store(path: Path, template: list[tuple[Any, ...]], accounts: int) -> int:
    """A SQLite store of ``accounts`` accounts, copies of the template's with their own ids; returns its events."""
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in PRAGMAS:
        conn.execute(pragma)
    for statement in SCHEMA:
        conn.execute(statement)
    conn.execute(FEED_INDEX)
    seq = 0
    conn.execute("BEGIN")
    for copy in range(accounts // _TEMPLATE_ACCOUNTS):
        rows = []
        for stream, position, type_name, version, data, meta, at in template:
            seq += 1
            rows.append((f"{stream}-{copy}", position, uuid.uuid4().bytes, type_name, version, data, meta, at, seq))
        conn.executemany(INSERT_EVENT, rows)
        if copy % 500 == 499:
            conn.execute("COMMIT")
            conn.execute("BEGIN")
    conn.execute("COMMIT")
    conn.close()
    return seq


def _raw_read(path: Path) -> float:
    """Every event row read in commit order with plain sqlite3: the rate the export is measured against."""
    conn = sqlite3.connect(path)
    started = time.perf_counter()
    count = sum(1 for _ in conn.execute("SELECT * FROM events ORDER BY seq"))
    took = time.perf_counter() - started
    conn.close()
    return count / took


def _raw_write(source: Path, target: Path) -> float:
    """The same rows through plain sqlite3 in fsynced transactions of 2,000: what imports are measured against."""
    read = sqlite3.connect(source)
    conn = sqlite3.connect(target, isolation_level=None)
    for pragma in PRAGMAS:
        conn.execute(pragma)
    for statement in SCHEMA:
        conn.execute(statement)
    conn.execute(FEED_INDEX)
    started = time.perf_counter()
    cursor = read.execute(
        "SELECT stream_id, position, event_id, type_name, schema_version, data, metadata, recorded_at, seq"
        " FROM events ORDER BY seq"
    )
    count = 0
    while batch := cursor.fetchmany(2000):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT_EVENT, batch)
        conn.execute("COMMIT")
        count += len(batch)
    took = time.perf_counter() - started
    conn.close()
    read.close()
    return count / took


def _tool(args: list[str], env: dict[str, str] | None = None) -> tuple[float, int]:
    """Run ``downloads ARGS`` in a child process; return its wall time and peak resident memory (KiB)."""
    code = (
        "import resource, sys\n"
        "from downloads.entrypoints.cli import main\n"
        "status = main(sys.argv[1:])\n"
        "print('peak-kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
        "sys.exit(status)\n"
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=3600,
        env={**os.environ, **(env or {})},
    )
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"downloads {' '.join(args)} failed: {done.stderr[-2000:]}")
    peak = next(int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("peak-kib"))
    return took, peak


def _sqlite_rows(
    workdir: Path, template: list[tuple[Any, ...]], accounts: int
) -> tuple[list[dict[str, Any]], dict[str, float]]:
    source = workdir / f"source-{accounts}.db"
    events = _make_store(source, template, accounts)
    progress(f"SQLite, {accounts:,} accounts ({events:,} events)")
    read = median([_raw_read(source) for _ in range(3)])
    writes = []
    for r in range(2):
        target = workdir / f"raw-{accounts}-{r}.db"
        writes.append(_raw_write(source, target))
        target.unlink()
    write = median(writes)
    archive = workdir / f"dump-{accounts}.jsonl.gz"
    export_s, export_kib = _tool(["store", "export", str(archive), "--store", f"sqlite:///{source}"])
    import_s, import_kib = _tool(
        ["store", "import", str(archive), "--store", f"sqlite:///{workdir / f'imp-{accounts}.db'}"]
    )
    copy_s, copy_kib = _tool(
        [
            "store",
            "copy",
            "--from",
            f"sqlite:///{source}",
            "--to",
            f"sqlite:///{workdir / f'copy-{accounts}.db'}",
            "--state",
            str(workdir / f"copy-{accounts}.json"),
        ]
    )
    rates = {"export": events / export_s, "import": events / import_s, "copy": events / copy_s}
    progress(
        f"  raw read {read:,.0f}/s, raw write {write:,.0f}/s; export {rates['export']:,.0f}/s, "
        f"import {rates['import']:,.0f}/s, copy {rates['copy']:,.0f}/s"
    )
    rows = [
        {
            "case": f"SQLite, {accounts:,} accounts: export",
            "events": events,
            "events/s": rates["export"],
            "raw events/s": read,
            "x raw": rates["export"] / read,
            "peak MiB": export_kib / 1024,
        },
        {
            "case": f"SQLite, {accounts:,} accounts: import",
            "events": events,
            "events/s": rates["import"],
            "raw events/s": write,
            "x raw": rates["import"] / write,
            "peak MiB": import_kib / 1024,
        },
        {
            "case": f"SQLite, {accounts:,} accounts: copy to SQLite",
            "events": events,
            "events/s": rates["copy"],
            "raw events/s": write,
            "x raw": rates["copy"] / write,
            "peak MiB": copy_kib / 1024,
        },
    ]
    summary = {**{k: v for k, v in rates.items()}, "read": read, "write": write}
    summary.update({"export_kib": export_kib, "import_kib": import_kib, "copy_kib": copy_kib})
    for name in (archive, workdir / f"imp-{accounts}.db", workdir / f"copy-{accounts}.db"):
        name.unlink(missing_ok=True)
    return rows, summary


def _cassandra_rows(workdir: Path, template: list[tuple[Any, ...]], accounts: int) -> list[dict[str, Any]]:
    """Import into, copy into and export from a 1-node cluster, against the raw driver on the same rows."""
    from cassandra.cluster import Cluster
    from cassandra.concurrent import execute_concurrent_with_args

    from tools.cassandra_cluster import LocalCassandraCluster

    source = workdir / "cassandra-source.db"
    events = _make_store(source, template, accounts)
    cluster = LocalCassandraCluster(1)
    progress(f"1-node cluster: starting ({accounts:,} accounts, {events:,} events)")
    cluster.start()
    try:
        hosts = ",".join(cluster.contact_points)

        def url(keyspace: str) -> str:
            return f"cassandra://{hosts}/{keyspace}?dc=dc1&replication=1&create_schema=true"

        archive = workdir / "cassandra.jsonl.gz"
        _tool(["store", "export", str(archive), "--store", f"sqlite:///{source}"])
        import_s, _ = _tool(["store", "import", str(archive), "--store", url("bench_import")])
        copy_s, _ = _tool(
            [
                "store",
                "copy",
                "--from",
                f"sqlite:///{source}",
                "--to",
                url("bench_copy"),
                "--state",
                str(workdir / "cassandra-copy.json"),
            ]
        )
        export_s, _ = _tool(["store", "export", str(workdir / "back.jsonl.gz"), "--store", url("bench_import")])
        # The raw driver: the same rows, plain inserts, 32 in flight; then read back by token range.
        session = Cluster(list(cluster.contact_points)).connect()
        try:
            session.execute(
                "CREATE KEYSPACE IF NOT EXISTS bench_raw WITH replication = "
                "{'class': 'NetworkTopologyStrategy', 'dc1': 1}"
            )
            session.execute(
                "CREATE TABLE IF NOT EXISTS bench_raw.events (stream_id text, bucket bigint, position bigint,"
                " event_id uuid, type_name text, schema_version int, data blob, metadata blob, recorded_at bigint,"
                " PRIMARY KEY ((stream_id, bucket), position))"
            )
            insert = session.prepare(
                "INSERT INTO bench_raw.events (stream_id, bucket, position, event_id, type_name, schema_version,"
                " data, metadata, recorded_at) VALUES (?, 0, ?, ?, ?, ?, ?, ?, ?)"
            )
            conn = sqlite3.connect(source)
            rows = [
                (s, p, uuid.UUID(bytes=i), t, v, d, m, a)
                for s, p, i, t, v, d, m, a in conn.execute(
                    "SELECT stream_id, position, event_id, type_name, schema_version, data, metadata, recorded_at"
                    " FROM events ORDER BY seq"
                )
            ]
            conn.close()
            started = time.perf_counter()
            execute_concurrent_with_args(session, insert, rows, concurrency=32, raise_on_first_error=True)
            raw_write = len(rows) / (time.perf_counter() - started)
            started = time.perf_counter()
            read = sum(1 for _ in session.execute("SELECT * FROM bench_raw.events", timeout=600))
            raw_read = read / (time.perf_counter() - started)
        finally:
            session.cluster.shutdown()
    finally:
        cluster.stop(wipe=True)
    rates = {"import": events / import_s, "copy": events / copy_s, "export": events / export_s}
    progress(
        f"  raw write {raw_write:,.0f}/s, raw read {raw_read:,.0f}/s; import {rates['import']:,.0f}/s, "
        f"copy {rates['copy']:,.0f}/s, export {rates['export']:,.0f}/s"
    )
    case = f"Cassandra 1 node, {accounts:,} accounts"
    return [
        {
            "case": f"{case}: import",
            "events": events,
            "events/s": rates["import"],
            "raw events/s": raw_write,
            "x raw": rates["import"] / raw_write,
            "peak MiB": None,
        },
        {
            "case": f"{case}: copy from SQLite",
            "events": events,
            "events/s": rates["copy"],
            "raw events/s": raw_write,
            "x raw": rates["copy"] / raw_write,
            "peak MiB": None,
        },
        {
            "case": f"{case}: export",
            "events": events,
            "events/s": rates["export"],
            "raw events/s": raw_read,
            "x raw": rates["export"] / raw_read,
            "peak MiB": None,
        },
    ]


def run(quick: bool) -> dict[str, Any]:
    small, large = (2_000, 20_000) if quick else (10_000, 100_000)
    on_cassandra = 1_000 if quick else 10_000
    rows: list[dict[str, Any]] = []
    with scratch_dir() as workdir:
        template = _template(workdir)
        empty = workdir / "empty.db"
        _make_store(empty, template, 0)
        _, baseline_kib = _tool(["store", "export", str(workdir / "empty.jsonl.gz"), "--store", f"sqlite:///{empty}"])
        rows.append(
            {
                "case": "baseline: export of an empty store (the process itself)",
                "events": 0,
                "events/s": None,
                "raw events/s": None,
                "x raw": None,
                "peak MiB": baseline_kib / 1024,
            }
        )
        small_rows, small_s = _sqlite_rows(workdir, template, small)
        large_rows, large_s = _sqlite_rows(workdir, template, large)
        rows += small_rows + large_rows
        cassandra_note = ""
        try:
            import cassandra  # noqa: F401

            if shutil.which("mvn") is not None or Path(".cache/cassandra").exists():
                rows += _cassandra_rows(workdir, template, on_cassandra)
            else:
                cassandra_note = " (Cassandra skipped: no Maven to fetch it with)"
        except ImportError:
            cassandra_note = " (Cassandra skipped: no driver)"
    growth = max(large_s[k] / small_s[k] for k in ("export_kib", "import_kib", "copy_kib"))
    goals = [
        goal_at_least("SQLite export ≥ 0.1x the raw read of the same events", large_s["export"] / large_s["read"], 0.1),
        goal_at_least(
            "SQLite import ≥ 0.2x the raw write of the same events", large_s["import"] / large_s["write"], 0.2
        ),
        goal_at_least("SQLite copy ≥ 0.2x the raw write of the same events", large_s["copy"] / large_s["write"], 0.2),
        goal_at_most(f"peak memory at {large:,} accounts ≤ 1.5x that at {small:,} (flat in store size)", growth, 1.5),
    ]
    method = (
        f"A template of {_TEMPLATE_ACCOUNTS} accounts built by DownloadsService (devices, licenses played, renewed, "
        "released and synced, most commands under an Idempotency-Key) is stored, then repeated with fresh ids "
        f"into SQLite stores of {small:,} and {large:,} accounts. Each tool runs as `downloads store ...` in a child "
        "process (its wall time, from start to exit, includes starting Python; its peak resident memory from "
        "getrusage). Raw read: every row in commit order through plain sqlite3. Raw write: the same rows inserted "
        "through plain sqlite3 in fsynced transactions of 2,000, with the same pragmas, table and feed index. "
        f"Cassandra: a 1-node local cluster, {on_cassandra:,} accounts; the raw driver writes the same rows as plain "
        "(unconditional) inserts, 32 in flight, and reads them back with one paged full scan, while the tools write "
        "each stream's events as conditional batches (Paxos), so the ratio includes the price of linearizable "
        f"appends{cassandra_note}."
    )
    return {"title": TITLE, "method": method, "rows": rows, "goals": goals}
