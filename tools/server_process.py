"""A server in its own process group: started, waited for on its readiness path, always stopped in bounded time.

Shared by the end-to-end tests and the HTTP benchmark, which both run real
servers (ours and, in the benchmark, a trivial one to compare with).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

__all__ = ["ProcessInfo", "ServerProcess", "free_port", "processes"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ProcessInfo:
    """A live process as Linux's ``/proc`` shows it: what tests and the benchmarks ask of a server's
    processes (its workers, the read side's process it starts, their CPU time)."""

    pid: int
    ppid: int
    pgrp: int
    cpu_seconds: float  # user + system so far

    def command(self) -> list[str]:
        """Its command line; empty once it is gone."""
        try:
            with open(f"/proc/{self.pid}/cmdline", "rb") as f:
                return f.read().decode(errors="replace").split("\0")[:-1]
        except OSError:
            return []


def processes() -> list[ProcessInfo]:
    """Every live process of this machine (zombies, which have exited, left out)."""
    tick = os.sysconf("SC_CLK_TCK")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                # after "pid (comm)": state, ppid, pgrp, ..., utime (12th), stime (13th)
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != b"Z":
            cpu = (int(fields[11]) + int(fields[12])) / tick
            found.append(ProcessInfo(int(entry), int(fields[1]), int(fields[2]), cpu))
    return found


class ServerProcess:
    """One server command, its environment, the port it listens on and the file it logs to."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        *,
        env: Mapping[str, str],
        port: int,
        log: Path | None = None,
        cwd: Path | None = None,
        ready_path: str = "/readyz",
    ) -> None:
        self.name, self.cmd, self.env, self.port, self.log, self.cwd = name, list(cmd), dict(env), port, log, cwd
        #: answers 200 once the server serves (``/readyz`` for ours, ``/-/ready`` for Prometheus)
        self.ready_path = ready_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, timeout: float = 60) -> None:
        """Start the server and wait until its ready path answers 200; raise ``RuntimeError`` (and stop it) if not."""
        if self.log is not None:
            with open(self.log, "ab") as log:  # the child keeps its own copy of the descriptor
                self.process = self._spawn(log, log)
        else:
            self.process = self._spawn(subprocess.DEVNULL, subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {self.log_tail()}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready within {timeout:.0f}s: {self.log_tail()}")

    def _spawn(self, stdout: int | IO[bytes], stderr: int | IO[bytes]) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.cmd,
            env=self.env,
            cwd=self.cwd,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )

    def log_tail(self) -> str:
        if self.log is not None and self.log.exists():
            return self.log.read_text(errors="replace")[-3000:]
        return "(no log)"

    def kill(self) -> None:
        """SIGKILL the whole process group (the server and its workers), no goodbye."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self, *, grace: float = 10) -> None:
        """SIGTERM the process group; SIGKILL it if it has not exited after ``grace`` seconds."""
        if self.process is None:
            return
        if self.process.poll() is not None:
            # The leader is gone (killed by a test, say): whatever it left in its group goes too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()
        except ProcessLookupError:
            pass
