"""The local Cassandra cluster tool without starting Java: node config files, JVM command, log parsing, CLI."""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.cassandra_cluster import ClusterError, LocalCassandraCluster, default_base_dir, repo_root
from tools.cassandra_cluster.config import TOKENS, NodeConfig
from tools.cassandra_cluster.process import port_open
from tools.cassandra_cluster.readiness import gossip_view
from tools.cassandra_cluster.wan import API_HOST, API_PORT, Toxiproxy, fetch_toxiproxy, toxiproxy_home

MODULES = (
    "",
    ".__main__",
    ".base",
    ".classpath",
    ".cli",
    ".cluster",
    ".config",
    ".locations",
    ".process",
    ".readiness",
    ".wan",
)
VERBS = ("fetch", "up", "down", "status", "wan", "partition", "heal", "kill", "stop", "start", "pause", "resume")


def yaml_value(text: str, key: str) -> str:
    """The value of a top-level ``key: value`` line of a generated cassandra.yaml."""
    match = re.search(rf"^{re.escape(key)}: *(.*)$", text, re.MULTILINE)
    assert match is not None, f"no {key} in cassandra.yaml"
    return match.group(1).strip()


@pytest.mark.parametrize("i", [1, 2, 3])
def test_node_of_a_three_dc_cluster_gets_its_own_dc_address_and_token(tmp_path: Path, i: int) -> None:
    cluster = LocalCassandraCluster(3, tmp_path / "c", dcs=3, log=None)
    cluster.write_config(i)
    node_dir = tmp_path / "c" / f"node{i}"
    conf = node_dir / "conf"

    rackdc = (conf / "cassandra-rackdc.properties").read_text()
    assert f"dc=dc{i}\n" in rackdc
    assert "rack=rack1\n" in rackdc
    assert "prefer_local=true\n" in rackdc  # same-DC peers skip the WAN proxy
    yaml = (conf / "cassandra.yaml").read_text()
    assert yaml_value(yaml, "listen_address") == f"127.0.0.{i}"
    assert yaml_value(yaml, "rpc_address") == f"127.0.0.{i}"  # clients connect directly
    # Peers in other regions reach the node through its WAN proxy, seeds included.
    assert yaml_value(yaml, "broadcast_address") == f"127.0.2.{i}"
    assert cluster.broadcast_address(i) == f"127.0.2.{i}"
    assert yaml_value(yaml, "initial_token") == str(TOKENS[i - 1])
    assert "127.0.2.1:7000,127.0.2.2:7000,127.0.2.3:7000" in yaml  # every node is a seed
    assert yaml_value(yaml, "paxos_variant") == "v2"
    assert yaml_value(yaml, "cluster_name") == "'eskit-test'"
    assert (conf / "logback.xml").read_text().startswith("<?xml")
    assert all((node_dir / sub).is_dir() for sub in ("data", "logs", "tmp"))
    assert cluster.contact_points == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    assert cluster.data_centres == ["dc1", "dc2", "dc3"]


def test_single_dc_cluster_puts_every_node_in_dc1_and_renders_the_commitlog_mode(tmp_path: Path) -> None:
    cluster = LocalCassandraCluster(3, tmp_path, commitlog_sync="group", paxos_variant="v1", log=None)
    assert [cluster.node_config(i).dc for i in cluster.node_indices] == ["dc1", "dc1", "dc1"]
    yaml = cluster.node_config(2).cassandra_yaml()
    assert yaml_value(yaml, "broadcast_address") == "127.0.0.2"  # one region: no proxy
    assert "127.0.0.1:7000,127.0.0.2:7000,127.0.0.3:7000" in yaml
    assert "prefer_local=false" in cluster.node_config(2).rackdc_properties()
    assert cluster.wan is None
    assert yaml_value(yaml, "commitlog_sync") == "group"
    assert yaml_value(yaml, "commitlog_sync_group_window") == "15ms"
    assert yaml_value(yaml, "paxos_variant") == "v1"
    batch = NodeConfig(1, 1, "x", "dc1", "rack1", "batch", "v2").cassandra_yaml()
    assert not re.search(r"^commitlog_sync_(period|group_window):", batch, re.MULTILINE)
    assert yaml_value(batch, "initial_token") == str(TOKENS[0])
    assert "$" not in yaml_value(batch, "cluster_name")


def test_java_command_points_the_node_at_its_own_config_ports_and_classpath(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    java = tmp_path / "java"
    java.write_text("")
    monkeypatch.setenv("ESKIT_CASSANDRA_JAVA", str(java))
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "jamm-0.4.0.jar").write_text("")
    cluster = LocalCassandraCluster(3, tmp_path / "c", log=None)
    command = cluster.java_command(2, lib)
    node_dir = tmp_path / "c" / "node2"
    assert command[0] == str(java)
    assert command[-3:] == ["-cp", f"{lib}/*", "org.apache.cassandra.service.CassandraDaemon"]
    assert f"-Dcassandra.config={(node_dir / 'conf' / 'cassandra.yaml').as_uri()}" in command
    assert f"-Dcassandra.storagedir={node_dir / 'data'}" in command
    assert "-Dcassandra.jmx.local.port=7202" in command
    assert f"-javaagent:{lib / 'jamm-0.4.0.jar'}" in command
    assert "-Xmx512M" in command


