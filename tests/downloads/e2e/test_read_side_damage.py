"""The read side of a real server over a store with broken streams: it skips them, says so, and goes on.

Two accounts are broken before the server starts: one event's payload no longer decodes, and one
event's recorded time is past what any store encodes (the feed cannot even read it back). Every
other account must reach the read models, the broken ones must be named in the projections'
status (HTTP, the command line, ``/metrics``), and accounts made afterwards keep being projected.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.downloads.e2e.test_api_cli import _downloads
from tests.downloads.e2e.test_read_side import acquire, eventually, member
from tests.downloads.e2e.test_store_damage import _time_out_of_range
from tests.downloads.integration.test_store_tools import _corrupt_payload, wired
from tests.support.history import build_history
from tests.support.server import running_server

PROJECTIONS = {"licenses_by_title", "lookup", "download_reports", "title_withdrawal", "licenses_by_device"}
BROKEN = ("account-acct-00004", "account-acct-00007")


def test_the_read_side_skips_streams_it_cannot_apply_names_them_and_projects_every_other_account(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path / 'downloads.db'}"
    runtime = wired(store)
    build_history(runtime.service, 12)
    runtime.close()
    _corrupt_payload(store)  # account-acct-00004 at position 2
    _time_out_of_range(store)  # account-acct-00007 at position 3

    with (
        running_server(tmp_path, store=store) as server,
        server.client("service") as http,
        server.client("support") as support,
    ):
        # Every sound account's license of t-rare (still active) reaches the read model.
        sound = {f"acct-{n:05d}" for n in range(12)} - {"acct-00004", "acct-00007"}
        listed = eventually(
            lambda: (
                {row["account_id"] for row in support.get("/v1/titles/t-rare/licenses").json()["licenses"]} >= sound
                and support.get("/v1/titles/t-rare/licenses").json()["licenses"]
            ),
            "the sound accounts' licenses in the read model",
        )
        assert {row["account_id"] for row in listed} == sound

        # An account made now is projected too: the broken streams hold nothing up.
        account = member(http)
        acquire(http, account, "t-rare")
        eventually(
            lambda: support.get("/v1/lookup", params={"device_id": "d0"}).json()["accounts"].count(account) == 1,
            "the new account in the lookup read model",
        )

        def settled() -> dict[str, dict[str, object]] | None:  # every projection past both broken streams
            found = {p["name"]: p for p in support.get("/v1/projections").json()["projections"]}
            done = all(p["lag_events"] == 0 and p["skipped_streams"] == 2 for p in found.values())
            return found if done else None

        statuses = eventually(settled, "every projection caught up, past the broken streams")
        assert set(statuses) == PROJECTIONS
        for name, status in statuses.items():
            assert status["status"] == "failing", (name, status)
            assert status["skipped_streams"] == 2, (name, status)
            assert status["skipped_events"] >= 2, (name, status)
            assert status["lag_events"] == 0, (name, status)
            for stream in BROKEN:
                assert stream in status["error"], (name, status)

        with server.client(None) as anonymous:
            metrics = anonymous.get("/metrics").text
        for name in PROJECTIONS:
            assert re.search(rf'downloads_projection_failing\{{projection="{name}"\}} 1\.0', metrics), metrics
            skipped = re.search(rf'downloads_projection_skipped_events\{{projection="{name}"\}} (\d+)', metrics)
            assert skipped is not None and int(skipped.group(1)) >= 2, metrics

    shown = _downloads("projections", "status", "--store", store)
    assert shown.returncode == 0, shown.stderr
    rows = {line.split()[0]: line for line in shown.stdout.splitlines()[1:]}
    assert set(rows) == PROJECTIONS
    for name, row in rows.items():
        assert "failing" in row and all(stream in row for stream in BROKEN), (name, row)
