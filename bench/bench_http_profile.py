"""Where the server's CPU goes per request: py-spy samples of a real worker under `bench http`'s load."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.bench_http import SECRET, Connection, Tally, _drive, _loop_runner, _ours_pair, _setup
from bench.harness import ROOT, progress, scratch_dir
from tools.server_process import ProcessInfo, ServerProcess, free_port, processes

NAME = "http_profile"
TITLE = "Profile of the HTTP server under load (SQLite, granian, 1 worker): top functions by share of samples"

CLIENTS = 8
RATE = 250  # py-spy samples per second
TOP = 25


def _py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def _children(pid: int) -> list[ProcessInfo]:
    """Every descendant of ``pid`` (granian's worker, the read side's process, ...)."""
    live = processes()
    found: list[ProcessInfo] = []
    parents = {pid}
    while parents:
        generation = [p for p in live if p.ppid in parents]
        found += generation
        parents = {p.pid for p in generation}
    return found


def _frame(raw: str) -> str:
    """``func (path/to/module.py:12)`` -> ``module.py:func`` with the package path kept short."""
    name, _, where = raw.partition(" (")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "/src/", "python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{name}"


#: (layer, fragments of "path:function"): the service's own layers, looked for first from the top of a
#: sample's stack down (a sample in pydantic called by a presenter is the service's)
OWN_LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("read side", ("downloads/readmodels/", "eskit/readmodel/", "eskit/projection/", "stores/sqlite/readmodel")),
    ("SQLite store", ("eskit/stores/",)),
    ("metrics", ("adapters/metrics", "adapters/observed", "prometheus_client/")),
    ("tracing, logs", ("adapters/tracing", "adapters/logs", "eskit/tracing", "opentelemetry/")),
    ("auth (tokens)", ("adapters/tokens", "jwt/")),
    ("service, domain, codec", ("downloads/application/", "downloads/domain/", "eskit/")),
    ("route functions", ("http/routes/",)),
)
#: then the framework's, by the topmost frame that is not the standard library's
FRAMEWORK_LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("our middleware", ("http/middleware", "http/errors", "http/routing", "http/fast")),
    (
        "FastAPI dependencies, validation, serialization",
        ("fastapi/dependencies/", "serialize_response", "get_request_handler", "fastapi/_compat", "pydantic"),
    ),
    ("thread-pool hops", ("anyio/", "starlette/concurrency", "_run_sync_endpoint")),
    ("routing", ("starlette/routing", "matches", "_match", "APIRouter.app", "handle")),
)
OTHER = "HTTP server, Starlette, event loop"

#: GIL-held ms per request by layer in this benchmark's run on the code before issue 21's HTTP work
#: (commit f5d7fcd; 3,831 samples over about 19,900 requests): the reference the table compares with
BEFORE_MS: dict[str, float] = {
    "HTTP server, Starlette, event loop": 0.195,
    "thread-pool hops": 0.140,
    "FastAPI dependencies, validation, serialization": 0.101,
    "SQLite store": 0.083,
    "service, domain, codec": 0.070,
    "our middleware": 0.060,
    "routing": 0.058,
    "read side": 0.042,
    "metrics": 0.014,
    "route functions": 0.003,
    "auth (tokens)": 0.002,
}
#: frames above every request (process start, granian's worker loop): left out of the function table
_ROOTS = ("granian/server/", "multiprocessing/", "cli/", "<frozen runpy>", "threading.py:", "runpy")


#: packages whose frames are not the standard library's (py-spy names files relative to their import root)
_PACKAGES = (
    "downloads/",
    "http/",
    "eskit/",
    "fastapi/",
    "starlette/",
    "pydantic",
    "anyio/",
    "granian/",
    "prometheus_client/",
)


def _stdlib(frame: str) -> bool:
    where = frame.rpartition(" (")[2]
    return not where.startswith(_PACKAGES)


def _layer(frames: list[str]) -> str:
    """``frames`` as py-spy writes them (``function (path:line)``), outermost first."""
    for frame in reversed(frames):
        for layer, marks in OWN_LAYERS:
            if any(mark in frame for mark in marks):
                return layer
    for frame in reversed(frames):
        if _stdlib(frame):
            continue
        for layer, marks in FRAMEWORK_LAYERS:
            if any(mark in frame for mark in marks):
                return layer
        return OTHER
    return OTHER


def _summarise(raw_files: list[Path], requests: float = 0.0) -> tuple[list[dict[str, Any]], int]:
    """Shares by layer and by function from py-spy's collapsed stacks (``a;b;c count`` lines); with the
    number of ``requests`` served while sampling, also GIL-held milliseconds per request by layer."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    total = 0
    for path in raw_files:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            raw_frames = stack.split(";")
            frames = [_frame(f) for f in raw_frames]
            total += count
            layers[_layer(raw_frames)] += count
            for name in set(frames):
                inclusive[name] += count
            own[frames[-1]] += count
    total = max(total, 1)
    per_request = 1000 / RATE / requests if requests else 0.0
    rows: list[dict[str, Any]] = [
        {
            "kind": "layer",
            "name": name,
            "share %": 100 * n / total,
            "self %": "",
            "ms/request": n * per_request if requests else "",
            "before: ms/request": BEFORE_MS.get(name, ""),
        }
        for name, n in layers.most_common()
    ]
    if requests:
        rows.append(
            {
                "kind": "layer",
                "name": "all",
                "share %": 100.0,
                "self %": "",
                "ms/request": total * per_request,
                "before: ms/request": round(sum(BEFORE_MS.values()), 3),
            }
        )
    functions = [(name, n) for name, n in inclusive.most_common() if not name.startswith(_ROOTS)]
    rows += [
        {"kind": "function", "name": name, "share %": 100 * n / total, "self %": 100 * own[name] / total}
        for name, n in functions[:TOP]
    ]
    return rows, total


