"""Local Apache Cassandra 5.0 clusters for tests and development (standard library only).

The server comes from Maven Central (``org.apache.cassandra:cassandra-all`` and its dependencies,
fetched once with ``mvn`` into a git-ignored cache) and runs on OpenJDK 17. Node *i* (1-based)
listens on ``127.0.0.i``, ports 7000 (gossip) and 9042 (CQL), with JMX on ``7200 + i`` (local only).

Layout of a cluster's base directory::

    <base_dir>/cluster.json            node count, version, ... (written by ``up``/``start()``)
    <base_dir>/.lock                   serialises concurrent start() calls (e.g. pytest-xdist workers)
    <base_dir>/node<i>/conf/           cassandra.yaml, logback.xml, cassandra-rackdc.properties
    <base_dir>/node<i>/data/           -Dcassandra.storagedir: data, commitlog, hints, saved caches
    <base_dir>/node<i>/logs/           system.log (logback), stdout.log (JVM stdout/stderr)
    <base_dir>/node<i>/tmp/            -Djava.io.tmpdir: JNA/netty natives are unpacked (and executed) here
    <base_dir>/node<i>/cassandra.pid   PID of the node's JVM

Command line (progress goes to stderr)::

    python -m eskit.testing.cassandra_cluster fetch
    python -m eskit.testing.cassandra_cluster up --nodes 3 [--base-dir DIR] [--commitlog-sync batch]
    python -m eskit.testing.cassandra_cluster status|down [--nodes N | --base-dir DIR]
    python -m eskit.testing.cassandra_cluster kill|stop|start|pause|resume --node I [--nodes N | --base-dir DIR]

Python API (for pytest fixtures)::

    cluster = LocalCassandraCluster(nodes=3)
    cluster.start()            # or reuse: verifies readiness if the same cluster is already up
    cluster.contact_points     # ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    cluster.kill_node(2); cluster.start_node(2)
    cluster.stop()

Environment: ``ESKIT_CASSANDRA_HOME`` overrides the classpath cache folder (``<home>/lib``),
``ESKIT_CASSANDRA_JAVA`` the ``java`` executable (must be Java 17 or 11), ``ESKIT_CASSANDRA_VERSION``
the default Cassandra version.

Importing this module does no work: nothing is fetched, started or written until called.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import importlib
import json
import os
import re
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "CONTACT_PORT",
    "DEFAULT_VERSION",
    "ClusterError",
    "LocalCassandraCluster",
    "NodeStatus",
    "cassandra_home",
    "default_base_dir",
    "fetch",
    "main",
    "repo_root",
]

DEFAULT_VERSION = "5.0.8"
"""Cassandra version fetched when neither the caller nor ``ESKIT_CASSANDRA_VERSION`` names one."""

CONTACT_PORT = 9042
"""CQL native transport port of every node (each node has its own address)."""

STORAGE_PORT = 7000
JMX_BASE_PORT = 7200
"""Node *i* gets JMX port ``JMX_BASE_PORT + i``; JMX binds to localhost only."""

DEFAULT_JAVA = Path("/usr/lib/jvm/java-17-openjdk-amd64/bin/java")
"""Cassandra 5.0 runs on Java 11 or 17 only; newer JDKs fail at start (SecurityManager removal)."""

DEFAULT_READY_TIMEOUT = 240.0
DEFAULT_STOP_GRACE = 30.0
MAX_NODES = 3

# Evenly spaced Murmur3 tokens for a 3-node ring with num_tokens: 1 (the same ones ccm uses).
# A 1-node cluster takes the first one.
TOKENS: tuple[int, ...] = (-9223372036854775808, -3074457345618258603, 3074457345618258602)

_STATIC_DIR = Path(__file__).resolve().parent / "cassandra"
_MARKER = ".fetched"

# Flags from Cassandra 5.0's conf/jvm17-server.options (module system openings for Java 17).
# A missing one shows up as InaccessibleObjectException during start-up. Opening a package that
# Cassandra does not need is harmless; a module absent from the runtime only produces a warning.
_JAVA17_FLAGS: tuple[str, ...] = (
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports=java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports=java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports=java.management/com.sun.jmx.remote.security=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports=java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports=java.sql/java.sql=ALL-UNNAMED",
    "--add-exports=java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports=jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports=jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports=jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens=java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens=jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    # Netty settings from the same file: direct buffers via Unsafe, pre-4.1.75 allocator defaults.
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
)

# Gossiper logs "InetAddress /127.0.0.2:7000 is now UP" (or DOWN) whenever its view changes.
_GOSSIP_RE = re.compile(r"InetAddress /?(\d+\.\d+\.\d+\.\d+)(?::\d+)? is now (UP|DOWN)")

Logger = Callable[[str], None]


class ClusterError(RuntimeError):
    """A cluster operation failed; the message includes the relevant log tail where there is one."""


def _stderr_logger(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _quiet_logger(message: str) -> None:
    del message


# --------------------------------------------------------------------------------------------
# Locations
# --------------------------------------------------------------------------------------------


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


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
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


# --------------------------------------------------------------------------------------------
# Fetching the server classpath
# --------------------------------------------------------------------------------------------


def fetch(
    version: str | None = None,
    home: Path | None = None,
    *,
    force: bool = False,
    log: Logger = _stderr_logger,
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
    with _file_lock(home / ".fetch.lock"):
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
        shutil.copyfile(_STATIC_DIR / "pom.xml", pom)
        env = dict(os.environ)
        java = _java_executable()
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


def _java_executable() -> Path:
    override = os.environ.get("ESKIT_CASSANDRA_JAVA")
    java = Path(override) if override else DEFAULT_JAVA
    if not java.is_file():
        raise ClusterError(f"Java 17 not found at {java}: install openjdk-17-jdk-headless or set ESKIT_CASSANDRA_JAVA")
    return java


# --------------------------------------------------------------------------------------------
# Process helpers
# --------------------------------------------------------------------------------------------


def _proc_state(pid: int) -> str | None:
    """Linux process state letter (R, S, D, T, Z, ...) or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces: split after it.
    return stat.rsplit(")", 1)[1].split()[0]


