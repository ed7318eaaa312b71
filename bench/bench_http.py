"""HTTP API throughput and latency: acquire+release pairs against a trivial FastAPI endpoint."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from bench.harness import ROOT, goal_at_least, interleaved, median, progress, scratch_dir
from tools.server_process import ServerProcess, free_port, processes

NAME = "http"
TITLE = "HTTP API on SQLite: server CPU per request and req/s against a trivial FastAPI endpoint"

#: ours' CPU per request at least half the trivial endpoint's (trivial ms / ours ms)
TARGET = 0.5
#: x trivial req/s on 2 workers of granian before the CPU work of issue 21 (no loss allowed)
RPS_BEFORE = 0.16
SECRET = "bench-http-secret-" + "x" * 32
OWN = "ours, own accounts"
ACCOUNTS = 16  # accounts opened for the own-account case: one per client, at most
SHARED = "ours, 1 account"
TRIVIAL = "trivial FastAPI"
CEILING = "SQLite commits, no server"
BASELINE = "ours, baseline checkout"
TRACED = "ours, own accounts, 1 in 10 traced"
TRACED_ALL = "ours, own accounts, every request traced"
CONTENDERS = (OWN, TRIVIAL, SHARED, BASELINE, TRACED, TRACED_ALL)
#: the ``src`` folder of another checkout of the service (an earlier commit): when set, the one-worker
#: setup also serves it, as a third server in the same rounds, for a before/after in one run
BASELINE_ENV = "BENCH_HTTP_BASELINE_SRC"
#: the sampling of the traced case, as the runbook advises for production (OTEL_TRACES_SAMPLER_ARG)
SAMPLED = 0.1
#: the niceness of the local OTLP receiver: it stands in for a collector on another machine, so it takes only
#: the CPU the measured server and the client leave (on 2 cores it would otherwise compete with both)
RECEIVER_NICE = 19
#: the traced case's goal: its req/s against the same service with tracing off, in the same rounds
TRACING_TARGET = 0.9
SHARED_ACCOUNT = "bench-shared"
SHARED_DEVICES = 6
START_TIMEOUT = 60.0
STOP_GRACE = 10.0


# -- load ------------------------------------------------------------------------------


class Tally:
    """What one measured run of the clients did."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


class Connection:
    """A minimal HTTP/1.1 keep-alive client connection on asyncio streams (far less CPU per request than httpx).

    Sends a request with a fixed header block and reads the response's status
    line, headers and ``Content-Length`` body; reconnects after an error.
    """

    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host, self.port = host, port
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.head_tail = f"Host: {host}:{port}\r\n{extra}".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self.head_tail
        if body is not None:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        try:
            self.writer.write(head + b"\r\n" + (body or b""))
            raw = await self.reader.readuntil(b"\r\n\r\n")
            status = int(raw[9:12])
            lower = raw.lower()
            at = lower.find(b"\r\ncontent-length:")
            if at < 0:
                raise RuntimeError(f"response without Content-Length: {raw[:200]!r}")
            length = int(lower[at + 17 : lower.index(b"\r\n", at + 2)])
            payload = await self.reader.readexactly(length)
        except BaseException:
            self.close()
            raise
        if b"\r\nconnection: close" in lower:
            self.close()
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


Pair = Callable[[Connection, int, Tally], Awaitable[None]]


async def _timed(tally: Tally, call: Awaitable[tuple[int, bytes]]) -> tuple[int, bytes]:
    t0 = time.perf_counter()
    response = await call
    tally.latencies.append(time.perf_counter() - t0)
    return response


