"""What runs the broker: a Java 17 executable and the Kafka jars fetched from Maven Central with ``mvn``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from tools.cassandra_cluster.base import Logger, file_lock, stderr_logger
from tools.kafka_broker.base import BrokerError
from tools.kafka_broker.locations import FILES_DIR, default_version, kafka_home

__all__ = ["DEFAULT_JAVA", "fetch", "java_executable"]

DEFAULT_JAVA = Path("/usr/lib/jvm/java-17-openjdk-amd64/bin/java")
"""Kafka 4 brokers need Java 17 or newer; the same JDK the Cassandra tool uses."""

_MARKER = ".fetched"


def fetch(
    version: str | None = None, home: Path | None = None, *, force: bool = False, log: Logger = stderr_logger
) -> Path:
    """Make sure the broker's classpath is in ``<home>/lib`` and return that folder.

    The first call runs ``mvn -B -q dependency:copy-dependencies`` on the tool's pom into a
    temporary folder, renames it into place and writes a marker; later calls see the marker and
    return at once (a failed or interrupted fetch leaves no marker, so the next call starts over).
    Parallel callers wait on a file lock. ``force`` fetches again.

    Raises :class:`BrokerError` when ``mvn`` is missing or fails, or the result has no broker jar.
    """
    version = version or default_version()
    home = (home or kafka_home(version)).resolve()
    lib, marker = home / "lib", home / _MARKER
    if not force and _marker_matches(marker, version) and lib.is_dir():
        return lib
    with file_lock(home / ".fetch.lock"):
        if not force and _marker_matches(marker, version) and lib.is_dir():
            return lib  # another process finished it while we waited
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError("mvn not found on PATH: it is needed once to fetch the Kafka jars")
        started = time.monotonic()
        log(f"fetch: resolving org.apache.kafka:kafka_2.13:{version} into {lib} ...")
        marker.unlink(missing_ok=True)
        partial = home / "lib.partial"
        shutil.rmtree(partial, ignore_errors=True)
        pom = home / "pom.xml"
        shutil.copyfile(FILES_DIR / "pom.xml", pom)
        env = {**os.environ, "JAVA_HOME": str(java_executable().resolve().parent.parent)}
        cmd = [
            mvn,
            "-B",
            "-q",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-Dkafka.version={version}",
            f"-DoutputDirectory={partial}",
        ]
        result = subprocess.run(cmd, env=env, cwd=home, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip().splitlines()
            raise BrokerError(
                f"fetch failed (mvn exit {result.returncode}): {' '.join(cmd)}\n" + "\n".join(output[-60:])
            )
        if not (partial / f"kafka_2.13-{version}.jar").is_file():
            raise BrokerError(f"fetch: mvn succeeded but {partial} has no kafka_2.13-{version}.jar")
        shutil.rmtree(lib, ignore_errors=True)
        partial.rename(lib)
        marker.write_text(json.dumps({"version": version, "fetched_at": time.time()}) + "\n")
        log(f"fetch: {sum(1 for _ in lib.glob('*.jar'))} jars in {time.monotonic() - started:.1f}s")
        return lib


def _marker_matches(marker: Path, version: str) -> bool:
    try:
        return bool(json.loads(marker.read_text()).get("version") == version)
    except (OSError, ValueError, AttributeError):
        return False


def java_executable() -> Path:
    """The ``java`` that runs the broker (and Maven): ``ESKIT_KAFKA_JAVA`` or :data:`DEFAULT_JAVA`.

    Raises :class:`BrokerError` if that file does not exist."""
    override = os.environ.get("ESKIT_KAFKA_JAVA")
    java = Path(override) if override else DEFAULT_JAVA
    if not java.is_file():
        raise BrokerError(f"Java 17 not found at {java}: install openjdk-17-jdk-headless or set ESKIT_KAFKA_JAVA")
    return java
