"""Local Apache Cassandra 5.0 clusters for tests and development (standard library only).

A development tool of this repository, not part of the installed packages: run it from the
repository root (``python -m tools.cassandra_cluster``, or ``make cassandra-up``).

The server comes from Maven Central (``org.apache.cassandra:cassandra-all`` and its dependencies,
fetched once with ``mvn`` into a git-ignored cache) and runs on OpenJDK 17. Node *i* (1-based)
listens on ``127.0.0.i``, ports 7000 (gossip) and 9042 (CQL), with JMX on ``7200 + i`` (local only).
In a cluster of several data centres every connection between regions passes a Toxiproxy proxy
(built from its Go module once, like the jars), which adds distance and cuts regions off
(:mod:`~tools.cassandra_cluster.wan`).

Modules: :mod:`~tools.cassandra_cluster.classpath` (Java and the Maven fetch),
:mod:`~tools.cassandra_cluster.config` (addresses, ports, a node's ``conf/`` files),
:mod:`~tools.cassandra_cluster.cluster` (:class:`LocalCassandraCluster`: processes and readiness),
:mod:`~tools.cassandra_cluster.wan` (the WAN proxy), :mod:`~tools.cassandra_cluster.cli` (the command
line); ``files/`` holds the pom and templates.

Layout of a cluster's base directory::

    <base_dir>/cluster.json            node count, version, ... (written by ``up``/``start()``)
    <base_dir>/.lock                   serialises concurrent start() calls (e.g. pytest-xdist workers)
    <base_dir>/node<i>/conf/           cassandra.yaml, logback.xml, cassandra-rackdc.properties
    <base_dir>/node<i>/data/           -Dcassandra.storagedir: data, commitlog, hints, saved caches
    <base_dir>/node<i>/logs/           system.log (logback), stdout.log (JVM stdout/stderr)
    <base_dir>/node<i>/tmp/            -Djava.io.tmpdir: JNA/netty natives are unpacked (and executed) here
    <base_dir>/node<i>/cassandra.pid   PID of the node's JVM
    <base_dir>/toxiproxy.pid, .log     the WAN proxy of a multi-region cluster

Command line (progress goes to stderr)::

    python -m tools.cassandra_cluster fetch
    python -m tools.cassandra_cluster up --nodes 3 [--base-dir DIR] [--commitlog-sync batch]
    python -m tools.cassandra_cluster up --nodes 3 --dcs 3 --wan-ms 70 [--jitter-ms 5]
    python -m tools.cassandra_cluster wan --ms 70 | partition --dc dc3 | heal
    python -m tools.cassandra_cluster status|down [--nodes N | --base-dir DIR]
    python -m tools.cassandra_cluster kill|stop|start|pause|resume --node I [--nodes N | --base-dir DIR]

Python API (for pytest fixtures)::

    cluster = LocalCassandraCluster(nodes=3)
    cluster.start()            # or reuse: verifies readiness if the same cluster is already up
    cluster.contact_points     # ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    cluster.kill_node(2); cluster.start_node(2)
    cluster.set_wan(70); cluster.partition("dc3"); cluster.heal()   # with dcs=3
    cluster.stop()

Environment: ``ESKIT_CASSANDRA_HOME`` overrides the classpath cache folder (``<home>/lib``),
``ESKIT_CASSANDRA_JAVA`` the ``java`` executable (must be Java 17 or 11), ``ESKIT_CASSANDRA_VERSION``
the default Cassandra version.

Importing this package does no work: nothing is fetched, started or written until called.
"""

from __future__ import annotations

from tools.cassandra_cluster.base import ClusterError
from tools.cassandra_cluster.classpath import fetch
from tools.cassandra_cluster.cli import main
from tools.cassandra_cluster.cluster import LocalCassandraCluster, NodeStatus
from tools.cassandra_cluster.config import CONTACT_PORT
from tools.cassandra_cluster.locations import DEFAULT_VERSION, cassandra_home, default_base_dir, repo_root

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
