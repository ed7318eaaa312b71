"""Service processes whose clocks disagree by an hour, racing on one account and title.

Each process decides a command at the later of its own clock and the account's
last recorded time, and counts every download recorded after ``now - window``,
so a process whose clock runs behind still counts the downloads recorded by one
whose clock runs ahead. The clock is shifted with Debian's ``faketime``.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import httpx
import pytest

from tests.support.server import Server, running_server, unique_id

pytestmark = pytest.mark.slow

FAKETIME = shutil.which("faketime")
if FAKETIME is None and os.environ.get("CI"):
    raise RuntimeError("faketime is missing: .ci/run installs Debian's faketime package")
needs_faketime = pytest.mark.skipif(FAKETIME is None, reason="needs Debian's faketime package")

LIMIT = 3  # demo-title-2 is the restricted studio's: 3 downloads per window


def _client(server: Server) -> httpx.Client:
    # Tokens outlive the hour between the two clocks.
    token = server.token(ttl_seconds=4 * 3600)
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def _download_until_refused(server: Server, account: str, device: str, granted: list[str]) -> None:
    with _client(server) as http:
        for _ in range(2 * LIMIT + 2):
            got = http.post(f"/v1/accounts/{account}/licenses", json={"device_id": device, "title_id": "demo-title-2"})
            if got.status_code == 409 and got.json()["error"]["code"] == "TITLE_YEARLY_LIMIT_REACHED":
                return
            assert got.status_code == 201, got.text
            granted.append(got.json()["license_id"])
            released = http.delete(f"/v1/accounts/{account}/licenses/{got.json()['license_id']}")
            assert released.status_code == 200, released.text


@needs_faketime
def test_the_title_limit_holds_between_processes_whose_clocks_differ_by_an_hour(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'shared.db'}"
    (tmp_path / "ahead").mkdir()
    (tmp_path / "on-time").mkdir()
    with (
        running_server(tmp_path / "ahead", store=store, prefix=[str(FAKETIME), "-f", "+1h"]) as ahead,
        running_server(tmp_path / "on-time", store=store) as on_time,
    ):
        for _ in range(3):
            account = unique_id()
            with _client(ahead) as http:
                assert http.post("/v1/accounts", json={"account_id": account, "plan": "premium"}).status_code == 201
                for device in ("d-ahead", "d-on-time"):
                    http.post(f"/v1/accounts/{account}/devices", json={"device_id": device, "model": "m"})
            granted: list[str] = []
            # The process ahead downloads first, then both race.
            _download_until_refused(ahead, account, "d-ahead", granted)
            threads = [
                threading.Thread(target=_download_until_refused, args=(server, account, device, granted))
                for server, device in ((ahead, "d-ahead"), (on_time, "d-on-time"))
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=120)

            assert len(granted) == LIMIT, granted
            for server in (ahead, on_time):
                with _client(server) as http:
                    counted = http.get(f"/v1/accounts/{account}/titles/demo-title-2/downloads").json()
                assert (counted["used"], counted["limit"]) == (LIMIT, LIMIT)
