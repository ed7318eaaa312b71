"""What runs the server: a Java 17 (or 11) executable and the Cassandra jars fetched from Maven Central."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from tools.cassandra_cluster.base import ClusterError, Logger, file_lock, stderr_logger
from tools.cassandra_cluster.locations import FILES_DIR, cassandra_home, default_version

__all__ = [
    "DEFAULT_JAVA",
    "fetch",
    "java_executable",
]

DEFAULT_JAVA = Path("/usr/lib/jvm/java-17-openjdk-amd64/bin/java")
"""Cassandra 5.0 runs on Java 11 or 17 only; newer JDKs fail at start (SecurityManager removal)."""

_MARKER = ".fetched"


def fetch(
    version: str | None = None,
    home: Path | None = None,
    *,
    force: bool = False,
    log: Logger = stderr_logger,
) -> Path:
    """Make sure the Cassandra server classpath is in ``<home>/lib`` and return that folder.

    The first call runs ``mvn -B -q dependency:copy-dependencies`` on a one-dependency pom
    (needs ``mvn`` on PATH and access to Maven Central) into a temporary folder, renames it into
    place and then writes a marker file; later calls see the marker and return at once. A failed
    or interrupted fetch leaves no marker, so the next call starts over. ``force`` refetches.

    Raises :class:`ClusterError` if Maven fails or the result has no ``cassandra-all`` jar.
    """
    version = version or default_version()
    home = (home or cassandra_home(version)).resolve()
    lib = home / "lib"
    marker = home / _MARKER
    if not force and _marker_matches(marker, version) and lib.is_dir():
        return lib
    with file_lock(home / ".fetch.lock"):
        # Another process may have finished the fetch while we waited for the lock.
        if not force and _marker_matches(marker, version) and lib.is_dir():
            return lib
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ClusterError("mvn not found on PATH: it is needed once to fetch the Cassandra jars")
        started = time.monotonic()
        log(f"fetch: resolving org.apache.cassandra:cassandra-all:{version} into {lib} ...")
        marker.unlink(missing_ok=True)
        partial = home / "lib.partial"
        shutil.rmtree(partial, ignore_errors=True)
        pom = home / "pom.xml"
        shutil.copyfile(FILES_DIR / "pom.xml", pom)
        env = dict(os.environ)
        java = java_executable()
        # Maven itself also needs a working JDK; prefer the same one the nodes run on.
        env["JAVA_HOME"] = str(java.resolve().parent.parent)
        cmd = [
            mvn,
            "-B",
            "-q",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-Dcassandra.version={version}",
            f"-DoutputDirectory={partial}",
        ]
        result = subprocess.run(cmd, env=env, cwd=home, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip().splitlines()
            raise ClusterError(
                f"fetch failed (mvn exit {result.returncode}): {' '.join(cmd)}\n" + "\n".join(output[-60:])
            )
        if not any(partial.glob(f"cassandra-all-{version}.jar")):
            raise ClusterError(f"fetch: mvn succeeded but {partial} has no cassandra-all-{version}.jar")
        shutil.rmtree(lib, ignore_errors=True)
        partial.rename(lib)
        marker.write_text(json.dumps({"version": version, "fetched_at": time.time()}) + "\n")
        jars = sum(1 for _ in lib.glob("*.jar"))
        log(f"fetch: {jars} jars in {time.monotonic() - started:.1f}s")
        return lib


def _marker_matches(marker: Path, version: str) -> bool:
    try:
        return bool(json.loads(marker.read_text()).get("version") == version)
    except (OSError, ValueError, AttributeError):
        return False


def java_executable() -> Path:
    """The ``java`` that runs the nodes (and Maven): ``ESKIT_CASSANDRA_JAVA`` or :data:`DEFAULT_JAVA`.

    Raises :class:`ClusterError` if that file does not exist."""
    override = os.environ.get("ESKIT_CASSANDRA_JAVA")
    java = Path(override) if override else DEFAULT_JAVA
    if not java.is_file():
        raise ClusterError(f"Java 17 not found at {java}: install openjdk-17-jdk-headless or set ESKIT_CASSANDRA_JAVA")
    return java
