"""The read side run apart: ``downloads project`` beside servers that do not project, and ``projections``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.downloads.e2e.test_api_cli import _downloads
from tests.downloads.e2e.test_read_side import acquire, eventually, member
from tests.support.server import running_server, unique_id
from tools.server_process import processes


def test_downloads_project_keeps_the_read_models_of_servers_that_run_none(tmp_path: Path) -> None:
    title = unique_id("film")
    store = f"sqlite:///{tmp_path / 'downloads.db'}"
    with (
        running_server(tmp_path, env={"DOWNLOADS_READ_SIDE": "off"}) as server,
        server.client("admin") as admin,
        server.client("service") as http,
        server.client("support") as support,
    ):
        assert admin.put(f"/v1/titles/{title}", json={"studio": "default"}).status_code == 200
        accounts = [member(http) for _ in range(3)]
        for account in accounts:
            acquire(http, account, title)
        time.sleep(0.5)
        before = {p["name"]: p for p in support.get("/v1/projections").json()["projections"]}
        assert before["licenses_by_title"]["lag_events"] > 0 and before["licenses_by_title"]["position"] == 0

        script = Path(sys.executable).parent / "downloads"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOWNLOADS_")}
        projector = subprocess.Popen(
            [str(script), "project", "--store", store],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            listed = eventually(
                lambda: len(r := support.get(f"/v1/titles/{title}/licenses").json()["licenses"]) == 3 and r,
                "the licenses projected by downloads project",
            )
            assert sorted(row["account_id"] for row in listed) == sorted(accounts)
        finally:
            os.killpg(projector.pid, signal.SIGINT)  # Ctrl-C: a clean stop
            _, errors = projector.communicate(timeout=30)
        assert projector.returncode == 0, errors
        assert "projecting" in errors and "Traceback" not in errors

        status = _downloads("projections", "status", "--store", store)
        assert status.returncode == 0, status.stderr
        lines = {line.split()[0]: line.split() for line in status.stdout.splitlines()[1:]}
        names = {"licenses_by_title", "lookup", "download_reports", "title_withdrawal", "licenses_by_device"}
        assert set(lines) == names
        assert lines["licenses_by_title"][1] == "caught_up"

        rebuilt = _downloads("projections", "rebuild", "licenses_by_title", "--store", store)
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert "rebuilt as version 2" in rebuilt.stdout
        again = support.get(f"/v1/titles/{title}/licenses").json()["licenses"]
        assert sorted(row["account_id"] for row in again) == sorted(accounts)  # the server reads the new version

        unknown = _downloads("projections", "rebuild", "nope", "--store", store)
        assert unknown.returncode == 1 and unknown.stderr.startswith("UsageError: no projection 'nope'")


# -- the read side's process under `serve` ---------------------------------------------------------


def _projector_of(pid: int) -> int | None:
    """The pid of the read side's process that the serve ``pid`` started, None when there is none."""
    found = [p.pid for p in processes() if p.ppid == pid and p.command()[-2:] == ["project", "--quiet"]]
    assert len(found) <= 1, f"more than one read side's process: {found}"
    return found[0] if found else None


def _alive(pid: int) -> bool:
    return any(p.pid == pid for p in processes())


def test_serve_runs_the_read_side_in_a_process_of_its_own_and_starts_it_again_when_it_dies(tmp_path: Path) -> None:
    title = unique_id("film")
    with (
        running_server(tmp_path) as server,
        server.client("admin") as admin,
        server.client("service") as http,
        server.client("support") as support,
    ):
        assert server.process is not None
        serve = server.process.pid
        first = eventually(lambda: _projector_of(serve), "serve's read side process")
        assert admin.put(f"/v1/titles/{title}", json={"studio": "default"}).status_code == 200
        accounts = [member(http) for _ in range(2)]
        acquire(http, accounts[0], title)
        eventually(
            lambda: len(support.get(f"/v1/titles/{title}/licenses").json()["licenses"]) == 1,
            "the license projected by serve's read side process",
        )

        os.kill(first, signal.SIGKILL)
        second = eventually(
            lambda: (p := _projector_of(serve)) not in (None, first) and p, "the read side's process started again"
        )
        acquire(http, accounts[1], title)
        listed = eventually(
            lambda: len(r := support.get(f"/v1/titles/{title}/licenses").json()["licenses"]) == 2 and r,
            "the license projected after the restart",
        )
        assert sorted(row["account_id"] for row in listed) == sorted(accounts)

        os.kill(serve, signal.SIGTERM)  # serve alone, not its group: it stops what it started
        server.process.wait(timeout=30)
        eventually(lambda: not _alive(second), "the read side's process stopped with serve", seconds=40)
    log = server.log_tail()
    assert "read side's process exited" in log and "Traceback" not in log, log


