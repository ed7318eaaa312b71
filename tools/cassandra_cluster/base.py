"""What every part of the cluster tool shares: its error type, progress loggers and a file lock."""

from __future__ import annotations

import contextlib
import fcntl
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = [
    "ClusterError",
    "Logger",
    "file_lock",
    "quiet_logger",
    "stderr_logger",
]

Logger = Callable[[str], None]
"""Receives one progress line at a time."""


class ClusterError(RuntimeError):
    """A cluster operation failed; the message includes the relevant log tail where there is one."""


def stderr_logger(message: str) -> None:
    """The default :data:`Logger`: print the line to stderr."""
    print(message, file=sys.stderr, flush=True)


def quiet_logger(message: str) -> None:
    """A :data:`Logger` that drops every line."""
    del message


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the duration of the block.

    Used so that parallel test workers neither fetch the classpath twice nor start the same
    cluster twice; the lock is released by the kernel if the holder dies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
