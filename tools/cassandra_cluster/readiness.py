"""Signs that a node is ready: gossip UP/DOWN lines in its ``system.log`` and, when the optional
``cassandra-driver`` is installed, a CQL look at its peers and schema version."""

from __future__ import annotations

import importlib
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tools.cassandra_cluster.config import CONTACT_PORT

__all__ = [
    "GOSSIP_RE",
    "driver_probe",
    "gossip_view",
]

GOSSIP_RE = re.compile(r"InetAddress /?(\d+\.\d+\.\d+\.\d+)(?::\d+)? is now (UP|DOWN)")
"""Gossiper logs "InetAddress /127.0.0.2:7000 is now UP" (or DOWN) whenever its view changes."""


def gossip_view(system_log: Path, offset: int = 0) -> dict[str, str]:
    """The last gossip state (``UP`` or ``DOWN``) logged for each address in ``system_log``,
    reading from byte ``offset``; empty if the file cannot be read."""
    view: dict[str, str] = {}
    try:
        with open(system_log, "rb") as handle:
            handle.seek(offset)
            for raw in handle:
                match = GOSSIP_RE.search(raw.decode(errors="replace"))
                if match:
                    view[match.group(1)] = match.group(2)
    except OSError:
        pass
    return view


def driver_probe(address: str, expected_peers: int, alive_peers: Sequence[str]) -> bool | None:
    """Check a node through CQL, connecting to ``address`` only.

    True if ``system.peers_v2`` lists at least ``expected_peers`` peers and the node's schema
    version equals that of every (broadcast) address in ``alive_peers`` (schema agreement: a node restarted
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
