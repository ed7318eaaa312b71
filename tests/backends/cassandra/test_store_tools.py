"""The data tools against real Cassandra: an archive imported whole, and a copy from SQLite killed and resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from downloads.bootstrap import bootstrap
from downloads.entrypoints.cli import main
from downloads.settings import Settings
from eskit import open_stores
from eskit.transfer import ArchiveReader, CopyState, copy_store
from tests.downloads.integration.test_store_tools import answers, assert_replays, newer_codec
from tests.support.cassandra import ClusterPool, fresh_keyspace, store_url
from tests.support.history import MASTER_KEY as HISTORY_MASTER_KEY
from tests.support.history import all_events, archive_of_history, build_history
from tests.support.server import running_server

pytestmark = [pytest.mark.cassandra, pytest.mark.slow]


@pytest.mark.cluster(nodes=1)
def test_an_archive_imported_into_cassandra_holds_every_event_and_answers_and_replays_as_before(
    cluster_pool: ClusterPool, tmp_path: Path
) -> None:
    cluster = cluster_pool.get(1)
    archive = str(tmp_path / "downloads.jsonl.gz")
    source, built = archive_of_history(archive, 2000)
    url = store_url(cluster, fresh_keyspace("imported"))
    try:
        assert main(["store", "import", archive, "--store", url]) == 0
        # one schema later, with the master key the archive's keys are wrapped with
        target = bootstrap(Settings(store=url, snapshot_every=4, master_key=HISTORY_MASTER_KEY), codec=newer_codec())
        try:
            assert all_events(target.stores.events) == all_events(source.stores.events)
            assert answers(target.service, built.accounts) == answers(source.service, built.accounts)
            assert_replays(target.service, built)
            # and exported back out of Cassandra (stream by stream), the same events again
            back = str(tmp_path / "back.jsonl.gz")
            assert main(["store", "export", back, "--store", url]) == 0
            assert ArchiveReader(back).header.consistency == "per-stream"
            assert sorted(ArchiveReader(back).events(), key=_key) == sorted(ArchiveReader(archive).events(), key=_key)
        finally:
            target.close()
    finally:
        source.close()


def _key(line: tuple[str, int, Any]) -> tuple[str, int]:
    return line[0], line[1]


def _copy_command(source: str, target: str, state: Path) -> list[str]:
    script = Path(sys.executable).parent / "downloads"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "downloads.entrypoints.cli"]
    return [*command, "store", "copy", "--from", source, "--to", target, "--state", str(state)]


def _keep_writing(server: Any, stop: threading.Event, written: list[str]) -> None:
    """Open accounts and take licenses on the source until told to stop (at most 2,000 commands)."""
    with server.client() as http:
        for n in range(1000):
            if stop.is_set():
                return
            account = f"live-{n:04d}-{uuid.uuid4().hex[:6]}"
            http.post("/v1/accounts", json={"account_id": account, "plan": "premium"}).raise_for_status()
            http.post(f"/v1/accounts/{account}/devices", json={"device_id": "d", "model": "m"}).raise_for_status()
            written.append(account)


@pytest.mark.cluster(nodes=3)
def test_a_copy_from_sqlite_to_three_nodes_killed_halfway_resumes_and_equals_the_source(
    cluster_pool: ClusterPool, tmp_path: Path
) -> None:
    cluster = cluster_pool.get(3)
    source_url = f"sqlite:///{tmp_path / 'downloads.db'}"
    target_url = store_url(cluster, fresh_keyspace("copied"))
    # The source: 1,500 accounts of history made by the service (moved into SQLite with the copy tool itself).
    memory = bootstrap(Settings(store="memory://", snapshot_every=4))
    build_history(memory.service, 1500)
    sqlite = open_stores(source_url)
    copy_store(memory.stores, sqlite, CopyState(str(tmp_path / "seed.json"), "memory://", source_url))
    sqlite.close()
    memory.close()
    state = tmp_path / "copy-state.json"
    stop, written = threading.Event(), []
    with running_server(tmp_path, store=source_url) as server:
        writer = threading.Thread(target=_keep_writing, args=(server, stop, written))
        writer.start()
        try:
            # The first copy is SIGKILLed once it has moved a third of the source.
            log = open(tmp_path / "first-copy.log", "wb")  # noqa: SIM115 - closed below
            copying = subprocess.Popen(_copy_command(source_url, target_url, state), stdout=log, stderr=log)
            try:
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline and copying.poll() is None:
                    if state.exists() and orjson.loads(state.read_bytes())["feed_after"] >= 4000:
                        break
                    time.sleep(0.05)
                assert copying.poll() is None, "the copy ended before it could be killed"
                os.kill(copying.pid, signal.SIGKILL)
            finally:
                copying.kill()
                copying.wait(timeout=30)
                log.close()
            killed_at = orjson.loads(state.read_bytes())["feed_after"]
            # Run again while the service keeps writing: it resumes from its state and catches up.
            resumed = subprocess.run(
                _copy_command(source_url, target_url, state), capture_output=True, text=True, timeout=600
            )
            assert resumed.returncode == 0, resumed.stdout + resumed.stderr
            assert "(resuming)" in resumed.stderr
        finally:
            stop.set()
            writer.join(timeout=60)
    assert written, "the service wrote nothing during the copy"
    # Writes stopped: the final run catches up with the last of them.
    final = subprocess.run(_copy_command(source_url, target_url, state), capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stdout + final.stderr
    source, target = open_stores(source_url), open_stores(target_url)
    try:
        expected, copied = all_events(source.events), all_events(target.events)
        assert killed_at < len(expected)
        assert [(e.stream_id, e.position) for e in copied] == [(e.stream_id, e.position) for e in expected]
        assert copied == expected  # same ids, times and bytes: nothing twice, nothing missing
        assert {f"account-{a}" for a in written} <= {e.stream_id for e in copied}
    finally:
        source.close()
        target.close()