def _ours_pair(
    account_of: Callable[[int], str], device_of: Callable[[int], str], title_of: Callable[[int], str]
) -> Pair:
    import orjson

    async def pair(conn: Connection, i: int, tally: Tally) -> None:
        account = account_of(i)
        body = orjson.dumps({"device_id": device_of(i), "title_id": title_of(i)})
        status, got = await _timed(tally, conn.request("POST", f"/v1/accounts/{account}/licenses", body))
        if status not in (200, 201):  # 200: the same license is still active (a release failed before)
            tally.error(f"acquire {status} {got[:120].decode(errors='replace')}")
            return
        license_id = orjson.loads(got)["license_id"]
        status, gone = await _timed(tally, conn.request("DELETE", f"/v1/accounts/{account}/licenses/{license_id}"))
        if status != 200:
            tally.error(f"release {status} {gone[:120].decode(errors='replace')}")

    return pair


async def _trivial_pair(conn: Connection, i: int, tally: Tally) -> None:
    body = b'{"device_id":"d1","title_id":"demo-title-1"}'
    for _ in range(2):
        status, _got = await _timed(tally, conn.request("POST", "/echo", body))
        if status != 200:
            tally.error(f"echo {status}")
            return


async def _drive(conns: list[Connection], pair: Pair, seconds: float) -> tuple[Tally, float, float]:
    """Run one task per connection doing pairs back to back for ``seconds``; return tally, wall, client CPU."""
    tally = Tally()
    for conn in conns:
        conn.close()  # fresh connections each round: the server drops keep-alive connections idle for 5 s
    deadline = time.perf_counter() + seconds

    async def worker(i: int) -> None:
        while time.perf_counter() < deadline:
            try:
                await pair(conns[i], i, tally)
            except (OSError, asyncio.IncompleteReadError, RuntimeError, ValueError) as exc:
                tally.error(f"{type(exc).__name__}: {exc}"[:120])

    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(len(conns))))
    wall = time.perf_counter() - t0
    return tally, wall, time.process_time() - c0


def _group_cpu(pgid: int) -> tuple[float, float]:
    """CPU seconds (user + system) used so far by the live processes of process group ``pgid``: those
    serving HTTP (the server's main process and its workers), and the read side's process serve starts
    (``downloads project --quiet``)."""
    serving = side = 0.0
    for process in processes():
        if process.pgrp != pgid:
            continue
        command = process.command()
        if "project" in command and "--quiet" in command:
            side += process.cpu_seconds
        else:
            serving += process.cpu_seconds
    return serving, side


