"""``downloads serve`` (the HTTP API, with its dev tokens when no secret is set) and ``downloads token``.

Without ``DOWNLOADS_MASTER_KEY``, ``serve`` refuses to start in production mode, and in development says
which generated key wraps members' keys (see :mod:`downloads.adapters.master_keys`).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from downloads.adapters.policy_file import PolicyError, parse_duration
from downloads.entrypoints.cli.common import (
    PARENT_VARIABLE,
    STOPPED_ON_SIGNAL,
    UsageError,
    settings_from,
    store_option,
)
from downloads.settings import Settings

__all__ = ["DEV_TOKENS_FILE", "ReadSideProcess", "add_commands"]


def _run_http_server(settings: Settings, log_level: str) -> None:
    """Serve the app with the chosen server and its limits on slow and oversized requests.

    Granian (the default) bounds a request's head by size (431) and by time, and closes idle
    keep-alive connections after the same time; uvicorn is kept for comparison (``uvicorn-h11``
    bounds the head's size, neither bounds the time a head may take to arrive). Every process
    (the server's and its workers') writes log lines in ``settings.log_format``.
    """
    from downloads.adapters.logs import logging_config

    log_config = logging_config(settings.log_format, log_level)
    target = "downloads.entrypoints.http.app:create_app_from_env"
    if settings.server == "granian":
        from granian import Granian
        from granian.constants import HTTPModes, Interfaces
        from granian.http import HTTP1Settings
        from granian.log import LogLevels

        Granian(
            target,
            address=settings.host,
            port=settings.port,
            interface=Interfaces.ASGI,
            workers=settings.workers,
            factory=True,
            http=HTTPModes.http1,
            websockets=False,
            backpressure=settings.max_concurrency,
            http1_settings=HTTP1Settings(
                header_read_timeout=int(settings.header_timeout * 1000), max_buffer_size=settings.max_header_bytes
            ),
            log_level=LogLevels(log_level),
            log_dictconfig=log_config,
            log_access=False,
            # A stop that arrives while a worker is still starting would otherwise wait forever.
            workers_kill_timeout=10,
        ).serve()
        return
    import uvicorn

    uvicorn.run(
        target,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=log_level,
        log_config=log_config,
        access_log=False,
        http="h11" if settings.server == "uvicorn-h11" else "httptools",
        h11_max_incomplete_event_size=settings.max_header_bytes,
        timeout_keep_alive=max(1, int(settings.header_timeout)),
        limit_concurrency=settings.max_concurrency,  # per worker, as granian's backpressure
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    from downloads.adapters.tokens import new_secret
    from downloads.adapters.tracing import TracingError, check_tracing
    from downloads.bootstrap import bootstrap

    settings = settings_from(args)
    try:
        check_tracing()  # the OTEL_* variables: refused here, not in every worker
    except TracingError as exc:
        raise UsageError(str(exc)) from exc
    # Open the store and read the policy once here, so a bad setting fails before any worker starts.
    runtime = bootstrap(settings)
    runtime.close()
    if runtime.masters is not None and runtime.masters.dev_file is not None:
        _show_dev_master_key(runtime.masters.dev_file, runtime.masters.keys.current.id, settings.log_format)
    secret = settings.auth_secret
    if not secret:
        secret = new_secret()
        _show_dev_tokens(_signer(secret, settings))
    else:
        _signer(secret, settings)  # refuse a weak secret or a bad cap now, not in each worker
    env = {
        "DOWNLOADS_STORE": settings.store,
        "DOWNLOADS_AUTH_SECRET": secret,
        "DOWNLOADS_SNAPSHOT_EVERY": str(settings.snapshot_every),
        "DOWNLOADS_CACHE_SIZE": str(settings.cache_size),
        "DOWNLOADS_IDEMPOTENCY_HOURS": str(settings.idempotency_hours),
        "DOWNLOADS_MAX_BODY_BYTES": str(settings.max_body_bytes),
        "DOWNLOADS_LOG_FORMAT": settings.log_format,
    }
    # The store exists now (the bootstrap above made it if allowed): workers only open it, so a
    # SQLite file removed while serving is reported, never silently made again.
    env["DOWNLOADS_CREATE_SCHEMA"] = "false"
    if settings.policy:
        env["DOWNLOADS_POLICY"] = os.path.abspath(settings.policy)
    os.environ.update(env)
    metrics_dir = None
    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Workers write metrics to files here so /metrics sums every process.
        metrics_dir = tempfile.mkdtemp(prefix="downloads-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    serving = (
        f"serving on http://{settings.host}:{settings.port} with store {settings.store} "
        f"({settings.workers} worker{'s' if settings.workers > 1 else ''})"
    )
    _say(serving, settings.log_format)
    read_side = None
    if settings.read_side == "background" and not settings.store.startswith("memory:"):
        # (A memory store lives in one process: there the worker keeps its own read side, as before.)
        # The read side runs in a process of its own beside the workers: its batches then never hold
        # a worker's interpreter while commands wait (issue 21 measured 0.29 ms of a request's 1.00
        # going to it in the worker), and its cost does not grow with the workers, of which only
        # one would apply at a time anyway. The workers only read its models and status.
        os.environ["DOWNLOADS_READ_SIDE"] = "off"
        read_side = ReadSideProcess(settings.log_format)
        read_side.start()
    try:
        _run_http_server(settings, args.log_level)
    finally:
        if read_side is not None:
            read_side.stop()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


class ReadSideProcess:
    """``downloads project --quiet`` beside the HTTP workers: started with ``serve``, started again
    (after 1 s, doubling up to 30 s while it keeps failing) whenever it exits, stopped with ``serve``.

    It follows its parent: if ``serve`` dies without stopping it (SIGKILL), it stops within seconds.
    The lease lets it share the store with any other runner (``downloads project`` elsewhere, a
    second ``serve``): one applies at a time.
    """

    #: seconds between restarts of a read side that keeps exiting: the first, and the most
    BACKOFF = (1.0, 30.0)
    #: a run this long resets the backoff
    HEALTHY = 60.0
    #: how long a process that stopped on a stop signal waits for serve to stop too before it is
    #: started again (a signal to the whole group reaches both; serve may take a while to stop)
    STOP_SIGNAL_WAIT = 30.0

    def __init__(self, log_format: str = "text") -> None:
        self._log_format = log_format
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._watcher = threading.Thread(target=self._watch, name="read-side-process", daemon=True)

    def start(self) -> None:
        self._spawn()
        self._watcher.start()

    def _spawn(self) -> None:
        # -P: the working directory is not put first on the module path (as the console script does not)
        command = [sys.executable, "-P", "-m", "downloads.entrypoints.cli", "project", "--quiet"]
        env = {**os.environ, PARENT_VARIABLE: str(os.getpid())}
        with self._lock:
            if not self._stopping.is_set():
                self._process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)

    def _watch(self) -> None:
        delay = self.BACKOFF[0]
        while not self._stopping.is_set():
            process = self._process
            if process is None:
                return
            started = time.monotonic()
            status = process.wait()
            # A stop signal sent to the whole group (Ctrl-C on a terminal, a service manager's stop)
            # reaches the read side's process too: serve is about to stop, give it time to.
            on_signal = status in (STOPPED_ON_SIGNAL, -signal.SIGTERM, -signal.SIGINT)
            if self._stopping.wait(self.STOP_SIGNAL_WAIT if on_signal else 1.0):
                return
            if time.monotonic() - started >= self.HEALTHY:
                delay = self.BACKOFF[0]
            _say(
                f"the read side's process exited with status {status}; starting it again in {delay:.0f} s",
                self._log_format,
                logging.WARNING,
            )
            if self._stopping.wait(max(0.0, delay - 1.0)):  # the second waited above counts
                return
            delay = min(delay * 2, self.BACKOFF[1])
            self._spawn()

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM to the process (it finishes its batch and releases its lease), SIGKILL after
        ``grace`` seconds."""
        with self._lock:
            self._stopping.set()
            process = self._process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace)
        self._watcher.join(timeout=grace)