def test_cluster_shape_is_checked_and_default_dirs_are_under_the_repo_cache() -> None:
    with pytest.raises(ValueError, match="nodes must be 1 or 3"):
        LocalCassandraCluster(2)
    with pytest.raises(ValueError, match="dcs must be 1 or the node count"):
        LocalCassandraCluster(3, dcs=2)
    clusters = repo_root() / ".cache" / "cassandra" / "clusters"
    assert default_base_dir(1) == clusters / "1node"
    assert default_base_dir(3, 3) == clusters / "3node-3dc"
    assert default_base_dir(1, 1, "v1") == clusters / "1node-paxosv1"


def test_gossip_view_keeps_the_last_state_of_each_address_after_the_offset(tmp_path: Path) -> None:
    prefix = "INFO  [GossipStage:1] 2026-01-01 00:00:00,000 Gossiper.java:1 - InetAddress"
    earlier = f"{prefix} /127.0.0.2:7000 is now UP\n{prefix} /127.0.0.2:7000 is now DOWN\n"
    log = tmp_path / "system.log"
    log.write_text(earlier + f"{prefix} /127.0.0.3 is now UP\nINFO  [main] something else\n")
    assert gossip_view(log) == {"127.0.0.2": "DOWN", "127.0.0.3": "UP"}
    assert gossip_view(log, len(earlier)) == {"127.0.0.3": "UP"}
    assert gossip_view(tmp_path / "missing.log") == {}


def test_cli_help_lists_every_verb() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tools.cassandra_cluster", "--help"],
        cwd=repo_root(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "usage: python -m tools.cassandra_cluster" in result.stdout
    assert "{" + ",".join(VERBS) + "}" in result.stdout
    for verb in VERBS:
        assert re.search(rf"^    {verb} ", result.stdout, re.MULTILINE), verb


@pytest.mark.parametrize("suffix", MODULES)
def test_every_module_has_a_sorted_all_of_names_it_has(suffix: str) -> None:
    module = importlib.import_module("tools.cassandra_cluster" + suffix)
    names = list(module.__all__)
    # isort-style, as ruff's RUF022 sorts: CONSTANTS, then Classes, then functions.
    assert names == sorted(names, key=lambda name: (not name.isupper(), not name[:1].isupper(), name))
    assert all(hasattr(module, name) and not name.startswith("_") for name in names)


def test_the_wan_commands_refuse_a_cluster_of_one_region(tmp_path: Path) -> None:
    cluster = LocalCassandraCluster(3, tmp_path / "c", log=None)
    for act in (lambda: cluster.set_wan(70), lambda: cluster.partition("dc1"), cluster.heal):
        with pytest.raises(ClusterError, match="several data centres"):
            act()


@pytest.fixture
def toxiproxy(tmp_path: Path) -> Iterator[Toxiproxy]:
    """A real Toxiproxy server with the proxies of a three-region cluster (no Cassandra behind them)."""
    if not (toxiproxy_home() / "toxiproxy-server").is_file():
        fetch_toxiproxy(log=lambda _: None)  # seconds with Go, as the three-region clusters need it anyway
    if port_open(API_HOST, API_PORT, 0.2):
        pytest.skip("a Toxiproxy server already runs (a cluster is up)")
    server = Toxiproxy(tmp_path, 3, log=lambda _: None)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def test_latency_is_half_the_round_trip_on_each_direction_of_every_link(toxiproxy: Toxiproxy) -> None:
    toxiproxy.set_latency(70, 10)
    for i in (1, 2, 3):
        toxics = {t["stream"]: t["attributes"] for t in toxiproxy._call("GET", f"/proxies/node{i}/toxics")}
        assert toxics == {"upstream": {"latency": 35, "jitter": 5}, "downstream": {"latency": 35, "jitter": 5}}
    assert toxiproxy.latency() == (70.0, 10.0)
    toxiproxy.set_latency(0)
    assert toxiproxy._call("GET", "/proxies/node2/toxics") == []
    assert toxiproxy.latency() == (0.0, 0.0)


def test_a_cut_region_refuses_connections_until_healed_and_a_restart_keeps_the_proxies(
    toxiproxy: Toxiproxy, tmp_path: Path
) -> None:
    proxies = toxiproxy._call("GET", "/proxies")
    assert {p["listen"]: p["upstream"] for p in proxies.values()} == {
        f"127.0.2.{i}:7000": f"127.0.0.{i}:7000" for i in (1, 2, 3)
    }
    toxiproxy.set_enabled([3], False)
    assert toxiproxy.disabled() == [3]
    assert not port_open("127.0.2.3", 7000, 0.5)  # nothing reaches the cut-off region
    assert port_open("127.0.2.1", 7000, 0.5)
    toxiproxy.start()  # already running: only checked, the cut stays
    assert toxiproxy.disabled() == [3]
    toxiproxy.set_enabled([3], True)
    assert toxiproxy.disabled() == []
    assert port_open("127.0.2.3", 7000, 0.5)
    assert set(toxiproxy.bytes_received()) <= {f"node{i}/{d}" for i in (1, 2, 3) for d in ("upstream", "downstream")}