def _commit_rate(path: Path, seconds: float) -> tuple[float, float]:
    """Sequential one-row commits for ``seconds`` with eskit's pragmas: the store's serial commit rate and p50."""
    import sqlite3

    from eskit.stores.sqlite.schema import PRAGMAS

    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for pragma in PRAGMAS:
            conn.execute(pragma)
        conn.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)")
        times: list[float] = []
        payload = b"x" * 300
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t (v) VALUES (?)", (payload,))
            conn.execute("COMMIT")
            times.append(time.perf_counter() - t0)
        return len(times) / (time.perf_counter() - start), _percentile(times, 0.5)
    finally:
        conn.close()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _conflicts(url: str) -> float:
    """The server's total of optimistic-concurrency conflicts (from /metrics, summed over workers)."""
    import httpx

    total = 0.0
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith("downloads_concurrency_conflicts_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def _measure(
    ports: dict[str, int],
    pgids: dict[str, int],
    headers: dict[str, str],
    rounds: int,
    seconds: float,
    warmup: float,
    ceiling_db: Path,
    clients: int,
) -> dict[str, list[dict[str, Any]]]:
    """Rounds of every contender in turn; the CPU of a server's read side process is recorded apart
    (``side_ms``) from that of its HTTP processes (``server_ms``)."""
    pairs: dict[str, Pair] = {
        OWN: _ours_pair(lambda i: f"bench-{i}", lambda i: "d1", lambda i: "demo-title-1"),
        BASELINE: _ours_pair(lambda i: f"bench-{i}", lambda i: "d1", lambda i: "demo-title-1"),
        TRACED: _ours_pair(lambda i: f"bench-{i}", lambda i: "d1", lambda i: "demo-title-1"),
        TRACED_ALL: _ours_pair(lambda i: f"bench-{i}", lambda i: "d1", lambda i: "demo-title-1"),
        SHARED: _ours_pair(lambda i: SHARED_ACCOUNT, lambda i: f"d{i % SHARED_DEVICES}", lambda i: f"bench-title-{i}"),
        TRIVIAL: _trivial_pair,
    }
    contenders = [name for name in CONTENDERS if name in ports]
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in (*contenders, CEILING)}
    conns = {name: [Connection("127.0.0.1", ports[name], headers) for _ in range(clients)] for name in contenders}
    try:
        for name in contenders:
            await _drive(conns[name], pairs[name], warmup)
        for rnd, name in interleaved((*contenders, CEILING), rounds):
            if name == CEILING:  # no load running: blocking the loop here holds nothing up
                rate, p50 = _commit_rate(ceiling_db, seconds / 2)
                results[name].append({"rps": rate, "p50": p50})
                progress(f"round {rnd + 1}/{rounds} {name}: {rate:,.0f} commits/s, p50 {p50 * 1e3:.2f} ms")
                continue
            url = f"http://127.0.0.1:{ports[name]}"
            before = _conflicts(url) if name != TRIVIAL else 0.0
            server0, side0 = _group_cpu(pgids[name])
            tally, wall, cpu = await _drive(conns[name], pairs[name], seconds)
            server1, side1 = _group_cpu(pgids[name])
            server_cpu, side_cpu = server1 - server0, side1 - side0
            after = _conflicts(url) if name != TRIVIAL else 0.0
            n = len(tally.latencies)
            p50 = _percentile(tally.latencies, 0.5)
            results[name].append(
                {
                    "rps": n / wall,
                    "p50": p50,
                    "p99": _percentile(tally.latencies, 0.99),
                    "requests": n,
                    "errors": tally.errors,
                    "client_cpu": cpu / wall,
                    "server_cpu": server_cpu / wall,
                    "server_ms": server_cpu / max(n, 1) * 1e3,
                    "side_ms": side_cpu / max(n, 1) * 1e3,
                    "total_ms": (server_cpu + side_cpu) / max(n, 1) * 1e3,
                    "conflicts": after - before,
                }
            )
            errors = sum(tally.errors.values())
            progress(f"round {rnd + 1}/{rounds} {name}: {n / wall:,.0f} req/s, p50 {p50 * 1e3:.1f} ms, errors {errors}")
    finally:
        for group in conns.values():
            for conn in group:
                conn.close()
    return results


def _setup(url: str, admin: str) -> None:
    """Open 16 standard accounts with device d1, one premium account with 6 devices, 16 titles."""
    import httpx

    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin}"}, timeout=30) as http:

        def ok(response: httpx.Response) -> None:
            if response.status_code not in (200, 201):
                raise RuntimeError(
                    f"setup {response.request.method} {response.request.url}: {response.status_code} {response.text}"
                )

        for i in range(ACCOUNTS):
            ok(http.post("/v1/accounts", json={"account_id": f"bench-{i}", "plan": "standard"}))
            ok(http.post(f"/v1/accounts/bench-{i}/devices", json={"device_id": "d1", "model": "bench-phone"}))
            ok(http.put(f"/v1/titles/bench-title-{i}", json={"studio": "default", "downloadable": True}))
        ok(http.post("/v1/accounts", json={"account_id": SHARED_ACCOUNT, "plan": "premium"}))
        for d in range(SHARED_DEVICES):
            ok(http.post(f"/v1/accounts/{SHARED_ACCOUNT}/devices", json={"device_id": f"d{d}", "model": "bench"}))


def _loop_runner() -> Callable[[Coroutine[Any, Any, Any]], Any]:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.run
    return uvloop.run


#: the measured setups: (HTTP server, workers, clients); the CPU per request and tracing's cost are read
#: on the first
PARTS = (("granian", 1, 8), ("granian", 2, 16), ("uvicorn", 2, 16))
QUICK_PARTS = PARTS[:2]


