"""Distance and partitions between the regions of a local cluster, through Toxiproxy.

Cassandra connects to a peer at that peer's ``broadcast_address``. In a cluster of several data
centres, node *i* broadcasts :func:`proxy_address` ``127.0.2.i`` (port 7000), where a Toxiproxy
proxy forwards to the node's listen address ``127.0.0.i:7000``. So every connection between nodes
(internode messages and gossip) passes the proxy of the node it goes *to*; clients connect to the
nodes' ``rpc_address`` directly, and peers in the same data centre use the listen address
(``GossipingPropertyFileSnitch`` with ``prefer_local=true``).

Since Cassandra 4.0 an internode connection carries messages one way (a reply travels on the
replying node's own connection, through the proxy of the node it answers), so a latency toxic of
*d* ms on every proxy makes one message take *d* ms and a request and its reply ``2d``:
:meth:`Toxiproxy.set_latency` takes the round trip and puts half of it on each direction of
every link.

A cut of a region disables its nodes' proxies: every connection to them is dropped and new ones
are refused, so nothing reaches the region. What its own nodes send still arrives until gossip
marks the other regions down (seconds): a one-way partition, the harder case for the store, since
the cut-off region's Paxos prepares can still reach the others. A proxy on the receiving side
cannot tell which node a connection comes from, so a symmetric cut is not possible this way.

The Toxiproxy server is built from its Go module once (``go install``, about 30 s) into a
git-ignored cache, like the Cassandra jars, and runs detached beside the nodes with its API on
``127.0.0.1:8474`` (see :data:`API_PORT`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tools.cassandra_cluster.base import ClusterError, Logger, file_lock, stderr_logger
from tools.cassandra_cluster.config import STORAGE_PORT, node_address, proxy_address
from tools.cassandra_cluster.locations import repo_root
from tools.cassandra_cluster.process import port_open, proc_cmdline, proc_state

__all__ = [
    "API_HOST",
    "API_PORT",
    "TOXIPROXY_MODULE",
    "TOXIPROXY_VERSION",
    "Toxiproxy",
    "fetch_toxiproxy",
    "proxy_name",
    "toxiproxy_home",
]

TOXIPROXY_MODULE = "github.com/Shopify/toxiproxy/v2/cmd/server"
TOXIPROXY_VERSION = "v2.5.0"
"""Pinned: the newest version the Go module proxy serves here."""

API_HOST = "127.0.0.1"
API_PORT = 8474

_BINARY = "toxiproxy-server"
_LATENCY = ("wan_upstream", "wan_downstream")  # the toxics' names, one per direction of a link


def proxy_name(i: int) -> str:
    """The Toxiproxy proxy in front of node ``i``."""
    return f"node{i}"


def toxiproxy_home(version: str = TOXIPROXY_VERSION) -> Path:
    """Where the built server is cached: ``ESKIT_TOXIPROXY_HOME`` or ``<repo>/.cache/toxiproxy/<version>``."""
    override = os.environ.get("ESKIT_TOXIPROXY_HOME")
    if override:
        return Path(override).resolve()
    return repo_root() / ".cache" / "toxiproxy" / version


def fetch_toxiproxy(version: str = TOXIPROXY_VERSION, *, log: Logger = stderr_logger) -> Path:
    """Build the Toxiproxy server once with ``go install`` and return its path (later calls return at once).

    Needs ``go`` on PATH and the Go module proxy. Raises :class:`ClusterError` when the build fails.
    """
    home = toxiproxy_home(version)
    binary = home / _BINARY
    if binary.is_file():
        return binary
    with file_lock(home / ".fetch.lock"):
        if binary.is_file():
            return binary
        go = shutil.which("go")
        if go is None:
            raise ClusterError("go not found on PATH: it is needed once to build Toxiproxy (the WAN proxy)")
        started = time.monotonic()
        log(f"fetch: building Toxiproxy {version} into {home} ...")
        partial = home / "bin.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        env = {**os.environ, "GOBIN": str(partial), "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false"}
        cmd = [go, "install", f"{TOXIPROXY_MODULE}@{version}"]
        result = subprocess.run(cmd, env=env, cwd=home, capture_output=True, text=True, check=False)
        built = partial / "server"
        if result.returncode != 0 or not built.is_file():
            output = (result.stdout + result.stderr).strip().splitlines()
            raise ClusterError(f"building Toxiproxy failed: {' '.join(cmd)}\n" + "\n".join(output[-40:]))
        built.rename(binary)
        shutil.rmtree(partial, ignore_errors=True)
        log(f"fetch: Toxiproxy built in {time.monotonic() - started:.1f}s")
        return binary


class Toxiproxy:
    """The Toxiproxy server of one cluster: its process, its proxies and their toxics.

    Construction does nothing. :meth:`start` runs the server (detached, in its own session) unless
    one already answers, and creates a proxy per node; :meth:`stop` ends it.
    """

    def __init__(self, base_dir: Path, nodes: int, *, log: Logger = stderr_logger) -> None:
        self.base_dir = base_dir
        self.nodes = nodes
        self._log = log
        self.url = f"http://{API_HOST}:{API_PORT}"

    @property
    def pid_file(self) -> Path:
        return self.base_dir / "toxiproxy.pid"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "toxiproxy.log"

    # ---- the process -------------------------------------------------------------------------

    def pid(self) -> int | None:
        """The server's PID if it runs (checked against its command line, against PID reuse)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if proc_state(pid) in (None, "Z", "X"):
            return None
        cmdline = proc_cmdline(pid)
        return pid if cmdline and cmdline[0].endswith(_BINARY) else None

    def start(self) -> None:
        """Run the server (building it first if needed) and make sure every node has its proxy."""
        if self.pid() is None:
            if port_open(API_HOST, API_PORT, 0.5):
                raise ClusterError(
                    f"{API_HOST}:{API_PORT} is in use by another process: a Toxiproxy of another cluster? "
                    "(stop it with `down` on that cluster)"
                )
            binary = fetch_toxiproxy(log=self._log)
            self.base_dir.mkdir(parents=True, exist_ok=True)
            # Through sh, in a session of its own, like the nodes: the server outlives this process and
            # is never left here as a zombie.
            launcher = subprocess.run(
                [
                    "/bin/sh",
                    "-c",
                    '"$@" </dev/null >>"$ESKIT_PROXY_LOG" 2>&1 & echo $!',
                    "sh",
                    str(binary),
                    "-host",
                    API_HOST,
                    "-port",
                    str(API_PORT),
                    "-proxy-metrics",
                ],
                env={**os.environ, "ESKIT_PROXY_LOG": str(self.log_file)},
                stdout=subprocess.PIPE,
                start_new_session=True,
                check=True,
                text=True,
            )
            pid = int(launcher.stdout.strip())
            self.pid_file.write_text(f"{pid}\n")
            deadline = time.monotonic() + 20
            while not port_open(API_HOST, API_PORT, 0.5):
                if self.pid() is None or time.monotonic() > deadline:
                    raise ClusterError(f"Toxiproxy did not start; see {self.log_file}")
                time.sleep(0.1)
            self._log(f"toxiproxy: started pid {pid}, API on {self.url}")
        existing = {proxy["name"] for proxy in self._call("GET", "/proxies").values()}
        wanted = [
            {
                "name": proxy_name(i),
                "listen": f"{proxy_address(i)}:{STORAGE_PORT}",
                "upstream": f"{node_address(i)}:{STORAGE_PORT}",
                "enabled": True,
            }
            for i in range(1, self.nodes + 1)
            if proxy_name(i) not in existing
        ]
        if wanted:
            self._call("POST", "/populate", wanted)

    def stop(self) -> None:
        """End the server (SIGTERM, then SIGKILL); its proxies and toxics go with it."""
        pid = self.pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while self.pid() is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        if self.pid() is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)
        self._log(f"toxiproxy: stopped pid {pid}")

    # ---- links -------------------------------------------------------------------------------

    def set_latency(self, round_trip_ms: float, jitter_ms: float = 0.0) -> None:
        """Make every cross-region round trip take ``round_trip_ms`` (± ``jitter_ms`` on each leg).

        Half the round trip goes on each direction of every proxy; 0 removes the toxics.
        """
        if round_trip_ms < 0 or jitter_ms < 0:
            raise ValueError("latency and jitter must not be negative")
        one_way, jitter = round(round_trip_ms / 2), round(jitter_ms / 2)
        for i in range(1, self.nodes + 1):
            toxics = {t["name"] for t in self._call("GET", f"/proxies/{proxy_name(i)}/toxics")}
            for name, stream in zip(_LATENCY, ("upstream", "downstream"), strict=True):
                path = f"/proxies/{proxy_name(i)}/toxics"
                if one_way == 0 and jitter == 0:
                    if name in toxics:
                        self._call("DELETE", f"{path}/{name}")
                    continue
                attributes = {"latency": one_way, "jitter": jitter}
                if name in toxics:
                    self._call("POST", f"{path}/{name}", {"attributes": attributes})
                else:
                    body = {"name": name, "type": "latency", "stream": stream, "toxicity": 1.0}
                    self._call("POST", path, {**body, "attributes": attributes})

    def latency(self) -> tuple[float, float]:
        """The round trip and jitter now set (from node 1's proxy), in milliseconds."""
        for toxic in self._call("GET", f"/proxies/{proxy_name(1)}/toxics"):
            if toxic["name"] == _LATENCY[0]:
                return 2.0 * toxic["attributes"]["latency"], 2.0 * toxic["attributes"]["jitter"]
        return 0.0, 0.0

    def set_enabled(self, nodes: Iterable[int], enabled: bool) -> None:
        """Enable or disable the proxies of ``nodes`` (disabled: connections dropped, new ones refused)."""
        for i in nodes:
            self._call("POST", f"/proxies/{proxy_name(i)}", {"enabled": enabled})

    def disabled(self) -> list[int]:
        """The nodes whose proxy is disabled (cut off)."""
        proxies = self._call("GET", "/proxies")
        return sorted(i for i in range(1, self.nodes + 1) if not proxies[proxy_name(i)]["enabled"])

    def bytes_received(self) -> dict[str, float]:
        """Bytes each proxy received so far, by ``<proxy>/<direction>`` (from the server's metrics)."""
        request = urllib.request.Request(f"{self.url}/metrics")
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
        found: dict[str, float] = {}
        for line in text.splitlines():
            if not line.startswith("toxiproxy_proxy_received_bytes_total{"):
                continue
            labels, value = line[line.index("{") + 1 :].split("}", 1)
            parts = dict(item.split("=", 1) for item in labels.split(","))
            key = f"{parts['proxy'].strip(chr(34))}/{parts['direction'].strip(chr(34))}"
            found[key] = float(value)
        return found

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise ClusterError(f"Toxiproxy {method} {path}: {exc.code} {exc.read().decode(errors='replace')}") from exc
        except OSError as exc:
            raise ClusterError(f"Toxiproxy {method} {path}: {exc} (is the cluster up?)") from exc
        return json.loads(raw) if raw.strip() else None
