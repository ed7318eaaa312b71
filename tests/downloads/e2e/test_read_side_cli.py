"""The read side run apart: ``downloads project`` beside servers that do not project, and ``projections``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.downloads.e2e.test_api_cli import _downloads
from tests.downloads.e2e.test_read_side import acquire, eventually, member
from tests.support.server import running_server, unique_id


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
