"""The :class:`LocalCassandraCluster`: its nodes' JVM processes, start/stop/kill/pause, and readiness."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.cassandra_cluster.base import ClusterError, Logger, file_lock, quiet_logger, stderr_logger
from tools.cassandra_cluster.classpath import fetch, java_executable
from tools.cassandra_cluster.config import (
    COMMITLOG_SYNC_MODES,
    CONTACT_PORT,
    JMX_BASE_PORT,
    MAX_NODES,
    PAXOS_VARIANTS,
    STORAGE_PORT,
    NodeConfig,
    broadcast_address,
    node_address,
    node_dc,
)
from tools.cassandra_cluster.locations import cassandra_home, default_base_dir, default_version
from tools.cassandra_cluster.process import port_open, proc_cmdline, proc_state, tail
from tools.cassandra_cluster.readiness import driver_probe, gossip_view
from tools.cassandra_cluster.wan import Toxiproxy

__all__ = [
    "DEFAULT_READY_TIMEOUT",
    "DEFAULT_STOP_GRACE",
    "JAVA17_FLAGS",
    "LocalCassandraCluster",
    "NodeStatus",
]

DEFAULT_READY_TIMEOUT = 240.0
DEFAULT_STOP_GRACE = 30.0

# Flags from Cassandra 5.0's conf/jvm17-server.options (module system openings for Java 17).
# A missing one shows up as InaccessibleObjectException during start-up. Opening a package that
# Cassandra does not need is harmless; a module absent from the runtime only produces a warning.
JAVA17_FLAGS: tuple[str, ...] = (
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
        log: Logger | None = stderr_logger,
    ) -> None:
        """``commitlog_sync`` is ``periodic`` (default, 10 s period), ``batch`` (fsync before each
        acknowledgement: use for durability tests) or ``group`` (fsync every 15 ms window).
        With ``periodic``, a SIGKILLed node loses its writes of the last period (the commit log
        replays only synced sections); QUORUM writes survive on the other replicas.
        ``unsafe_system`` passes ``-Dcassandra.unsafesystem=true`` (faster DDL); never combine it
        with tests that kill nodes. ``log`` receives progress lines (default: stderr; ``None``
        silences them).

        ``dcs`` is 1 (every node in ``dc``) or the node count: one data centre per node,
        node *i* in ``dc<i>`` (a multi-region cluster on one machine), where every connection
        between regions passes a Toxiproxy proxy (:mod:`tools.cassandra_cluster.wan`): see
        :meth:`set_wan`, :meth:`partition` and :meth:`heal`. ``paxos_variant`` is
        written to ``cassandra.yaml`` (``v2``, which eskit requires, or ``v1`` to test that
        refusal)."""
        if nodes not in (1, MAX_NODES):
            raise ValueError(f"nodes must be 1 or {MAX_NODES}, not {nodes}")
        if dcs not in (1, nodes):
            raise ValueError(f"dcs must be 1 or the node count ({nodes}), not {dcs}")
        if paxos_variant not in PAXOS_VARIANTS:
            raise ValueError(f"paxos_variant must be v1 or v2, not {paxos_variant!r}")
        if commitlog_sync not in COMMITLOG_SYNC_MODES:
            raise ValueError(f"commitlog_sync must be periodic, batch or group, not {commitlog_sync!r}")
        self.nodes = nodes
        self.dcs = dcs
        #: every cross-region connection passes a WAN proxy (clusters of several data centres)
        self.proxied = dcs > 1
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
        self._log: Logger = log or quiet_logger
        self.wan = Toxiproxy(self.base_dir, nodes, log=self._log) if self.proxied else None
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
        return node_dc(i, dcs=self.dcs, dc=self.dc)

    @property
    def data_centres(self) -> list[str]:
        """The cluster's data centres, in node order."""
        return list(dict.fromkeys(self.dc_of(i) for i in self.node_indices))

    def address(self, i: int) -> str:
        """Listen/RPC address of node ``i``."""
        self._check_index(i)
        return node_address(i)

    def broadcast_address(self, i: int) -> str:
        """The address peers reach node ``i`` at: its WAN proxy's in a multi-region cluster."""
        self._check_index(i)
        return broadcast_address(i, self.proxied)

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
        state = proc_state(pid)
        if state is None or state in ("Z", "X"):
            return None
        cmdline = proc_cmdline(pid)
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
            state = "paused" if proc_state(pid) == "T" else "running"
        cql = pid is not None and state == "running" and port_open(self.address(i), CONTACT_PORT, 0.5)
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

    def node_config(self, i: int) -> NodeConfig:
        """The :class:`NodeConfig` that :meth:`write_config` writes for node ``i``."""
        return NodeConfig(
            index=i,
            nodes=self.nodes,
            cluster_name=self.cluster_name,
            dc=self.dc_of(i),
            rack=self.rack,
            commitlog_sync=self.commitlog_sync,
            paxos_variant=self.paxos_variant,
            proxied=self.proxied,
        )

    def write_config(self, i: int) -> None:
        """(Re)write node ``i``'s configuration files; data is left alone.

        Rewritten on every start so that changed parameters (e.g. ``commitlog_sync``) take
        effect; the initial token depends only on the node index, so it never changes."""
        node_dir = self.node_dir(i)
        conf = node_dir / "conf"
        for sub in (conf, node_dir / "data", node_dir / "logs", node_dir / "tmp"):
            sub.mkdir(parents=True, exist_ok=True)
        self.node_config(i).write(conf)

    def java_command(self, i: int, lib: Path) -> list[str]:
        """The full ``java`` command line that runs node ``i`` with the classpath in ``lib``."""
        node_dir = self.node_dir(i)
        jamm = sorted(lib.glob("jamm-*.jar"))
        if not jamm:
            raise ClusterError(f"no jamm-*.jar in {lib}: the classpath is incomplete (refetch with fetch --force)")
        return [
            str(java_executable()),
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
            *JAVA17_FLAGS,
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
        with file_lock(self.base_dir / ".lock"):
            self._write_metadata()
            if self.wan is not None:
                self.wan.start()  # before the nodes: they reach each other only through it
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
        with file_lock(self.base_dir / ".lock"):
            if self.wan is not None:
                self.wan.start()
            pid = self.pid(i)
            if pid is None:
                self._launch(i, fetch(self.version, self.home, log=self._log))
            elif proc_state(pid) == "T":
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
        if self.wan is not None:
            self.wan.stop()
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

    # ---- distance and partitions between regions (multi-region clusters) --------------------

    def _require_wan(self) -> Toxiproxy:
        if self.wan is None:
            raise ClusterError("distance and partitions need a cluster of several data centres (--dcs 3)")
        return self.wan

    def set_wan(self, round_trip_ms: float, jitter_ms: float = 0.0) -> None:
        """Make every round trip between two regions take ``round_trip_ms`` (± ``jitter_ms``); 0: none.

        Takes effect at once, on open connections too; clients and same-region peers are not delayed."""
        self._require_wan().set_latency(round_trip_ms, jitter_ms)
        self._log(f"wan: {round_trip_ms:g} ms round trip between regions" + (f" ± {jitter_ms:g}" if jitter_ms else ""))

    def wan_latency(self) -> tuple[float, float]:
        """The round trip and jitter between regions now set, in milliseconds."""
        return self._require_wan().latency()

    def partition(self, dc: str) -> None:
        """Cut data centre ``dc`` off: nothing reaches its nodes until :meth:`heal` (see the wan module)."""
        nodes = [i for i in self.node_indices if self.dc_of(i) == dc]
        if not nodes:
            raise ClusterError(f"no data centre {dc!r} (have {', '.join(self.data_centres)})")
        self._require_wan().set_enabled(nodes, False)
        self._log(f"wan: {dc} cut off")

    def heal(self) -> None:
        """Reconnect every region cut off by :meth:`partition`."""
        wan = self._require_wan()
        cut = wan.disabled()
        wan.set_enabled(cut, True)
        if cut:
            self._log(f"wan: healed ({', '.join(self.dc_of(i) for i in cut)} reconnected)")

    def partitioned(self) -> list[str]:
        """The data centres cut off now."""
        return [self.dc_of(i) for i in self._require_wan().disabled()]

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
        state = proc_state(pid)
        if state in (None, "Z", "X"):
            # Our own child would stay a zombie until reaped; nodes are grandchildren (see
            # _launch), so this is only a safety net.
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(pid, os.WNOHANG)
            return True
        return False

    def _launch(self, i: int, lib: Path) -> None:
        address = self.address(i)
        if port_open(address, CONTACT_PORT, 0.5) or port_open(address, STORAGE_PORT, 0.5):
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
                if not port_open(self.address(i), CONTACT_PORT):
                    continue
                if i not in cql_reported:
                    cql_reported.add(i)
                    self._log(f"node {i}: CQL port open after {time.monotonic() - started:.1f}s, waiting for peers...")
                if not self._gossip_converged(i, alive):
                    continue
                others = [self.broadcast_address(j) for j in alive if j != i]
                if driver_probe(self.address(i), self.nodes - 1, others) is False:
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
            if own.get(self.broadcast_address(j)) != "UP":
                return False
            if self._gossip_view(j, 0).get(self.broadcast_address(i)) != "UP":
                return False
        return True

    def _gossip_view(self, i: int, offset: int) -> dict[str, str]:
        return gossip_view(self.system_log(i), offset)

    def _fail(self, i: int, message: str) -> None:
        node_dir = self.node_dir(i)
        parts = [message]
        for name in ("system.log", "stdout.log"):
            text = tail(node_dir / "logs" / name)
            if text:
                parts.append(f"----- last 60 lines of {node_dir / 'logs' / name} -----\n{text}")
        raise ClusterError("\n".join(parts))