def _proc_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 60) -> str:
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


@dataclass(frozen=True)
class NodeStatus:
    """Snapshot of one node: ``state`` is ``running``, ``paused``, ``stopped`` or ``missing``."""

    index: int
    address: str
    pid: int | None
    state: str
    cql_port_open: bool

    def describe(self) -> str:
        """One human-readable line for ``status`` output."""
        cql = "cql:open" if self.cql_port_open else "cql:closed"
        return f"node {self.index} {self.address} pid={self.pid or '-'} {self.state} {cql}"


# --------------------------------------------------------------------------------------------
# The cluster
# --------------------------------------------------------------------------------------------


class LocalCassandraCluster:
    """A local N-node Cassandra cluster (N = 1 or 3) under ``base_dir``; nodes are numbered from 1.

    Construction does nothing but compute paths. :meth:`start` fetches the classpath if needed,
    writes configuration and starts the nodes, or, if the cluster is already running (for instance
    started by the CLI or by another test worker), only waits until it is ready. Nodes run detached
    in their own session, so they outlive the Python process that started them; call :meth:`stop`
    (or the CLI's ``down``) to end them. Data persists across stop/start until ``wipe()``.

    Readiness of a node means: its JVM is alive, it accepts TCP connections on 9042, and its
    ``system.log`` says that every other running node is UP in gossip. When the optional
    ``cassandra-driver`` package is importable, a CQL query of ``system.peers_v2`` on the node
    must also list all other nodes.
    """

    def __init__(
        self,
        nodes: int = 1,
        base_dir: Path | None = None,
        *,
        version: str | None = None,
        home: Path | None = None,
        cluster_name: str = "eskit-test",
        dc: str = "dc1",
        dcs: int = 1,
        paxos_variant: str = "v2",
        rack: str = "rack1",
        commitlog_sync: str = "periodic",
        heap: str = "512M",
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
        stop_grace: float = DEFAULT_STOP_GRACE,
        unsafe_system: bool = False,
        log: Logger | None = _stderr_logger,
    ) -> None:
        """``commitlog_sync`` is ``periodic`` (default, 10 s period), ``batch`` (fsync before each
        acknowledgement: use for durability tests) or ``group`` (fsync every 15 ms window).
        With ``periodic``, a SIGKILLed node loses its writes of the last period (the commit log
        replays only synced sections); QUORUM writes survive on the other replicas.
        ``unsafe_system`` passes ``-Dcassandra.unsafesystem=true`` (faster DDL); never combine it
        with tests that kill nodes. ``log`` receives progress lines (default: stderr; ``None``
        silences them).

        ``dcs`` is 1 (every node in ``dc``) or the node count: one data centre per node,
        node *i* in ``dc<i>`` (a multi-region cluster on one machine). ``paxos_variant`` is
        written to ``cassandra.yaml`` (``v2``, which eskit requires, or ``v1`` to test that
        refusal)."""
        if nodes not in (1, MAX_NODES):
            raise ValueError(f"nodes must be 1 or {MAX_NODES}, not {nodes}")
        if dcs not in (1, nodes):
            raise ValueError(f"dcs must be 1 or the node count ({nodes}), not {dcs}")
        if paxos_variant not in ("v1", "v2"):
            raise ValueError(f"paxos_variant must be v1 or v2, not {paxos_variant!r}")
        if commitlog_sync not in ("periodic", "batch", "group"):
            raise ValueError(f"commitlog_sync must be periodic, batch or group, not {commitlog_sync!r}")
        self.nodes = nodes
        self.dcs = dcs
        self.paxos_variant = paxos_variant
        self.base_dir = (base_dir or default_base_dir(nodes, dcs, paxos_variant)).resolve()
        self.version = version or default_version()
        self.home = (home or cassandra_home(self.version)).resolve()
        self.cluster_name = cluster_name
        self.dc = dc
        self.rack = rack
        self.commitlog_sync = commitlog_sync
        self.heap = heap
        self.ready_timeout = ready_timeout
        self.stop_grace = stop_grace
        self.unsafe_system = unsafe_system
        self._log: Logger = log or _quiet_logger
        # system.log size of each node when we last launched it: readiness checks for that node's
        # own start-up read only what was logged after this offset (older runs appended before).
        self._log_offsets: dict[int, int] = {}

    # ---- addresses and paths -----------------------------------------------------------------

    @property
    def contact_points(self) -> list[str]:
        """Addresses of all nodes (``127.0.0.1`` .. ``127.0.0.N``); every node serves CQL on 9042."""
        return [self.address(i) for i in self.node_indices]

    @property
    def port(self) -> int:
        """CQL port of every node."""
        return CONTACT_PORT

    @property
    def node_indices(self) -> range:
        """1-based node numbers."""
        return range(1, self.nodes + 1)

    def dc_of(self, i: int) -> str:
        """The data centre of node ``i``."""
        self._check_index(i)
        return f"dc{i}" if self.dcs > 1 else self.dc

    @property
    def data_centres(self) -> list[str]:
        """The cluster's data centres, in node order."""
        return list(dict.fromkeys(self.dc_of(i) for i in self.node_indices))

    def address(self, i: int) -> str:
        """Listen/RPC address of node ``i``."""
        self._check_index(i)
        return f"127.0.0.{i}"

    def node_dir(self, i: int) -> Path:
        """Directory of node ``i`` (conf, data, logs, tmp, pid file)."""
        self._check_index(i)
        return self.base_dir / f"node{i}"

    def system_log(self, i: int) -> Path:
        """Path of node ``i``'s ``system.log``."""
        return self.node_dir(i) / "logs" / "system.log"

    def _check_index(self, i: int) -> None:
        if not 1 <= i <= self.nodes:
            raise ValueError(f"node index must be in 1..{self.nodes}, not {i}")

    # ---- state -------------------------------------------------------------------------------

    def pid(self, i: int) -> int | None:
        """PID of node ``i``'s JVM if it is alive (running or paused), else None.

        The PID from the pid file is only trusted if that process's command line is a
        CassandraDaemon for this node's directory, which guards against PID reuse."""
        try:
            pid = int((self.node_dir(i) / "cassandra.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        state = _proc_state(pid)
        if state is None or state in ("Z", "X"):
            return None
        cmdline = _proc_cmdline(pid)
        config_flag = f"-Dcassandra.config={self._config_url(i)}"
        if "org.apache.cassandra.service.CassandraDaemon" not in cmdline or config_flag not in cmdline:
            return None
        return pid

    def node_status(self, i: int) -> NodeStatus:
        """Current :class:`NodeStatus` of node ``i``."""
        pid = self.pid(i)
        if pid is None:
            state = "stopped" if self.node_dir(i).is_dir() else "missing"
        else:
            state = "paused" if _proc_state(pid) == "T" else "running"
        cql = pid is not None and state == "running" and _port_open(self.address(i), CONTACT_PORT, 0.5)
        return NodeStatus(i, self.address(i), pid, state, cql)

    def status(self) -> list[NodeStatus]:
        """:class:`NodeStatus` of every node."""
        return [self.node_status(i) for i in self.node_indices]

    def is_running(self) -> bool:
        """True if every node's JVM is alive (running or paused). Says nothing about readiness."""
        return all(self.pid(i) is not None for i in self.node_indices)

    # ---- configuration -----------------------------------------------------------------------

    def _config_url(self, i: int) -> str:
        return (self.node_dir(i) / "conf" / "cassandra.yaml").as_uri()

    def _write_metadata(self) -> None:
        meta = self.base_dir / "cluster.json"
        existing = self._read_metadata()
        if existing is not None and (existing.get("nodes"), existing.get("dcs", 1)) != (self.nodes, self.dcs):
            raise ClusterError(
                f"{self.base_dir} holds a {existing.get('nodes')}-node cluster in {existing.get('dcs', 1)} DC(s), "
                f"not {self.nodes} in {self.dcs}: use another base dir or wipe it (down --wipe)"
            )
        data = {
            "nodes": self.nodes,
            "dcs": self.dcs,
            "paxos_variant": self.paxos_variant,
            "version": self.version,
            "cluster_name": self.cluster_name,
            "dc": self.dc,
            "rack": self.rack,
            "commitlog_sync": self.commitlog_sync,
        }
        self.base_dir.mkdir(parents=True, exist_ok=True)
        meta.write_text(json.dumps(data, indent=2) + "\n")

    def _read_metadata(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.base_dir / "cluster.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_config(self, i: int) -> None:
        """(Re)write node ``i``'s configuration files; data is left alone.

        Rewritten on every start so that changed parameters (e.g. ``commitlog_sync``) take
        effect; the initial token depends only on the node index, so it never changes."""
        node_dir = self.node_dir(i)
        conf = node_dir / "conf"
        for sub in (conf, node_dir / "data", node_dir / "logs", node_dir / "tmp"):
            sub.mkdir(parents=True, exist_ok=True)
        seeds = ",".join(f"{self.address(j)}:{STORAGE_PORT}" for j in self.node_indices)
        sync_options = {
            "periodic": "commitlog_sync_period: 10000ms",
            # 5.0 ignores the old batch window setting; batch needs no further option.
            "batch": "",
            "group": "commitlog_sync_group_window: 15ms",
        }[self.commitlog_sync]
        yaml_template = string.Template((_STATIC_DIR / "cassandra.yaml.in").read_text())
        (conf / "cassandra.yaml").write_text(
            yaml_template.substitute(
                cluster_name=self.cluster_name,
                initial_token=str(TOKENS[i - 1]),
                seeds=seeds,
                address=self.address(i),
                commitlog_sync=self.commitlog_sync,
                commitlog_sync_options=sync_options,
                paxos_variant=self.paxos_variant,
            )
        )
        rackdc_template = string.Template((_STATIC_DIR / "cassandra-rackdc.properties.in").read_text())
        (conf / "cassandra-rackdc.properties").write_text(rackdc_template.substitute(dc=self.dc_of(i), rack=self.rack))
        shutil.copyfile(_STATIC_DIR / "logback.xml", conf / "logback.xml")

    def java_command(self, i: int, lib: Path) -> list[str]:
        """The full ``java`` command line that runs node ``i`` with the classpath in ``lib``."""
        node_dir = self.node_dir(i)
        jamm = sorted(lib.glob("jamm-*.jar"))
        if not jamm:
            raise ClusterError(f"no jamm-*.jar in {lib}: the classpath is incomplete (refetch with fetch --force)")
        return [
            str(_java_executable()),
            # Small fixed heap: three nodes plus tests must fit on a small machine.
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-Xss256k",
            "-XX:+UseG1GC",
            "-XX:+ParallelRefProcEnabled",
            "-XX:MaxTenuringThreshold=1",
            "-XX:+ExitOnOutOfMemoryError",
            # Keep hsperfdata out of /tmp (and out of other users' jps listings).
            "-XX:+PerfDisableSharedMem",
            "-Djava.net.preferIPv4Stack=true",
            *_JAVA17_FLAGS,
            # jamm measures object sizes for memtable accounting; Cassandra refuses to start without it.
            f"-javaagent:{jamm[-1]}",
            f"-Dcassandra.config={self._config_url(i)}",
            f"-Dcassandra-rackdc.properties={(node_dir / 'conf' / 'cassandra-rackdc.properties').as_uri()}",
            f"-Dcassandra.storagedir={node_dir / 'data'}",
            f"-Dcassandra.logdir={node_dir / 'logs'}",
            f"-Dlogback.configurationFile={(node_dir / 'conf' / 'logback.xml').as_uri()}",
            # Without it the daemon closes stdout/stderr, hiding early start-up failures.
            "-Dcassandra-foreground=yes",
            f"-Dcassandra.jmx.local.port={JMX_BASE_PORT + i}",
            # JNA, netty-epoll and compression natives are unpacked here and must be executable.
            f"-Djava.io.tmpdir={node_dir / 'tmp'}",
            # Faster start on a small machine; test clusters only.
            "-Dcassandra.skip_wait_for_gossip_to_settle=0",
            "-Dcassandra.ring_delay_ms=5000",
            # unsafesystem skips the flush of system/schema tables after each DDL. Off by default:
            # a node SIGKILLed shortly after a schema change then comes back with the keyspace in
            # its schema tables (replayed from the commit log) but not in its in-memory schema, and
            # answers "keyspace ... does not exist" until restarted again (seen with 5.0.8).
            *(["-Dcassandra.unsafesystem=true"] if self.unsafe_system else []),
            "-cp",
            f"{lib}/*",
            "org.apache.cassandra.service.CassandraDaemon",
        ]

    # ---- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Bring the whole cluster up and return once every node is ready.

        Idempotent: nodes already running are left alone (a fully running cluster is only checked
        for readiness), stopped ones are started with their existing data. Raises
        :class:`ClusterError` (message includes the failing node's log tail) if a node dies or is
        not ready within ``ready_timeout`` seconds, or if another process holds a node's address."""
        started = time.monotonic()
        with _file_lock(self.base_dir / ".lock"):
            self._write_metadata()
            to_start = [i for i in self.node_indices if self.pid(i) is None]
            if to_start:
                lib = fetch(self.version, self.home, log=self._log)
                for i in to_start:
                    self._launch(i, lib)
            else:
                self._log(f"cluster {self.base_dir.name}: already running, checking readiness")
            self._wait_ready(list(self.node_indices), started)
        self._log(f"cluster {self.base_dir.name}: {self.nodes} node(s) ready in {time.monotonic() - started:.1f}s")

    def start_node(self, i: int) -> None:
        """(Re)start node ``i`` with its existing data and wait until it and its peers see each
        other again. A paused node is resumed instead; a running node is only checked."""
        started = time.monotonic()
        with _file_lock(self.base_dir / ".lock"):
            pid = self.pid(i)
            if pid is None:
                self._launch(i, fetch(self.version, self.home, log=self._log))
            elif _proc_state(pid) == "T":
                os.kill(pid, signal.SIGCONT)
            self._wait_ready([i], started)

    def stop(self, *, wipe: bool = False) -> None:
        """Stop every node: SIGTERM to all, then SIGKILL to those still alive after ``stop_grace``
        seconds. Paused nodes are resumed first so they can handle SIGTERM. ``wipe`` then deletes
        the base directory (all data and logs)."""
        pids = {i: pid for i in self.node_indices if (pid := self.pid(i)) is not None}
        for i, pid in pids.items():
            self._log(f"node {i}: SIGTERM pid {pid}")
            self._signal(pid, signal.SIGTERM)
            self._signal(pid, signal.SIGCONT)
        self._wait_dead(pids, self.stop_grace)
        if wipe and self.base_dir.exists():
            shutil.rmtree(self.base_dir)
            self._log(f"wiped {self.base_dir}")

    def wipe(self) -> None:
        """Stop the cluster and delete its base directory."""
        self.stop(wipe=True)

    def stop_node(self, i: int, grace: float | None = None) -> None:
        """Gracefully stop node ``i`` (SIGTERM, SIGKILL after ``grace`` seconds)."""
        pid = self.pid(i)
        if pid is None:
            return
        self._log(f"node {i}: SIGTERM pid {pid}")
        self._signal(pid, signal.SIGTERM)
        self._signal(pid, signal.SIGCONT)
        self._wait_dead({i: pid}, self.stop_grace if grace is None else grace)

    def kill_node(self, i: int) -> None:
        """Kill node ``i`` with SIGKILL (a crash: no flush, no gossip shutdown message) and wait
        until the process is gone."""
        pid = self.pid(i)
        if pid is None:
            return
        self._log(f"node {i}: SIGKILL pid {pid}")
        self._signal(pid, signal.SIGKILL)
        self._wait_dead({i: pid}, 0.0)

    def pause_node(self, i: int) -> None:
        """Freeze node ``i`` with SIGSTOP (looks like a hung node/network partition to its peers)."""
        pid = self._require_pid(i)
        self._log(f"node {i}: SIGSTOP pid {pid}")
        os.kill(pid, signal.SIGSTOP)

    def resume_node(self, i: int) -> None:
        """Resume a node frozen by :meth:`pause_node` (SIGCONT). Does not wait for readiness:
        call :meth:`wait_ready` for that."""
        pid = self._require_pid(i)
        self._log(f"node {i}: SIGCONT pid {pid}")
        os.kill(pid, signal.SIGCONT)

    def wait_ready(self, nodes: Sequence[int] | None = None) -> None:
        """Wait (up to ``ready_timeout``) until the given nodes (default: all) are ready."""
        self._wait_ready(list(nodes or self.node_indices), time.monotonic())

    def __enter__(self) -> LocalCassandraCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- internals ---------------------------------------------------------------------------

    def _require_pid(self, i: int) -> int:
        pid = self.pid(i)
        if pid is None:
            raise ClusterError(f"node {i} is not running")
        return pid

    @staticmethod
    def _signal(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def _wait_dead(self, pids: dict[int, int], grace: float) -> None:
        deadline = time.monotonic() + grace
        remaining = dict(pids)
        killed = False
        while remaining:
            for i, pid in list(remaining.items()):
                if self._pid_gone(pid):
                    self._log(f"node {i}: pid {pid} exited")
                    del remaining[i]
            if not remaining:
                break
            if time.monotonic() >= deadline and not killed:
                for i, pid in remaining.items():
                    self._log(f"node {i}: still alive after {grace:.0f}s, SIGKILL pid {pid}")
                    self._signal(pid, signal.SIGKILL)
                killed = True
                # SIGKILL cannot be ignored; allow a little time for the kernel to reap.
                deadline = time.monotonic() + 10.0
            elif killed and time.monotonic() >= deadline:
                raise ClusterError(f"processes survived SIGKILL: {remaining}")
            time.sleep(0.1)

    @staticmethod
    def _pid_gone(pid: int) -> bool:
        state = _proc_state(pid)
        if state in (None, "Z", "X"):
            # Our own child would stay a zombie until reaped; nodes are grandchildren (see
            # _launch), so this is only a safety net.
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
            return True
        return False

    def _launch(self, i: int, lib: Path) -> None:
        address = self.address(i)
        if _port_open(address, CONTACT_PORT, 0.5) or _port_open(address, STORAGE_PORT, 0.5):
            raise ClusterError(
                f"node {i}: {address}:{CONTACT_PORT} or :{STORAGE_PORT} is already in use by a process that "
                f"is not this cluster's node (another cluster running? try `down` on it)"
            )
        self.write_config(i)
        node_dir = self.node_dir(i)
        shutil.rmtree(node_dir / "tmp", ignore_errors=True)
        (node_dir / "tmp").mkdir()
        system_log = self.system_log(i)
        self._log_offsets[i] = system_log.stat().st_size if system_log.exists() else 0
        stdout_log = node_dir / "logs" / "stdout.log"
        with open(stdout_log, "ab") as out:
            out.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} starting node {i} =====\n".encode())
        # Double fork through sh: the JVM is re-parented away from this (possibly long-lived
        # pytest) process, so it never lingers here as a zombie after being killed and is not
        # tied to our lifetime. start_new_session puts it in its own session/process group so
        # terminal signals (Ctrl-C) aimed at the caller do not reach it.
        launcher = subprocess.run(
            [
                "/bin/sh",
                "-c",
                '"$@" </dev/null >>"$ESKIT_NODE_STDOUT" 2>&1 & echo $!',
                "sh",
                *self.java_command(i, lib),
            ],
            env={**os.environ, "ESKIT_NODE_STDOUT": str(stdout_log)},
            cwd=node_dir,
            stdout=subprocess.PIPE,
            start_new_session=True,
            check=True,
            text=True,
        )
        pid = int(launcher.stdout.strip())
        (node_dir / "cassandra.pid").write_text(f"{pid}\n")
        self._log(f"node {i}: started pid {pid} on {address}, waiting for CQL...")

    def _wait_ready(self, nodes: list[int], started: float) -> None:
        """Wait until each of ``nodes`` is ready (see class docstring) and every other running
        node sees it UP. Raises ClusterError with the failing node's log tail."""
        deadline = started + self.ready_timeout
        pending = list(nodes)
        cql_reported: set[int] = set()
        while True:
            alive = [j for j in self.node_indices if self.pid(j) is not None]
            for i in list(pending):
                if self.pid(i) is None:
                    self._fail(i, f"node {i}: JVM exited during start-up")
                if not _port_open(self.address(i), CONTACT_PORT):
                    continue
                if i not in cql_reported:
                    cql_reported.add(i)
                    self._log(f"node {i}: CQL port open after {time.monotonic() - started:.1f}s, waiting for peers...")
                if not self._gossip_converged(i, alive):
                    continue
                others = [self.address(j) for j in alive if j != i]
                if _driver_probe(self.address(i), self.nodes - 1, others) is False:
                    continue
                pending.remove(i)
                self._log(f"node {i}: ready after {time.monotonic() - started:.1f}s")
            if not pending:
                return
            if time.monotonic() >= deadline:
                self._fail(pending[0], f"node {pending[0]}: not ready within {self.ready_timeout:.0f}s")
            time.sleep(1.0)

    def _gossip_converged(self, i: int, alive: list[int]) -> bool:
        """Node ``i`` sees every other alive node UP, and every other alive node sees ``i`` UP
        (judged from the last gossip UP/DOWN line for each address in each node's system.log).
        Node ``i``'s own log is read from where it was when this object last launched it."""
        own = self._gossip_view(i, self._log_offsets.get(i, 0))
        for j in alive:
            if j == i:
                continue
            if own.get(self.address(j)) != "UP":
                return False
            if self._gossip_view(j, 0).get(self.address(i)) != "UP":
                return False
        return True

    def _gossip_view(self, i: int, offset: int) -> dict[str, str]:
        view: dict[str, str] = {}
        try:
            with open(self.system_log(i), "rb") as handle:
                handle.seek(offset)
                for raw in handle:
                    match = _GOSSIP_RE.search(raw.decode(errors="replace"))
                    if match:
                        view[match.group(1)] = match.group(2)
        except OSError:
            pass
        return view

    def _fail(self, i: int, message: str) -> None:
        node_dir = self.node_dir(i)
        parts = [message]
        for name in ("system.log", "stdout.log"):
            tail = _tail(node_dir / "logs" / name)
            if tail:
                parts.append(f"----- last 60 lines of {node_dir / 'logs' / name} -----\n{tail}")
        raise ClusterError("\n".join(parts))


def _driver_probe(address: str, expected_peers: int, alive_peers: Sequence[str]) -> bool | None:
    """Check a node through CQL, connecting to ``address`` only.

    True if ``system.peers_v2`` lists at least ``expected_peers`` peers and the node's schema
    version equals that of every address in ``alive_peers`` (schema agreement: a node restarted
    after a crash may still be pulling schema changes it missed). False if not (yet), or if the
    query failed. None if the optional ``cassandra-driver`` package is not installed."""
    # Test suites often run with warnings turned into errors (pytest filterwarnings=error); a
    # driver warning must not turn every probe into "not ready" until the timeout.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _driver_probe_unguarded(address, expected_peers, alive_peers)


def _driver_probe_unguarded(address: str, expected_peers: int, alive_peers: Sequence[str]) -> bool | None:
    try:
        cluster_mod: Any = importlib.import_module("cassandra.cluster")
        policies: Any = importlib.import_module("cassandra.policies")
    except ImportError:
        return None
    profile = cluster_mod.ExecutionProfile(
        load_balancing_policy=policies.WhiteListRoundRobinPolicy([address]), request_timeout=10.0
    )
    cluster = cluster_mod.Cluster(
        [address],
        port=CONTACT_PORT,
        protocol_version=5,
        execution_profiles={cluster_mod.EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=5.0,
        control_connection_timeout=5.0,
        # The probe needs no schema metadata or token map: keep each connection cheap.
        schema_metadata_enabled=False,
        token_metadata_enabled=False,
    )
    try:
        session = cluster.connect()
        local = session.execute("SELECT schema_version FROM system.local").one()
        peers = {
            str(row.peer): row.schema_version
            for row in session.execute("SELECT peer, schema_version FROM system.peers_v2")
        }
        if len(peers) < expected_peers:
            return False
        return all(peers.get(peer) == local.schema_version for peer in alive_peers)
    except Exception:
        # Any driver error (connection refused, timeout, bootstrapping...) means "not ready yet".
        return False
    finally:
        cluster.shutdown()


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _existing_clusters() -> list[LocalCassandraCluster]:
    """Clusters under the default clusters root that have a ``cluster.json``."""
    found: list[LocalCassandraCluster] = []
    root = clusters_root()
    if not root.is_dir():
        return found
    for meta in sorted(root.glob("*/cluster.json")):
        try:
            data = json.loads(meta.read_text())
            nodes, dcs, paxos = int(data["nodes"]), int(data.get("dcs", 1)), str(data.get("paxos_variant", "v2"))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if nodes in (1, MAX_NODES) and dcs in (1, nodes) and paxos in ("v1", "v2"):
            found.append(LocalCassandraCluster(nodes, meta.parent, dcs=dcs, paxos_variant=paxos))
    return found


def _select_clusters(args: argparse.Namespace, *, all_if_ambiguous: bool) -> list[LocalCassandraCluster]:
    """The cluster(s) a command acts on: from --base-dir/--nodes, else the running one."""
    if args.base_dir is not None:
        nodes = args.nodes
        if nodes is None:
            try:
                nodes = int(json.loads((Path(args.base_dir) / "cluster.json").read_text())["nodes"])
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise ClusterError(f"{args.base_dir} has no readable cluster.json; pass --nodes") from exc
        return [LocalCassandraCluster(nodes, Path(args.base_dir), dcs=args.dcs)]
    if args.nodes is not None:
        return [LocalCassandraCluster(args.nodes, dcs=args.dcs)]
    clusters = _existing_clusters()
    running = [c for c in clusters if any(c.pid(i) is not None for i in c.node_indices)]
    if len(running) == 1 or (running and all_if_ambiguous):
        return running
    if all_if_ambiguous:
        return clusters
    if not running:
        raise ClusterError("no running cluster found; pass --nodes or --base-dir")
    raise ClusterError("several clusters are running; pass --nodes or --base-dir")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m eskit.testing.cassandra_cluster",
        description="Run a local Apache Cassandra 5.0 test cluster (nodes on 127.0.0.1..N, CQL port 9042).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    fetch_p = sub.add_parser("fetch", help="download the server classpath once (needs mvn)")
    fetch_p.add_argument("--version", default=None, help=f"Cassandra version (default {DEFAULT_VERSION})")
    fetch_p.add_argument("--force", action="store_true", help="refetch even if cached")

    def cluster_args(p: argparse.ArgumentParser, *, nodes_required: bool = False) -> None:
        p.add_argument("--nodes", type=int, choices=(1, MAX_NODES), required=nodes_required, default=None)
        p.add_argument("--base-dir", default=None, help="cluster directory (default .cache/cassandra/clusters/<N>node)")
        p.add_argument(
            "--dcs", type=int, default=1, help="data centres: 1, or one per node (node i in dc<i>); default 1"
        )

    up = sub.add_parser("up", help="start (or reuse) a cluster and wait until it is ready")
    cluster_args(up, nodes_required=True)
    up.add_argument("--version", default=None)
    up.add_argument("--commitlog-sync", choices=("periodic", "batch", "group"), default="periodic")
    up.add_argument("--heap", default="512M")
    up.add_argument("--timeout", type=float, default=DEFAULT_READY_TIMEOUT, help="readiness timeout, seconds")
    up.add_argument("--wipe", action="store_true", help="delete existing data first")

    down = sub.add_parser("down", help="stop the cluster (SIGTERM, SIGKILL after a grace period)")
    cluster_args(down)
    down.add_argument("--grace", type=float, default=DEFAULT_STOP_GRACE)
    down.add_argument("--wipe", action="store_true", help="also delete the cluster directory")

    status = sub.add_parser("status", help="show node states")
    cluster_args(status)

    for name, text in (
        ("kill", "SIGKILL one node"),
        ("stop", "SIGTERM one node (SIGKILL after the grace period)"),
        ("start", "restart a stopped/killed node with its data and wait until ready"),
        ("pause", "SIGSTOP one node"),
        ("resume", "SIGCONT one node"),
    ):
        p = sub.add_parser(name, help=text)
        cluster_args(p)
        p.add_argument("--node", type=int, required=True, help="1-based node number")
        if name == "start":
            p.add_argument("--timeout", type=float, default=DEFAULT_READY_TIMEOUT)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit code (0 ok, 1 failure, 2 usage error)."""
    args = _build_parser().parse_args(argv)
    try:
        if args.command == "fetch":
            print(fetch(args.version, force=args.force))
            return 0
        if args.command == "up":
            cluster = LocalCassandraCluster(
                args.nodes,
                Path(args.base_dir) if args.base_dir else None,
                version=args.version,
                dcs=args.dcs,
                commitlog_sync=args.commitlog_sync,
                heap=args.heap,
                ready_timeout=args.timeout,
            )
            if args.wipe:
                cluster.wipe()
            cluster.start()
            print(",".join(cluster.contact_points))
            return 0
        if args.command == "down":
            for cluster in _select_clusters(args, all_if_ambiguous=True):
                cluster.stop_grace = args.grace
                cluster.stop(wipe=args.wipe)
            return 0
        if args.command == "status":
            clusters = _select_clusters(args, all_if_ambiguous=True)
            if not clusters:
                print("no clusters")
            for cluster in clusters:
                print(f"{cluster.base_dir} ({cluster.nodes} node{'s' if cluster.nodes > 1 else ''})")
                for node in cluster.status():
                    print("  " + node.describe())
            return 0
        (cluster,) = _select_clusters(args, all_if_ambiguous=False)
        if args.command == "kill":
            cluster.kill_node(args.node)
        elif args.command == "stop":
            cluster.stop_node(args.node)
        elif args.command == "start":
            cluster.ready_timeout = args.timeout
            cluster.start_node(args.node)
        elif args.command == "pause":
            cluster.pause_node(args.node)
        elif args.command == "resume":
            cluster.resume_node(args.node)
        return 0
    except (ClusterError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
