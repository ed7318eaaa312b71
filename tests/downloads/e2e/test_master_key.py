"""The master key: required in production mode, generated (and kept) in development, named when it is wrong."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx

from eskit.privacy import MasterKey
from tests.downloads.e2e.test_api_cli import _downloads
from tests.support.server import running_server, unique_id


def test_serve_refuses_to_start_in_production_mode_without_a_master_key(tmp_path: Path) -> None:
    for env, store in (
        ({"DOWNLOADS_MODE": "production"}, f"sqlite:///{tmp_path / 'prod.db'}"),
        ({}, "cassandra://127.0.0.1:1/nowhere"),  # a Cassandra store is production unless told otherwise
    ):
        done = _downloads("serve", "--store", store, "--port", "1", env=env, timeout=60)
        assert done.returncode == 2, (done.stdout, done.stderr)
        assert done.stderr.startswith("NoMasterKey: DOWNLOADS_MASTER_KEY is not set, and this is production mode")
        assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # refused before anything was opened or made


def test_development_serve_keeps_a_generated_key_beside_the_store_and_reads_its_data_after_a_restart(
    tmp_path: Path,
) -> None:
    account = unique_id()
    with running_server(tmp_path) as server, server.client("service") as http:
        assert http.post("/v1/accounts", json={"account_id": account, "plan": "basic"}).status_code == 201
        assert http.post(f"/v1/accounts/{account}/devices", json={"device_id": "d", "model": "m"}).status_code == 201
    log = (tmp_path / "server.log").read_text()
    assert "No DOWNLOADS_MASTER_KEY set (development mode)" in log
    key_file = tmp_path / "downloads.master-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert MasterKey.parse(key_file.read_text()).id in log
    assert key_file.read_text().strip() not in log  # the key itself is never printed
    with running_server(tmp_path) as server, server.client("service") as http:
        got = http.get(f"/v1/accounts/{account}")
        assert got.status_code == 200 and got.json()["devices"][0]["model"] == "m"


def test_a_store_read_with_another_master_key_is_refused_naming_both(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'downloads.db'}"
    account = unique_id()
    first, other = MasterKey.generate(), MasterKey.generate()
    with (
        running_server(tmp_path, env={"DOWNLOADS_MASTER_KEY": first.text()}) as server,
        httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token()}"}) as http,
    ):
        assert http.post("/v1/accounts", json={"account_id": account, "plan": "basic"}).status_code == 201
    done = _downloads("history", account, "--store", store, env={"DOWNLOADS_MASTER_KEY": other.text()})
    assert done.returncode == 1, done.stdout
    assert done.stderr.startswith("MasterKeyError: ") and first.id in done.stderr and other.id in done.stderr
    rotated = _downloads(
        "keys",
        "rotate",
        "--store",
        store,
        env={"DOWNLOADS_MASTER_KEY": other.text(), "DOWNLOADS_MASTER_PREVIOUS_KEY": first.text()},
    )
    assert rotated.returncode == 0 and "1 keys rewrapped" in rotated.stdout, rotated.stderr
    done = _downloads("history", account, "--store", store, env={"DOWNLOADS_MASTER_KEY": other.text()})
    assert done.returncode == 0 and "AccountOpened" in done.stdout, done.stderr