def _trivial_command(kind: str, port: int, workers: int) -> list[str]:
    """The trivial app on the same server as ours, with the same worker count."""
    if kind == "granian":
        return [
            sys.executable, "-m", "granian", "--interface", "asgi", "--http", "1", "--no-ws",
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
            "--working-dir", str(ROOT), "--log-level", "warning", "bench._trivial_app:app",
        ]  # fmt: skip
    return [
        sys.executable, "-m", "uvicorn", "bench._trivial_app:app", "--app-dir", str(ROOT),
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers), "--log-level", "warning",
        "--no-access-log", "--http", "h11" if kind == "uvicorn-h11" else "httptools",
    ]  # fmt: skip


def run(quick: bool) -> dict[str, Any]:
    parts = {(kind, workers): _run_on(kind, workers, clients, quick) for kind, workers, clients in
             (QUICK_PARTS if quick else PARTS)}  # fmt: skip
    rows = [
        {"http server": kind, "workers": workers, **row}
        for (kind, workers), part in parts.items()
        for row in part["rows"]
    ]
    notes = [
        f"{kind}, {workers} worker(s): {note}" for (kind, workers), part in parts.items() for note in part["notes"]
    ]
    cpu = parts[("granian", 1)]["cpu_fraction"]
    rps = {key: part["fraction"] for key, part in parts.items()}
    notes.insert(
        0,
        f"Server CPU per request, trivial endpoint's / ours (granian, 1 worker): x{cpu['median']:.2f} "
        f"(per-round range {cpu['low']:.2f}-{cpu['high']:.2f}; ours {cpu['ours_ms']:.2f} ms, trivial "
        f"{cpu['trivial_ms']:.2f} ms, medians; x{cpu['with_read_side']:.2f} with the read side's process "
        f"counted too). Ours' req/s against the trivial endpoint's: "
        + ", ".join(f"{kind} {workers} worker(s) x{ratio:.2f}" for (kind, workers), ratio in rps.items())
        + ". granian is the default: it alone bounds the time a request head may take (and idle keep-alive), "
        "and answers a header flood with 431 at once (see docs/operations.md).",
    )
    goals = [
        goal_at_least(
            f"ours' server CPU per request ≥ {TARGET}x the trivial endpoint's (trivial ms / ours ms; granian, "
            "1 worker, SQLite; the HTTP processes', the read side's process reported beside)",
            cpu["median"],
            TARGET,
        ),
        goal_at_least(
            f"ours' req/s on granian with 2 workers ≥ x{RPS_BEFORE} of the trivial endpoint's (the ratio before "
            "issue 21: no loss)",
            rps[("granian", 2)],
            RPS_BEFORE,
        ),
    ]
    tracing = parts[("granian", 1)]["tracing"]
    if tracing is not None:
        goals.append(
            goal_at_least(
                f"ours tracing 1 in {round(1 / SAMPLED)} requests, exported over OTLP, ≥ {TRACING_TARGET}x ours "
                "with tracing off (own accounts, granian, 1 worker, same rounds)",
                tracing,
                TRACING_TARGET,
            )
        )
    if ("uvicorn", 2) in rps:
        goals.append(
            goal_at_least(
                "the req/s ratio on the default server ≥ 0.95x the ratio on uvicorn+httptools (the previous server)",
                rps[("granian", 2)] / rps[("uvicorn", 2)],
                0.95,
            )
        )
    first = parts[("granian", 1)]
    method = first["method"] + (
        " The whole measurement runs once per setup (HTTP server, workers, clients): "
        + ", ".join(f"({kind}, {workers}, {clients})" for kind, workers, clients in (QUICK_PARTS if quick else PARTS))
        + ": ours with `DOWNLOADS_SERVER` set to the server, the trivial app on the same server with the same worker "
        f"count; '{SHARED}' is measured with 2 workers only. The CPU goal's value is the median over rounds of "
        "(trivial ms/req / ours ms/req), each pair from consecutive rounds of the one-worker setup. "
        "In the one-worker setup two more cases load two more servers of ours, each on a file of its own and set "
        "up the same way, with `OTEL_EXPORTER_OTLP_ENDPOINT` naming a local Jaeger (tools/jaeger, run at "
        f"`nice -n {RECEIVER_NICE}`: it stands in for a collector on another machine, so it gets the CPU the "
        "server and the client leave rather than a share of theirs) and "
        f"`OTEL_TRACES_SAMPLER=parentbased_traceidratio`: '{TRACED}' with `OTEL_TRACES_SAMPLER_ARG={SAMPLED}`, "
        f"'{TRACED_ALL}' with 1.0, so every request's spans (request, command, each store call) and the read "
        "side's are made and exported with the SDK's default batch settings. They rotate with the other cases; "
        f"the tracing goal is the median of per-round req/s ratios of '{TRACED}' against '{OWN}'."
    )
    if os.environ.get(BASELINE_ENV):
        method += (
            f" '{BASELINE}': with {BASELINE_ENV} set to another checkout's `src`, the one-worker setup also serves "
            "that checkout (an earlier commit: here the code before issue 21's HTTP work) on a store of its own, "
            "set up and loaded as ours, in the same rounds: a before/after in one run."
        )
    return {"title": TITLE, "method": method, "rows": rows, "goals": goals, "notes": notes}


