"""Looking at processes, ports and log files from outside (Linux ``/proc``, TCP connects, file tails)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

__all__ = [
    "port_open",
    "proc_cmdline",
    "proc_state",
    "tail",
]


def proc_state(pid: int) -> str | None:
    """Linux process state letter (R, S, D, T, Z, ...) or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces: split after it.
    return stat.rsplit(")", 1)[1].split()[0]


def proc_cmdline(pid: int) -> list[str]:
    """Command line of process ``pid`` (empty if there is no such process)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    """True if a TCP connection to ``host:port`` succeeds within ``timeout`` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 60) -> str:
    """Last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 256 * 1024))
            data = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])
