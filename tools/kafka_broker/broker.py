"""The :class:`LocalKafkaBroker`: one KRaft node (broker and controller) on loopback, its JVM and its readiness."""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import string
import subprocess
import time
import uuid
from pathlib import Path

from tools.cassandra_cluster.base import Logger, file_lock, quiet_logger, stderr_logger
from tools.cassandra_cluster.process import port_open, proc_cmdline, proc_state, tail
from tools.kafka_broker.base import BrokerError
from tools.kafka_broker.classpath import fetch, java_executable
from tools.kafka_broker.locations import (
    CONTROLLER_PORT,
    FILES_DIR,
    HOST,
    PORT,
    default_base_dir,
    default_version,
    kafka_home,
)

__all__ = ["DEFAULT_READY_TIMEOUT", "DEFAULT_STOP_GRACE", "LocalKafkaBroker"]

DEFAULT_READY_TIMEOUT = 120.0
DEFAULT_STOP_GRACE = 20.0

#: what the broker logs once it serves clients (KafkaRaftServer, after the broker reached STARTED)
STARTED_LINE = "Kafka Server started"
_MAIN_CLASS = "kafka.Kafka"


class LocalKafkaBroker:
    """A one-node Apache Kafka 4 in KRaft mode under ``base_dir``, for tests and development.

    Construction only computes paths. :meth:`start` fetches the classpath if needed, writes
    ``server.properties``, formats the storage the first time (``kafka.tools.StorageTool``) and
    starts ``kafka.Kafka``; a broker that is already running is only checked. The JVM runs
    detached in its own session with a small heap, so it outlives the Python process that
    started it: call :meth:`stop` (or the CLI's ``down``) to end it. Data stays across
    stop and start until :meth:`wipe`.

    Ready means: the JVM is alive, the client port accepts connections and the broker's log says
    the server started (since this object launched it).

    Layout of ``base_dir``: ``server.properties``, ``log4j2.xml``, ``data/`` (log.dirs, formatted
    once), ``logs/server.log`` and ``logs/stdout.log``, ``tmp/``, ``kafka.pid``.
    """

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        version: str | None = None,
        home: Path | None = None,
        host: str = HOST,
        port: int = PORT,
        controller_port: int = CONTROLLER_PORT,
        heap: str = "256M",
        ready_timeout: float = DEFAULT_READY_TIMEOUT,
        stop_grace: float = DEFAULT_STOP_GRACE,
        log: Logger | None = stderr_logger,
    ) -> None:
        self.base_dir = (base_dir or default_base_dir()).resolve()
        self.version = version or default_version()
        self.home = (home or kafka_home(self.version)).resolve()
        self.host, self.port, self.controller_port = host, port, controller_port
        self.heap = heap
        self.ready_timeout = ready_timeout
        self.stop_grace = stop_grace
        self._log: Logger = log or quiet_logger
        self._log_offset = 0

    # ---- where ---------------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """``host:port`` a client connects to."""
        return f"{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.base_dir / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def server_log(self) -> Path:
        return self.base_dir / "logs" / "server.log"

    # ---- state ---------------------------------------------------------------------------------

    def pid(self) -> int | None:
        """PID of the broker's JVM if it is alive (running or paused), else None.

        The pid file is trusted only when that process runs ``kafka.Kafka`` with this broker's
        configuration (a guard against PID reuse)."""
        try:
            pid = int((self.base_dir / "kafka.pid").read_text().strip())
        except (OSError, ValueError):
            return None
        state = proc_state(pid)
        if state is None or state in ("Z", "X"):
            return None
        cmdline = proc_cmdline(pid)
        if _MAIN_CLASS not in cmdline or str(self.config_path) not in cmdline:
            return None
        return pid

    def state(self) -> str:
        """``running``, ``paused``, ``stopped`` (its folder exists) or ``missing``."""
        pid = self.pid()
        if pid is None:
            return "stopped" if self.base_dir.is_dir() else "missing"
        return "paused" if proc_state(pid) == "T" else "running"

    def is_running(self) -> bool:
        """True if the JVM is alive (running or paused); says nothing about readiness."""
        return self.pid() is not None

    def ready(self) -> bool:
        """True if the broker serves clients now (alive, port open, started)."""
        return self.state() == "running" and port_open(self.host, self.port, 0.5) and self._started(0)

    # ---- configuration -------------------------------------------------------------------------

    def write_config(self) -> None:
        """(Re)write ``server.properties`` and ``log4j2.xml``; the data folder is left alone."""
        for sub in (self.data_dir, self.base_dir / "logs", self.base_dir / "tmp"):
            sub.mkdir(parents=True, exist_ok=True)
        template = string.Template((FILES_DIR / "server.properties.in").read_text())
        self.config_path.write_text(
            template.substitute(
                host=self.host, port=self.port, controller_port=self.controller_port, data_dir=self.data_dir
            )
        )
        (self.base_dir / "log4j2.xml").write_text((FILES_DIR / "log4j2.xml").read_text())

    def _java(self, lib: Path, main: str, *args: str, heap: str | None = None) -> list[str]:
        heap = heap or self.heap
        return [
            str(java_executable()),
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-XX:+PerfDisableSharedMem",  # no hsperfdata in /tmp
            "-Djava.awt.headless=true",
            "-Djava.net.preferIPv4Stack=true",
            f"-Djava.io.tmpdir={self.base_dir / 'tmp'}",
            f"-Dkafka.logs.dir={self.base_dir / 'logs'}",
            f"-Dlog4j2.configurationFile={(self.base_dir / 'log4j2.xml').as_uri()}",
            "-cp",
            f"{lib}/*",
            main,
            *args,
        ]

    def _format(self, lib: Path) -> None:
        """Format the storage once (a new cluster id); a formatted folder has ``meta.properties``."""
        if (self.data_dir / "meta.properties").is_file():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # One id in 64 starts with "-": passed as "--cluster-id=..." so it is never read as an option.
        cmd = self._java(
            lib, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(self.config_path)
        )
        result = subprocess.run(
            cmd, cwd=self.base_dir, capture_output=True, text=True, check=False, timeout=self.ready_timeout
        )
        if result.returncode != 0:
            raise BrokerError(
                f"formatting the storage failed (exit {result.returncode}):\n{result.stdout}{result.stderr}"
            )
        self._log(f"kafka: storage formatted (cluster {cluster_id})")

    # ---- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """Bring the broker up and return once it is ready; a running broker is only checked.

        Raises :class:`BrokerError` (with the log's tail) if the JVM dies or is not ready within
        ``ready_timeout`` seconds, or if another process holds the broker's port."""
        started = time.monotonic()
        with file_lock(self.base_dir.parent / f".{self.base_dir.name}.lock"):
            if self.pid() is None:
                if port_open(self.host, self.port, 0.5):
                    raise BrokerError(f"{self.bootstrap} is taken by another process: is another broker running?")
                lib = fetch(self.version, self.home, log=self._log)
                self.write_config()
                self._format(lib)
                self._launch(lib)
            self._wait_ready(started)
        self._log(f"kafka: ready on {self.bootstrap} in {time.monotonic() - started:.1f}s")

    def _launch(self, lib: Path) -> None:
        stdout = self.base_dir / "logs" / "stdout.log"
        self._log_offset = self.server_log.stat().st_size if self.server_log.exists() else 0
        # Through /bin/sh so the JVM is reparented and detached: it outlives this process, and a
        # Ctrl-C aimed at the caller does not reach it.
        launcher = subprocess.run(
            [
                "/bin/sh",
                "-c",
                '"$@" </dev/null >>"$ESKIT_KAFKA_STDOUT" 2>&1 & echo $!',
                "sh",
                *self._java(lib, _MAIN_CLASS, str(self.config_path)),
            ],
            env={**os.environ, "ESKIT_KAFKA_STDOUT": str(stdout)},
            cwd=self.base_dir,
            stdout=subprocess.PIPE,
            start_new_session=True,
            check=True,
            text=True,
        )
        pid = int(launcher.stdout.strip())
        (self.base_dir / "kafka.pid").write_text(f"{pid}\n")
        self._log(f"kafka: started pid {pid} on {self.bootstrap}, waiting until it serves...")

    def _started(self, offset: int) -> bool:
        try:
            with open(self.server_log, "rb") as handle:
                handle.seek(offset)
                return any(STARTED_LINE in raw.decode(errors="replace") for raw in handle)
        except OSError:
            return False

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.ready_timeout
        while True:
            if self.pid() is None:
                self._fail("kafka: the JVM exited during start-up")
            if port_open(self.host, self.port, 0.5) and self._started(self._log_offset):
                return
            if time.monotonic() >= deadline:
                self._fail(f"kafka: not ready within {self.ready_timeout:.0f}s")
            time.sleep(0.5)

    def stop(self, *, wipe: bool = False, grace: float | None = None) -> None:
        """Stop the broker: SIGTERM (a paused one is resumed first), SIGKILL after ``grace`` seconds.
        ``wipe`` then deletes the broker's folder (data and logs)."""
        pid = self.pid()
        if pid is not None:
            self._log(f"kafka: SIGTERM pid {pid}")
            self._signal(pid, signal.SIGTERM)
            self._signal(pid, signal.SIGCONT)
            self._wait_dead(pid, self.stop_grace if grace is None else grace)
        if wipe:
            self.wipe()

    def kill(self) -> None:
        """SIGKILL the broker (a crash) and wait until its process is gone."""
        pid = self.pid()
        if pid is not None:
            self._log(f"kafka: SIGKILL pid {pid}")
            self._signal(pid, signal.SIGKILL)
            self._wait_dead(pid, 0.0)

    def pause(self) -> None:
        """Freeze the broker with SIGSTOP (clients see a broker that does not answer)."""
        pid = self.pid()
        if pid is None:
            raise BrokerError("the broker is not running")
        os.kill(pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Resume a paused broker (SIGCONT)."""
        pid = self.pid()
        if pid is None:
            raise BrokerError("the broker is not running")
        os.kill(pid, signal.SIGCONT)

    def wipe(self) -> None:
        """Delete the broker's folder; the broker must be stopped."""
        if self.pid() is not None:
            raise BrokerError("stop the broker before wiping it")
        if self.base_dir.exists():
            shutil.rmtree(self.base_dir)
            self._log(f"kafka: wiped {self.base_dir}")

    def __enter__(self) -> LocalKafkaBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- internals -----------------------------------------------------------------------------

    @staticmethod
    def _signal(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def _wait_dead(self, pid: int, grace: float) -> None:
        """Wait up to ``grace`` seconds for ``pid`` to end, then SIGKILL it and wait (at most 30 s more)."""
        deadline = time.monotonic() + grace
        killed = False
        while proc_state(pid) not in (None, "Z", "X"):
            now = time.monotonic()
            if now >= deadline and not killed:
                self._log(f"kafka: pid {pid} still alive after {grace:.0f}s, SIGKILL")
                self._signal(pid, signal.SIGKILL)
                killed, deadline = True, now + 30.0
            elif now >= deadline:
                raise BrokerError(f"kafka: pid {pid} did not end after SIGKILL")
            time.sleep(0.1)

    def _fail(self, message: str) -> None:
        parts = [message]
        for path in (self.server_log, self.base_dir / "logs" / "stdout.log"):
            text = tail(path)
            if text:
                parts.append(f"----- last 60 lines of {path} -----\n{text}")
        raise BrokerError("\n".join(parts))
