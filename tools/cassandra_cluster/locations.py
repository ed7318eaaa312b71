"""Where things live: the repository root, the classpath cache, cluster directories, the data files."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "DEFAULT_VERSION",
    "FILES_DIR",
    "cassandra_home",
    "clusters_root",
    "default_base_dir",
    "default_version",
    "repo_root",
]

DEFAULT_VERSION = "5.0.8"
"""Cassandra version fetched when neither the caller nor ``ESKIT_CASSANDRA_VERSION`` names one."""

FILES_DIR = Path(__file__).resolve().parent / "files"
"""The tool's data files: ``pom.xml``, ``logback.xml`` and the node configuration templates."""


def repo_root(start: Path | None = None) -> Path:
    """Return the nearest directory at or above ``start`` (default: this module) holding a
    ``pyproject.toml``; the current working directory when there is none."""
    here = (start or Path(__file__)).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "pyproject.toml").is_file():
            return candidate
    return Path.cwd()


def default_version() -> str:
    """The Cassandra version to use: ``ESKIT_CASSANDRA_VERSION`` or :data:`DEFAULT_VERSION`."""
    return os.environ.get("ESKIT_CASSANDRA_VERSION") or DEFAULT_VERSION


def cassandra_home(version: str | None = None) -> Path:
    """Folder holding the fetched classpath in ``lib/``: ``ESKIT_CASSANDRA_HOME`` if set,
    else ``<repo root>/.cache/cassandra/<version>``."""
    override = os.environ.get("ESKIT_CASSANDRA_HOME")
    if override:
        return Path(override).resolve()
    return repo_root() / ".cache" / "cassandra" / (version or default_version())


def clusters_root() -> Path:
    """Parent of the default cluster base directories: ``<repo root>/.cache/cassandra/clusters``."""
    return repo_root() / ".cache" / "cassandra" / "clusters"


def default_base_dir(nodes: int, dcs: int = 1, paxos_variant: str = "v2") -> Path:
    """Default base directory: ``<clusters root>/<nodes>node`` (``-<dcs>dc``, ``-paxos<v>`` when not the default)."""
    name = f"{nodes}node" + (f"-{dcs}dc" if dcs > 1 else "")
    if paxos_variant != "v2":
        name += f"-paxos{paxos_variant}"
    return clusters_root() / name
