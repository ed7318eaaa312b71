"""Where things live: the classpath cache, the broker's folder, the data files, the default version and ports."""

from __future__ import annotations

import os
from pathlib import Path

from tools.cassandra_cluster.locations import repo_root

__all__ = [
    "CONTROLLER_PORT",
    "DEFAULT_VERSION",
    "FILES_DIR",
    "HOST",
    "PORT",
    "default_base_dir",
    "default_version",
    "kafka_home",
]

DEFAULT_VERSION = "4.4.0"
"""Kafka version fetched when neither the caller nor ``ESKIT_KAFKA_VERSION`` names one."""

HOST = "127.0.0.1"
#: the broker's client port and the controller's: far from Cassandra's (7000, 7200+, 9042) and from the
#: ephemeral range the test servers' ports come from
PORT = 19092
CONTROLLER_PORT = 19093

FILES_DIR = Path(__file__).resolve().parent / "files"
"""The tool's data files: ``pom.xml``, ``log4j2.xml`` and the ``server.properties`` template."""


def default_version() -> str:
    """The Kafka version to use: ``ESKIT_KAFKA_VERSION`` or :data:`DEFAULT_VERSION`."""
    return os.environ.get("ESKIT_KAFKA_VERSION") or DEFAULT_VERSION


def kafka_home(version: str | None = None) -> Path:
    """Folder holding the fetched classpath in ``lib/``: ``ESKIT_KAFKA_HOME`` if set, else
    ``<repo root>/.cache/kafka/<version>`` (git-ignored)."""
    override = os.environ.get("ESKIT_KAFKA_HOME")
    if override:
        return Path(override).resolve()
    return repo_root(Path(__file__)) / ".cache" / "kafka" / (version or default_version())


def default_base_dir() -> Path:
    """The broker's folder: ``<repo root>/.cache/kafka/broker``."""
    return repo_root(Path(__file__)) / ".cache" / "kafka" / "broker"