def test_the_read_side_process_of_a_serve_killed_outright_stops_by_itself(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        assert server.process is not None
        serve = server.process.pid
        projector = eventually(lambda: _projector_of(serve), "serve's read side process")
        os.kill(serve, signal.SIGKILL)  # no goodbye: the read side's process notices its parent is gone
        server.process.wait(timeout=30)
        eventually(lambda: not _alive(projector), "the orphaned read side's process stopped", seconds=30)


def test_serve_with_the_read_side_off_starts_no_process_for_it(tmp_path: Path) -> None:
    with running_server(tmp_path, env={"DOWNLOADS_READ_SIDE": "off"}) as server, server.client("service") as http:
        assert server.process is not None
        member(http)  # the server is up and answering
        time.sleep(1.0)
        assert _projector_of(server.process.pid) is None


def test_a_stop_signal_to_the_whole_group_stops_the_read_side_once_without_a_restart(tmp_path: Path) -> None:
    # A service manager's stop (or Ctrl-C on a terminal) reaches serve and its read side's process at once.
    with running_server(tmp_path) as server:
        assert server.process is not None
        projector = eventually(lambda: _projector_of(server.process.pid), "serve's read side process")
        server.stop(grace=40)
        assert server.process.poll() is not None
    assert not _alive(projector)
    log = server.log_tail()
    assert "exited with status" not in log and "Traceback" not in log, log


def test_serve_on_a_memory_store_keeps_its_read_side_in_the_worker(tmp_path: Path) -> None:
    # A memory store lives in one process: a read side in another would follow an empty store of its own.
    title = unique_id("film")
    with (
        running_server(tmp_path, store="memory://") as server,
        server.client("admin") as admin,
        server.client("service") as http,
        server.client("support") as support,
    ):
        assert server.process is not None
        assert admin.put(f"/v1/titles/{title}", json={"studio": "default"}).status_code == 200
        account = member(http)
        acquire(http, account, title)
        listed = eventually(
            lambda: (r := support.get(f"/v1/titles/{title}/licenses").json()["licenses"]) and r,
            "the license projected on a memory store",
        )
        assert [row["account_id"] for row in listed] == [account]
        assert _projector_of(server.process.pid) is None


def test_the_read_side_process_reports_a_failed_start_as_a_json_line_when_serve_logs_json(tmp_path: Path) -> None:
    env = {**os.environ, "DOWNLOADS_SERVE_PID": str(os.getpid()), "DOWNLOADS_LOG_FORMAT": "json"}
    failed = subprocess.run(
        [sys.executable, "-m", "downloads.entrypoints.cli", "project", "--quiet", "--store", "bogus://x"],
        cwd=tmp_path,  # a development master key may be made in the working directory
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failed.returncode == 1
    [line] = failed.stderr.strip().splitlines()
    logged = json.loads(line)
    assert logged["level"] == "ERROR" and "unknown store URL" in logged["message"]


def test_project_refuses_a_serve_pid_that_is_not_its_parent(tmp_path: Path) -> None:
    env = {**os.environ, "DOWNLOADS_SERVE_PID": "not-a-pid"}
    store = f"sqlite:///{tmp_path / 'downloads.db'}"
    refused = subprocess.run(
        [sys.executable, "-m", "downloads.entrypoints.cli", "project", "--store", store],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert (
        "UsageError" in refused.stderr and "DOWNLOADS_SERVE_PID" in refused.stderr and "Traceback" not in refused.stderr
    )