def run(quick: bool) -> dict[str, Any]:
    from downloads.adapters.tokens import TokenSigner

    spy = _py_spy()
    if spy is None:
        return {"skipped": "py-spy is not installed (pip install -e '.[dev]')"}
    seconds = 8.0 if quick else 30.0
    signer = TokenSigner(SECRET)
    headers = {"Authorization": f"Bearer {signer.issue('service', ttl_seconds=3600)}"}
    with scratch_dir() as workdir:
        env = {**os.environ, "DOWNLOADS_AUTH_SECRET": SECRET, "DOWNLOADS_SERVER": "granian"}
        port = free_port()
        cmd = [sys.executable, "-m", "downloads.entrypoints.cli", "serve", "--store",
               f"sqlite:///{workdir / 'downloads.db'}", "--port", str(port), "--workers", "1",
               "--log-level", "warning"]  # fmt: skip
        ours = ServerProcess("downloads serve", cmd, env=env, port=port, log=workdir / "ours.log", cwd=ROOT)
        try:
            ours.start(timeout=60)
            assert ours.process is not None
            _setup(ours.url, signer.issue("admin", ttl_seconds=3600))
            pids = [
                p.pid
                for p in _children(ours.process.pid)
                if "python" in (c := " ".join(p.command())) or "downloads" in c
            ]
            progress(f"profiling processes {pids} for {seconds:.0f} s")
            spies = [
                subprocess.Popen(
                    [
                        spy,
                        "record",
                        "--pid",
                        str(pid),
                        "--rate",
                        str(RATE),
                        "--duration",
                        str(int(seconds)),
                        "--format",
                        "raw",
                        "--gil",
                        "--nonblocking",
                        "--output",
                        str(workdir / f"spy-{pid}.txt"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for pid in pids
            ]
            conns = [Connection("127.0.0.1", port, headers) for _ in range(CLIENTS)]
            pair = _ours_pair(lambda i: f"bench-{i}", lambda i: "d1", lambda i: "demo-title-1")

            async def load() -> tuple[Tally, float, float]:
                await _drive(conns, pair, 1.0)
                return await _drive(conns, pair, seconds + 2)

            started = time.perf_counter()
            tally, wall, _cpu = _loop_runner()(load())
            for s in spies:
                s.wait(timeout=60)
            progress(f"{len(tally.latencies)} requests in {time.perf_counter() - started:.0f} s")
        finally:
            ours.stop(grace=10)
        raws = [p for p in workdir.glob("spy-*.txt") if p.stat().st_size > 0]
        keep = os.environ.get("BENCH_KEEP_PROFILE")
        if keep:  # the collapsed stacks, for a flame graph or a closer look
            for raw in raws:
                shutil.copy(raw, Path(keep) / raw.name)
        rows, samples = _summarise(raws, len(tally.latencies) * seconds / wall)
    method = (
        f"A real `downloads serve --store sqlite:///<scratch>/downloads.db --workers 1` (granian, "
        f"`DOWNLOADS_READ_SIDE` at its default, background) loaded by `bench http`'s client: {CLIENTS} "
        f"keep-alive connections doing acquire+release pairs on their own accounts, back to back. "
        f"While it runs, `py-spy record --gil --nonblocking --rate {RATE} --format raw` samples every "
        f"Python process of the server's (the worker and the read side's process serve starts beside it) for "
        f"{seconds:.0f} s: --gil keeps only the thread holding the GIL, so a sample is Python CPU "
        f"time, whatever thread (event loop, thread pool, read side) spends it. From the collapsed stacks: "
        f"a 'layer' row is the share of all samples ({samples:,}) whose topmost frame of a known layer is of it "
        f"(`OWN_LAYERS` in bench/bench_http_profile.py, looked for anywhere on the stack: the read side "
        f"first, then the store, metrics, tracing and logs, auth, the service, the routes), or else of the layer "
        f"of its topmost frame outside the standard library (`FRAMEWORK_LAYERS`: our middleware, FastAPI's "
        f"dependency and "
        f"response handling, the thread-pool hand-off, routing; the rest is the HTTP server, Starlette and the "
        f"event loop); a 'function' row's "
        f"'share %' is the share with the function anywhere on the stack (inclusive), 'self %' with it on top. "
        f"The {TOP} functions with the largest inclusive share are listed, frames above every request "
        f"(process start, granian's worker loop, thread start) left out; {len(tally.latencies):,} requests "
        f"({wall:.0f} s). 'ms/request' is the layer's samples x {1000 / RATE:g} ms / the requests served while "
        f"sampling ({seconds:.0f} s of the {wall:.0f} s of load, counted in proportion): Python time with the GIL "
        f"per request, lower than the process's CPU time (granian's Rust threads, SQLite's and the kernel's work "
        f"without the GIL are not sampled); 'before: ms/request' the same from this benchmark's run on the code "
        f"before issue 21's HTTP work (`BEFORE_MS`). On a shared machine a thread that holds the GIL while the "
        f"kernel runs another process is still sampled, so the milliseconds grow with the machine's load: "
        f"compare shares within a run, and CPU per request with `bench http`. "
        "Compare it with the next change's profile by function, not by absolute counts."
    )
    return {"title": TITLE, "method": method, "rows": rows, "goals": []}
