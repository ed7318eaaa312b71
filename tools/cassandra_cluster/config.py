"""A node's configuration: addresses, ports, tokens and the files in its ``conf/`` folder.

Node *i* (1-based) listens on ``127.0.0.i``, ports 7000 (gossip) and 9042 (CQL), with JMX on
``7200 + i``. In a cluster of several data centres it broadcasts ``127.0.2.i`` instead, the address
of its WAN proxy (see :mod:`tools.cassandra_cluster.wan`), so peers in other regions reach it
through the proxy. Its ``cassandra.yaml`` and ``cassandra-rackdc.properties`` are rendered from the
``string.Template`` files in ``files/``; ``logback.xml`` is copied as is.
"""

from __future__ import annotations

import shutil
import string
from dataclasses import dataclass
from pathlib import Path

from tools.cassandra_cluster.locations import FILES_DIR

__all__ = [
    "COMMITLOG_SYNC_MODES",
    "CONTACT_PORT",
    "JMX_BASE_PORT",
    "MAX_NODES",
    "PAXOS_VARIANTS",
    "STORAGE_PORT",
    "TOKENS",
    "NodeConfig",
    "broadcast_address",
    "node_address",
    "node_dc",
    "proxy_address",
]

CONTACT_PORT = 9042
"""CQL native transport port of every node (each node has its own address)."""

STORAGE_PORT = 7000
JMX_BASE_PORT = 7200
"""Node *i* gets JMX port ``JMX_BASE_PORT + i``; JMX binds to localhost only."""

MAX_NODES = 3

# Evenly spaced Murmur3 tokens for a 3-node ring with num_tokens: 1 (the same ones ccm uses).
# A 1-node cluster takes the first one.
TOKENS: tuple[int, ...] = (-9223372036854775808, -3074457345618258603, 3074457345618258602)

COMMITLOG_SYNC_MODES: tuple[str, ...] = ("periodic", "batch", "group")
PAXOS_VARIANTS: tuple[str, ...] = ("v1", "v2")

# Extra cassandra.yaml lines for each commitlog_sync mode.
_SYNC_OPTIONS = {
    "periodic": "commitlog_sync_period: 10000ms",
    # 5.0 ignores the old batch window setting; batch needs no further option.
    "batch": "",
    "group": "commitlog_sync_group_window: 15ms",
}


def node_address(i: int) -> str:
    """Listen/RPC address of node ``i``: ``127.0.0.<i>``."""
    return f"127.0.0.{i}"


def proxy_address(i: int) -> str:
    """Address of node ``i``'s WAN proxy (its broadcast address in a multi-region cluster): ``127.0.2.<i>``."""
    return f"127.0.2.{i}"


def broadcast_address(i: int, proxied: bool) -> str:
    """What node ``i`` broadcasts: its proxy's address in a multi-region cluster, else its listen address."""
    return proxy_address(i) if proxied else node_address(i)


def node_dc(i: int, *, dcs: int, dc: str) -> str:
    """Data centre of node ``i``: ``dc<i>`` when each node has its own (``dcs > 1``), else ``dc``."""
    return f"dc{i}" if dcs > 1 else dc


@dataclass(frozen=True)
class NodeConfig:
    """Everything that goes into the ``conf/`` folder of node ``index`` of an ``nodes``-node cluster."""

    index: int
    nodes: int
    cluster_name: str
    dc: str
    rack: str
    commitlog_sync: str
    paxos_variant: str
    #: True in a multi-region cluster: the node broadcasts its WAN proxy's address
    proxied: bool = False

    @property
    def address(self) -> str:
        """This node's listen/RPC address."""
        return node_address(self.index)

    @property
    def broadcast_address(self) -> str:
        """The address peers connect to: the node's WAN proxy when ``proxied``, else its listen address."""
        return broadcast_address(self.index, self.proxied)

    @property
    def seeds(self) -> str:
        """The seed list: every node's broadcast address and storage port, comma-separated."""
        return ",".join(f"{broadcast_address(j, self.proxied)}:{STORAGE_PORT}" for j in range(1, self.nodes + 1))

    def cassandra_yaml(self) -> str:
        """Text of this node's ``cassandra.yaml``."""
        template = string.Template((FILES_DIR / "cassandra.yaml.in").read_text())
        return template.substitute(
            cluster_name=self.cluster_name,
            initial_token=str(TOKENS[self.index - 1]),
            seeds=self.seeds,
            address=self.address,
            broadcast_address=self.broadcast_address,
            commitlog_sync=self.commitlog_sync,
            commitlog_sync_options=_SYNC_OPTIONS[self.commitlog_sync],
            paxos_variant=self.paxos_variant,
        )

    def rackdc_properties(self) -> str:
        """Text of this node's ``cassandra-rackdc.properties`` (read by GossipingPropertyFileSnitch)."""
        template = string.Template((FILES_DIR / "cassandra-rackdc.properties.in").read_text())
        return template.substitute(dc=self.dc, rack=self.rack, prefer_local="true" if self.proxied else "false")

    def write(self, conf: Path) -> None:
        """(Re)write ``cassandra.yaml``, ``cassandra-rackdc.properties`` and ``logback.xml`` in ``conf``."""
        conf.mkdir(parents=True, exist_ok=True)
        (conf / "cassandra.yaml").write_text(self.cassandra_yaml())
        (conf / "cassandra-rackdc.properties").write_text(self.rackdc_properties())
        shutil.copyfile(FILES_DIR / "logback.xml", conf / "logback.xml")
