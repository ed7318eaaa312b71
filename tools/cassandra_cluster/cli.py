"""The command line, ``python -m tools.cassandra_cluster VERB ...``; progress goes to stderr."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from tools.cassandra_cluster.base import ClusterError
from tools.cassandra_cluster.classpath import fetch
from tools.cassandra_cluster.cluster import DEFAULT_READY_TIMEOUT, DEFAULT_STOP_GRACE, LocalCassandraCluster
from tools.cassandra_cluster.config import COMMITLOG_SYNC_MODES, MAX_NODES
from tools.cassandra_cluster.locations import DEFAULT_VERSION, clusters_root
from tools.cassandra_cluster.wan import fetch_toxiproxy

__all__ = [
    "build_parser",
    "main",
]


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools.cassandra_cluster",
        description="Run a local Apache Cassandra 5.0 test cluster (nodes on 127.0.0.1..N, CQL port 9042).",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    fetch_p = sub.add_parser(
        "fetch", help="download the server classpath (needs mvn) and build the WAN proxy (needs go), once"
    )
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
    up.add_argument("--commitlog-sync", choices=COMMITLOG_SYNC_MODES, default="periodic")
    up.add_argument("--heap", default="512M")
    up.add_argument("--timeout", type=float, default=DEFAULT_READY_TIMEOUT, help="readiness timeout, seconds")
    up.add_argument("--wipe", action="store_true", help="delete existing data first")
    up.add_argument(
        "--wan-ms", type=float, default=0.0, help="round trip between regions, ms (with --dcs 3; default 0)"
    )
    up.add_argument("--jitter-ms", type=float, default=0.0, help="jitter of that round trip, ms (default 0)")

    down = sub.add_parser("down", help="stop the cluster (SIGTERM, SIGKILL after a grace period)")
    cluster_args(down)
    down.add_argument("--grace", type=float, default=DEFAULT_STOP_GRACE)
    down.add_argument("--wipe", action="store_true", help="also delete the cluster directory")

    status = sub.add_parser("status", help="show node states")
    cluster_args(status)

    wan = sub.add_parser("wan", help="set the round trip between regions of a running multi-region cluster")
    cluster_args(wan)
    wan.add_argument("--ms", type=float, required=True, help="round trip between regions, ms (0: none)")
    wan.add_argument("--jitter-ms", type=float, default=0.0)

    partition = sub.add_parser("partition", help="cut one data centre off from the others (until heal)")
    cluster_args(partition)
    partition.add_argument("--dc", required=True, help="the data centre to cut off, such as dc3")

    heal = sub.add_parser("heal", help="reconnect every data centre cut off")
    cluster_args(heal)

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
    args = build_parser().parse_args(argv)
    try:
        if args.command == "fetch":
            print(fetch(args.version, force=args.force))
            print(fetch_toxiproxy())
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
            if cluster.proxied:
                cluster.set_wan(args.wan_ms, args.jitter_ms)
            elif args.wan_ms or args.jitter_ms:
                raise ClusterError("--wan-ms needs a cluster of several data centres (--dcs 3)")
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
                if cluster.wan is not None and cluster.wan.pid() is not None:
                    rtt, jitter = cluster.wan_latency()
                    cut = cluster.partitioned()
                    print(f"  wan: {rtt:g} ms round trip (± {jitter:g}), cut off: {', '.join(cut) or 'none'}")
            return 0
        (cluster,) = _select_clusters(args, all_if_ambiguous=False)
        if args.command == "wan":
            cluster.set_wan(args.ms, args.jitter_ms)
        elif args.command == "partition":
            cluster.partition(args.dc)
        elif args.command == "heal":
            cluster.heal()
        elif args.command == "kill":
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