def _cmd_token(args: argparse.Namespace) -> int:
    secret = args.secret or os.environ.get("DOWNLOADS_AUTH_SECRET")
    if not secret:
        raise UsageError("no secret: set DOWNLOADS_AUTH_SECRET (the one the server uses) or pass --secret")
    try:
        ttl = parse_duration(args.ttl, "--ttl")
    except PolicyError as exc:  # a bad option, not a bad policy: exit 1 as other usage errors do
        raise UsageError(str(exc)) from None
    signer = _signer(secret, settings_from(args))
    try:
        token = signer.issue(args.role, ttl_seconds=ttl.total_seconds(), subject=args.subject)
    except ValueError as exc:
        raise UsageError(f"--ttl: {exc}") from exc
    print(token)
    return 0


def _signer(secret: str, settings: Settings) -> Any:
    from downloads.adapters.tokens import TokenSigner, parse_max_ttl

    try:
        return TokenSigner(
            secret, previous=settings.auth_previous_secret, max_ttl=parse_max_ttl(settings.token_max_ttl)
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


#: where ``serve`` writes the tokens of a generated secret when stderr is not a terminal
DEV_TOKENS_FILE = "downloads-dev-tokens.txt"


def _show_dev_tokens(signer: Any) -> None:
    """Tokens for a generated secret: on the terminal, or in a file only its owner can read.

    Never into a log: stderr that is not a terminal usually ends up in log collection.
    """
    ttl = min(86400, signer.max_ttl["admin"], signer.max_ttl["service"])
    lines = [f"{role} {signer.issue(role, ttl_seconds=ttl)}" for role in ("service", "admin")]
    if sys.stderr.isatty():
        print(f"No DOWNLOADS_AUTH_SECRET set: generated one for this run. Tokens (valid {ttl}s):", file=sys.stderr)
        for line in lines:
            print(f"  {line}", file=sys.stderr)
        return
    path = os.path.abspath(DEV_TOKENS_FILE)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # never write through a link, or into a file someone else can read
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("\n".join(lines) + "\n")
    except OSError as exc:
        raise UsageError(f"cannot write the dev tokens to {path}: {exc}; set DOWNLOADS_AUTH_SECRET") from exc
    print(f"No DOWNLOADS_AUTH_SECRET set: generated one for this run; tokens written to {path}", file=sys.stderr)


def _show_dev_master_key(where: str, key_id: str, log_format: str = "text") -> None:
    """Say that members' keys are wrapped by a development key, and where it is (never the key itself);
    as a JSON log line when the logs are JSON (every line of the server is then one object)."""
    kept = "generated for this process" if where == "memory" else f"kept in {os.path.abspath(where)}"
    message = (
        f"No DOWNLOADS_MASTER_KEY set (development mode): members' keys are wrapped by a development master key "
        f"(id {key_id}, {kept}). In production set DOWNLOADS_MASTER_KEY (`downloads keys new` makes one)."
    )
    _say(message, log_format, logging.WARNING, prefix="")


def _say(message: str, log_format: str, level: int = logging.INFO, prefix: str = "downloads: ") -> None:
    """A line of ``serve``'s own on stderr: a JSON log object when the logs are JSON, else plain text."""
    if log_format == "json":
        from downloads.adapters.logs import JsonFormatter

        record = logging.LogRecord("downloads.serve", level, __file__, 0, message, None, None)
        print(JsonFormatter().format(record), file=sys.stderr)
    else:
        print(f"{prefix}{message}", file=sys.stderr)


def add_commands(sub: Any) -> None:
    """``serve`` and ``token``."""
    serve = sub.add_parser("serve", help="run the HTTP API")
    store_option(serve)
    serve.add_argument("--policy", help="policy TOML file (env DOWNLOADS_POLICY; default: built in)")
    serve.add_argument("--host", help="listen address (env DOWNLOADS_HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (env DOWNLOADS_PORT; default 8000)")
    serve.add_argument("--workers", type=int, help="server processes (env DOWNLOADS_WORKERS; default 1)")
    serve.add_argument(
        "--log-level",
        default=os.environ.get("DOWNLOADS_LOG_LEVEL", "info"),
        choices=["critical", "error", "warning", "info", "debug"],
    )
    serve.add_argument(
        "--log-format",
        choices=["text", "json"],
        help="text, or json: one object per line with request, trace and span ids (env DOWNLOADS_LOG_FORMAT)",
    )
    serve.set_defaults(run=_cmd_serve)

    token = sub.add_parser("token", help="print a signed bearer token")
    token.add_argument("--role", required=True, choices=["service", "support", "admin"])
    token.add_argument(
        "--ttl", default="1h", help="validity, e.g. 15m, 1h, 7d (default 1h; at most the role's cap, see settings)"
    )
    token.add_argument("--subject", default="cli", help="who the token is for (default cli)")
    token.add_argument("--secret", help="signing secret (env DOWNLOADS_AUTH_SECRET)")
    token.set_defaults(run=_cmd_token)
