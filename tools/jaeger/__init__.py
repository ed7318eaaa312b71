"""Jaeger v2 (built on the OpenTelemetry Collector) as a local OTLP receiver for the trace tests.

A development tool of this repository, not part of the installed packages. Jaeger is built once
from the Go module proxy with the Go toolchain (``module/`` pins it and every dependency:
``go.mod``, ``go.sum``) into the git-ignored ``.cache/jaeger/<version>/jaeger``; ``make test``
builds it (``make jaeger-fetch``), and so does the first test that needs it. A build from an empty
Go module cache takes about ten minutes on two cores, a rebuild seconds.

:class:`LocalJaeger` runs it on loopback with memory storage: spans arrive over OTLP/HTTP on one
port and are read back as JSON from the query API on another::

    jaeger = LocalJaeger(work_dir)
    jaeger.start()                      # builds if needed, waits until it answers
    jaeger.otlp_endpoint                # "http://127.0.0.1:<port>" for OTEL_EXPORTER_OTLP_ENDPOINT
    jaeger.trace("4bf92f3577b34da6a3ce929d0e0e4736")   # the spans of one trace, [] if none yet
    jaeger.find("downloads", "projection batch")       # spans of one name a service sent
    jaeger.stop()

Command line: ``python -m tools.jaeger fetch`` (build, print the binary's path).
Environment: ``DOWNLOADS_JAEGER`` names a Jaeger binary to use instead of building one.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tools.server_process import ServerProcess, free_port

__all__ = ["VERSION", "JaegerError", "LocalJaeger", "binary", "build", "main"]

#: the Jaeger release ``module/go.mod`` pins
VERSION = "v1.75.0"
PACKAGE = "github.com/jaegertracing/jaeger/cmd/jaeger"
ROOT = Path(__file__).resolve().parents[2]
MODULE = Path(__file__).resolve().parent / "module"

CONFIG = """\
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query_port}
    grpc:
      endpoint: 127.0.0.1:{grpc_port}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:{otlp_port}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


class JaegerError(RuntimeError):
    """Jaeger could not be built or started."""


def binary() -> Path:
    """Where the built binary is (or will be): ``DOWNLOADS_JAEGER``, else the cache folder."""
    chosen = os.environ.get("DOWNLOADS_JAEGER")
    return Path(chosen) if chosen else ROOT / ".cache" / "jaeger" / VERSION / "jaeger"


def build(*, timeout: float = 1800) -> Path:
    """Build Jaeger into the cache unless it is there; return its path. Raises :class:`JaegerError`."""
    target = binary()
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # One build at a time: a second caller (CI starts a build in the background before the tests,
    # and the first test that needs Jaeger asks again) waits for the first and then finds the binary.
    with (target.parent / ".build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            return target
        return _build(target, timeout=timeout)


def _build(target: Path, *, timeout: float) -> Path:
    # where the Go distribution installs itself when it is not on PATH
    go = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if go is None:
        raise JaegerError("the Go toolchain (go) is needed to build Jaeger for the trace tests")
    partial = target.with_suffix(".partial")
    print(f"building Jaeger {VERSION} into {target} (minutes the first time)", file=sys.stderr)
    try:
        subprocess.run(
            [go, "build", "-o", str(partial), PACKAGE], cwd=MODULE, check=True, timeout=timeout, env=_go_env()
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        partial.unlink(missing_ok=True)
        raise JaegerError(f"building Jaeger failed: {exc}") from exc
    partial.replace(target)  # only a whole binary ever has the final name
    return target


def _go_env() -> dict[str, str]:
    # The module's go.sum pins every dependency: never rewrite it, never look for newer versions.
    return {**os.environ, "GOFLAGS": "-mod=readonly -buildvcs=false"}


class LocalJaeger:
    """One Jaeger process with memory storage on free loopback ports, logging into ``work_dir``."""

    def __init__(self, work_dir: Path, *, nice: int = 0) -> None:
        """``nice``: the niceness Jaeger runs at (a benchmark lowers the priority of a receiver that stands in
        for a collector on another machine, so that it takes what the measured server leaves)."""
        self.work_dir, self.nice = work_dir, nice
        self.otlp_port, self.query_port, self.grpc_port = free_port(), free_port(), free_port()
        self._process: ServerProcess | None = None

    @property
    def otlp_endpoint(self) -> str:
        """The base URL for ``OTEL_EXPORTER_OTLP_ENDPOINT`` (OTLP over HTTP)."""
        return f"http://127.0.0.1:{self.otlp_port}"

    def start(self, *, timeout: float = 60) -> None:
        """Start Jaeger (building it first if needed) and wait until its query API answers."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        config = self.work_dir / "jaeger.yaml"
        ports = {"otlp_port": self.otlp_port, "query_port": self.query_port, "grpc_port": self.grpc_port}
        config.write_text(CONFIG.format(**ports))
        self._process = ServerProcess(
            "jaeger",
            [*(["nice", "-n", str(self.nice)] if self.nice else []), str(build()), "--config", f"file:{config}"],
            env=dict(os.environ),
            port=self.query_port,
            log=self.work_dir / "jaeger.log",
            ready_path="/api/services",
        )
        self._process.start(timeout=timeout)

    def trace(self, trace_id: str) -> list[dict[str, Any]]:
        """The spans Jaeger holds for ``trace_id`` (hex), in its JSON form; empty when it has none yet."""
        answer = httpx.get(f"http://127.0.0.1:{self.query_port}/api/traces/{trace_id}", timeout=5)
        if answer.status_code == 404:
            return []
        answer.raise_for_status()
        data = answer.json().get("data") or []
        return [span for each in data for span in each.get("spans", [])]

    def find(self, service: str, operation: str) -> list[dict[str, Any]]:
        """The spans named ``operation`` that ``service`` sent (the newest traces, at most 50)."""
        answer = httpx.get(
            f"http://127.0.0.1:{self.query_port}/api/traces",
            params={"service": service, "operation": operation, "limit": 50, "lookback": "1h"},
            timeout=5,
        )
        if answer.status_code == 404:
            return []
        answer.raise_for_status()
        data = answer.json().get("data") or []
        return [span for each in data for span in each.get("spans", []) if span.get("operationName") == operation]

    def log_tail(self) -> str:
        return self._process.log_tail() if self._process else "(no log)"

    def stop(self) -> None:
        """Stop Jaeger (SIGTERM, then SIGKILL after a few seconds)."""
        if self._process is not None:
            self._process.stop(grace=5)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args != ["fetch"]:
        print("usage: python -m tools.jaeger fetch", file=sys.stderr)
        return 2
    try:
        print(build())
    except JaegerError as exc:
        print(f"JaegerError: {exc}", file=sys.stderr)
        return 1
    return 0
