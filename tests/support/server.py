"""A real server process for end-to-end tests, started and always stopped in bounded time."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from downloads.adapters.tokens import TokenSigner
from tests.support.cassandra import MASTER_KEY
from tools.server_process import ServerProcess, free_port

SECRET = "e2e-secret-" + "x" * 32


@dataclass
class Server:
    """A running ``downloads serve`` process and what a client needs to talk to it."""

    store: str
    port: int
    workers: int = 1
    policy: Path | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    prefix: Sequence[str] = ()  # a command that runs the server, such as faketime with its offset
    log_path: Path | None = None
    running: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self.running.process if self.running else None

    def token(self, role: str = "service", *, ttl_seconds: int = 3600) -> str:
        return TokenSigner(SECRET).issue(role, ttl_seconds=ttl_seconds)

    def client(self, role: str | None = "service", **kwargs: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token(role)}"} if role else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)  # type: ignore[arg-type]

    def start(self, *, timeout: float = 60) -> None:
        cmd = [
            *self.prefix,
            sys.executable,
            "-m",
            "downloads.entrypoints.cli",
            "serve",
            "--store",
            self.store,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--log-level",
            "warning",
        ]
        if self.policy is not None:
            cmd += ["--policy", str(self.policy)]
        env = {**os.environ, "DOWNLOADS_AUTH_SECRET": SECRET, **self.env}
        if self.store.startswith("cassandra://"):  # production mode: the tests' master key unless one is given
            env.setdefault("DOWNLOADS_MASTER_KEY", MASTER_KEY)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.running = ServerProcess("server", cmd, env=env, port=self.port, log=self.log_path)
        self.running.start(timeout=timeout)

    def log_tail(self) -> str:
        return self.running.log_tail() if self.running else "(no log)"

    def kill(self) -> None:
        """SIGKILL the whole process group (the server and its workers), no goodbye."""
        if self.running is not None:
            self.running.kill()

    def stop(self, *, grace: float = 10) -> None:
        """SIGTERM the process group, SIGKILL it after ``grace`` seconds."""
        if self.running is not None:
            self.running.stop(grace=grace)


@contextmanager
def running_server(
    tmp_path: Path,
    *,
    store: str | None = None,
    workers: int = 1,
    policy: Path | None = None,
    env: Mapping[str, str] | None = None,
    prefix: Sequence[str] = (),
    read_side: bool | None = None,
) -> Iterator[Server]:
    """Start a server on a fresh SQLite file (unless ``store`` is given); stop it whatever happens.

    ``read_side`` None runs the background read side on SQLite and leaves it off on Cassandra,
    where it would add some thirty tables to the test's keyspace (the nodes' small heaps hold the
    schema of every keyspace a session makes): tests of the read side ask for it.
    """
    store = store or f"sqlite:///{tmp_path / 'downloads.db'}"
    if read_side is None:
        read_side = not store.startswith("cassandra:")
    server = Server(
        store=store,
        port=free_port(),
        workers=workers,
        policy=policy,
        env={"DOWNLOADS_READ_SIDE": "background" if read_side else "off", **(env or {})},
        prefix=prefix,
        log_path=tmp_path / "server.log",
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


# -- helpers for end-to-end assertions ----------------------------------------------

#: ISO 8601 in UTC ending with ``Z`` (product spec section 4)
ISO_UTC_Z = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$"


def unique_id(prefix: str = "acct") -> str:
    """A fresh identifier, so tests sharing one server never share an account."""
    import uuid

    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def expect_error(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    """Assert ``response`` is the error envelope with ``status`` and ``code``; return its details."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["details"], dict), error
    details: dict[str, object] = error["details"]
    return details


def read_all_events(http: httpx.Client, account_id: str, *, page: int = 100) -> list[dict[str, Any]]:
    """Every event of the account, oldest first, read ``page`` at a time through ``GET .../events``.

    Asserts that each page answers 200 and that the pages join up: sequences run 1..N without gaps or
    repeats, and ``next`` is the last sequence of a page that has more after it (``None`` on the last).
    """
    events: list[dict[str, Any]] = []
    after = 0
    for _ in range(100_000):  # bounded: a runaway cursor fails instead of looping forever
        answer = http.get(f"/v1/accounts/{account_id}/events", params={"after": after, "limit": page})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        events.extend(body["events"])
        if body["next"] is None:
            break
        assert body["next"] == body["events"][-1]["seq"], body["next"]
        after = body["next"]
    else:
        raise AssertionError("the events cursor never ended")
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), "event sequences have gaps or repeats"
    return events