def _run_on(kind: str, workers: int, clients: int, quick: bool) -> dict[str, Any]:
    from downloads.adapters.tokens import TokenSigner

    progress(f"server {kind}, {workers} worker(s), {clients} clients")
    rounds, seconds, warmup = (3, 3.0, 0.5) if quick else (5, 5.0, 1.0)
    signer = TokenSigner(SECRET)
    headers = {"Authorization": f"Bearer {signer.issue('service', ttl_seconds=3600)}"}
    with scratch_dir() as workdir:
        metrics_dir = workdir / "metrics"
        metrics_dir.mkdir()
        env = {
            **os.environ,
            "DOWNLOADS_AUTH_SECRET": SECRET,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "DOWNLOADS_SERVER": kind,
        }
        ours = _our_server(workdir / "ours", env, workers)
        trivial_port = free_port()
        trivial = ServerProcess(
            "trivial app",
            _trivial_command(kind, trivial_port, workers),
            env={k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"},
            port=trivial_port,
            log=workdir / "trivial.log",
            cwd=ROOT,
        )
        baseline_src = os.environ.get(BASELINE_ENV) if workers == 1 else None
        extra: dict[str, ServerProcess] = {}
        if baseline_src:
            extra[BASELINE] = _our_server(workdir / "baseline", {**env, "PYTHONPATH": baseline_src}, 1, "baseline")
        # In the one-worker setup only: the same service exporting its spans to a real OTLP receiver.
        receiver, traced, why_not = (
            _traced_servers(workdir, env, workers) if (kind, workers) == ("granian", 1) else (None, {}, None)
        )
        extra.update(traced)
        try:
            ours.start(timeout=START_TIMEOUT)
            trivial.start(timeout=START_TIMEOUT)
            admin = signer.issue("admin", ttl_seconds=3600)
            _setup(ours.url, admin)
            ports = {OWN: ours.port, TRIVIAL: trivial.port}
            if workers > 1:
                ports[SHARED] = ours.port
            assert ours.process is not None and trivial.process is not None
            pgids = {OWN: ours.process.pid, SHARED: ours.process.pid, TRIVIAL: trivial.process.pid}
            for name, server in extra.items():
                server.start(timeout=START_TIMEOUT)
                _setup(server.url, admin)
                assert server.process is not None
                ports[name], pgids[name] = server.port, server.process.pid
            measuring = _measure(ports, pgids, headers, rounds, seconds, warmup, workdir / "commits.db", clients)
            results = _loop_runner()(measuring)
        finally:
            ours.stop(grace=STOP_GRACE)
            trivial.stop(grace=STOP_GRACE)
            for server in extra.values():
                server.stop(grace=STOP_GRACE)
            if receiver is not None:
                receiver.stop()
        db_events = _count_events(workdir / "ours" / "downloads.db")
    contenders = [name for name in CONTENDERS if name in ports]
    fractions = [o["rps"] / t["rps"] for o, t in zip(results[OWN], results[TRIVIAL], strict=True)]
    cpu_ratios = [t["server_ms"] / o["server_ms"] for o, t in zip(results[OWN], results[TRIVIAL], strict=True)]
    of_commits = [o["rps"] / c["rps"] for o, c in zip(results[OWN], results[CEILING], strict=True)]
    rows = []
    for name in contenders:
        res = results[name]
        errors = sum(sum(r["errors"].values()) for r in res)
        rows.append(
            {
                "server": name,
                "req/s": median([r["rps"] for r in res]),
                "p50 ms": median([r["p50"] for r in res]) * 1e3,
                "p99 ms": median([r["p99"] for r in res]) * 1e3,
                "requests": sum(r["requests"] for r in res),
                "errors": errors,
                "conflict retries": "" if name == TRIVIAL else int(sum(r["conflicts"] for r in res)),
                "x trivial": median([r["rps"] / t["rps"] for r, t in zip(res, results[TRIVIAL], strict=True)]),
                "server CPU ms/req": median([r["server_ms"] for r in res]),
                "read side CPU ms/req": "" if name == TRIVIAL else median([r["side_ms"] for r in res]),
                "trivial's CPU/req ÷ this": median(
                    [t["server_ms"] / r["server_ms"] for r, t in zip(res, results[TRIVIAL], strict=True)]
                ),
                "server CPU": f"{median([r['server_cpu'] for r in res]):.0%}",
                "client CPU": f"{median([r['client_cpu'] for r in res]):.0%}",
            }
        )
    rows.append(
        {
            "server": CEILING,
            "req/s": median([r["rps"] for r in results[CEILING]]),
            "p50 ms": median([r["p50"] for r in results[CEILING]]) * 1e3,
            "x trivial": median([c["rps"] / t["rps"] for c, t in zip(results[CEILING], results[TRIVIAL], strict=True)]),
        }
    )
    method = (
        f"A real `downloads serve --store sqlite:///<scratch>/downloads.db --workers N` process (its read side "
        f"at the default, `DOWNLOADS_READ_SIDE=background`) and, "
        f"beside it, a trivial FastAPI app (`bench/_trivial_app.py`: one plain-`def` POST route that validates "
        f"the same two-field JSON body with pydantic and answers a small JSON object; no store, auth or "
        f"middleware) served by the same HTTP server with `--workers N`, both on 127.0.0.1 on free ports, "
        f"started before and stopped (SIGTERM, then SIGKILL after {STOP_GRACE:.0f} s) after the run. The load "
        f"generator is pure Python, no system tool: one process, an asyncio loop (uvloop) with one task per "
        f"client, each with its own keep-alive HTTP/1.1 connection (a minimal client on asyncio streams, because "
        f"httpx spends so much CPU per request that on 2 cores it would take a core from the servers), doing pairs "
        f"back to back. "
        f"A pair against ours is `POST /v1/accounts/{{a}}/licenses` (201) then `DELETE .../licenses/{{id}}` "
        f"(200), with a service bearer token and no Idempotency-Key; against the trivial app, two `POST /echo`. "
        f"'{OWN}': task i uses its own account `bench-i` (plan standard, device d1, demo-title-1), so requests "
        f"never contend. '{SHARED}': every task on one premium account with {SHARED_DEVICES} devices "
        f"(task i: device d(i mod 6), title bench-title-i, each put in the catalog beforehand), so every "
        f"command races the others for the account's next version (conflicts are retried in the server, up to "
        f"20 attempts; 'conflict retries' is read from its /metrics). Only one server is loaded at a time: "
        f"{rounds} rounds of {seconds:.0f} s per case, the cases rotating who goes first, after a "
        f"{warmup:.1f} s warm-up each. req/s = requests completed / wall time of the round; latency is per "
        f"request (p50/p99 within a round); table values are medians over rounds; 'x trivial' is the median of "
        f"per-round (req/s / trivial req/s in the same round). Durability: the "
        f"store is SQLite in WAL mode with synchronous=FULL, so every accepted command is fsynced before it is "
        f"answered ({db_events:,} events written in the one-worker setup's last run). 'server CPU' is the "
        f"server's CPU time (user + system, of its whole process group: granian's main process, its workers "
        f"and workers, read from /proc before and after the round) / wall (1 core = 100%), 'server CPU ms/req' "
        f"that CPU time per request, 'read side CPU ms/req' the CPU time of the read side's process that serve "
        f"starts beside its workers (`downloads project --quiet`, in the same process group; a checkout whose "
        f"workers run the read side themselves shows it in 'server CPU'), and \"trivial's CPU/req ÷ this\" the "
        f"median of per-round (trivial ms/req / this ms/req), the CPU goal's value for '{OWN}' with 1 worker; "
        f"'client CPU' the load generator's. The machine has {os.cpu_count()} cores for the client and the "
        f"server. '{CEILING}' (req/s = commits/s) is the store's own limit: one "
        f"connection in the bench process doing `BEGIN IMMEDIATE`, a 300-byte insert, `COMMIT` back to back "
        f"with eskit's pragmas on another file in the same folder, for {seconds / 2:.1f} s in each round's "
        f"rotation."
    )
    notes = [
        f"Ours with own accounts reached x{median(of_commits):.2f} of the serial commit rate measured in "
        f"the same rounds.",
    ]
    if results.get(SHARED):
        contention = [s["rps"] / o["rps"] for s, o in zip(results[SHARED], results[OWN], strict=True)]
        notes.append(
            f"Contention: with every client on one account, throughput is x{median(contention):.2f} of "
            f"the own-account case (median over rounds): concurrent commands on one account serialise and the "
            f"losers reload and retry."
        )
    if results.get(BASELINE):
        against = [o["server_ms"] / b["server_ms"] for o, b in zip(results[OWN], results[BASELINE], strict=True)]
        totals = [o["total_ms"] / b["total_ms"] for o, b in zip(results[OWN], results[BASELINE], strict=True)]
        notes.append(
            f"Before/after in one run: ours' HTTP server CPU per request is x{median(against):.2f} of the baseline "
            f"checkout's ({BASELINE_ENV}; per-round range {min(against):.2f}-{max(against):.2f}), and with the read "
            f"side's process counted too x{median(totals):.2f} ({min(totals):.2f}-{max(totals):.2f})."
        )
    own_total = [t["server_ms"] / o["total_ms"] for o, t in zip(results[OWN], results[TRIVIAL], strict=True)]
    notes.append(
        f"Read side: serve's read side process spent {median([o['side_ms'] for o in results[OWN]]):.2f} ms of CPU "
        f"per request beside the HTTP processes' {median([o['server_ms'] for o in results[OWN]]):.2f} "
        f"(total {median([o['total_ms'] for o in results[OWN]]):.2f} ms, x{median(own_total):.2f} of the trivial "
        f"endpoint's CPU per request with it counted). It is one process per deployment whatever the number of "
        f"servers and workers (a lease lets one runner apply at a time), so what a region's server count "
        f"scales with is the HTTP processes' cost, the CPU goal's value."
    )
    tracing = None
    if results.get(TRACED):
        off_ms = median([r["server_ms"] for r in results[OWN]])
        tracing, every = (
            median([t["rps"] / o["rps"] for t, o in zip(results[name], results[OWN], strict=True)])
            for name in (TRACED, TRACED_ALL)
        )
        notes.append(
            f"Tracing, spans exported over OTLP/HTTP to a local Jaeger (which shares the {os.cpu_count()} cores, "
            f"at nice {RECEIVER_NICE}, standing in for a collector elsewhere): "
            f"'{TRACED}' reached x{tracing:.2f} of '{OWN}' and '{TRACED_ALL}' x{every:.2f} (medians of per-round "
            f"ratios), at {median([r['server_ms'] for r in results[TRACED]]):.2f} and "
            f"{median([r['server_ms'] for r in results[TRACED_ALL]]):.2f} against {off_ms:.2f} server CPU ms per "
            "request: making and encoding a span costs the Python SDK tens of microseconds, and a request makes "
            "several (request, command, each store call), so production samples (docs/operations.md)."
        )
    elif why_not is not None:
        notes.append(f"Tracing not measured: {why_not}")
    all_errors: dict[str, int] = {}
    for name in contenders:
        for r in results[name]:
            for what, count in r["errors"].items():
                key = re.sub(r"[0-9a-f-]{36}", "<id>", f"{name}: {what}")
                all_errors[key] = all_errors.get(key, 0) + count
    if all_errors:
        notes.append("Errors: " + "; ".join(f"{k} x{v}" for k, v in sorted(all_errors.items())[:8]))
    cpu_fraction = {
        "median": median(cpu_ratios),
        "low": min(cpu_ratios),
        "high": max(cpu_ratios),
        "ours_ms": median([r["server_ms"] for r in results[OWN]]),
        "trivial_ms": median([r["server_ms"] for r in results[TRIVIAL]]),
        "with_read_side": median(own_total),
    }
    return {
        "method": method,
        "rows": rows,
        "notes": notes,
        "fraction": median(fractions),
        "cpu_fraction": cpu_fraction,
        "tracing": tracing,
    }


def _our_server(workdir: Path, env: dict[str, str], workers: int, name: str = "downloads serve") -> ServerProcess:
    """``downloads serve`` with ``workers`` workers on a SQLite file of its own in ``workdir`` (not started)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [
        sys.executable, "-m", "downloads.entrypoints.cli", "serve", "--store", f"sqlite:///{workdir / 'downloads.db'}",
        "--port", str(port), "--workers", str(workers), "--log-level", "warning",
    ]  # fmt: skip
    return ServerProcess(name, cmd, env=env, port=port, log=workdir / "server.log", cwd=ROOT)


def _traced_servers(
    workdir: Path, env: dict[str, str], workers: int
) -> tuple[Any, dict[str, ServerProcess], str | None]:
    """A started Jaeger and two more servers of ours exporting to it, one sampling 1 in 10 requests, one
    every request; (None, {}, why) when Jaeger cannot run."""
    from tools.jaeger import JaegerError, LocalJaeger

    receiver = LocalJaeger(workdir / "jaeger", nice=RECEIVER_NICE)
    try:
        receiver.start(timeout=START_TIMEOUT)
    except (JaegerError, RuntimeError) as exc:
        receiver.stop()
        return None, {}, f"no OTLP receiver ({exc})"
    servers = {}
    for name, folder, ratio in ((TRACED, "sampled", SAMPLED), (TRACED_ALL, "traced", 1.0)):
        metrics_dir = workdir / f"{folder}-metrics"
        metrics_dir.mkdir()
        traced = {
            **env,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.otlp_endpoint,
            "OTEL_SERVICE_NAME": f"downloads-bench-{folder}",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": str(ratio),
        }
        servers[name] = _our_server(workdir / folder, traced, workers)
    return receiver, servers, None


def _count_events(path: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(path) as conn:
            return int(conn.execute("SELECT count(*) FROM events").fetchone()[0])
    except sqlite3.Error:
        return -1
