"""The data tools and erased members, through the real ``downloads`` command on SQLite files.

An export after an erasure holds no key and nothing readable of the member; an archive written before
it stays unreadable for that member when imported with the erasure carried; a copy keeps erasures made
before it and while it runs; verify reports erased members as such. Every store here shares one master
key, as one deployment's stores do.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from downloads.application import AcquireLicense, OpenAccount, RegisterDevice
from downloads.bootstrap import Runtime, bootstrap
from downloads.domain import Gone
from downloads.settings import Settings
from tests.downloads.e2e.test_api_cli import _downloads
from tests.downloads.factories import refusal

MASTER_KEY = "cjGeX1v7nYnVhm5kf6G1Pgf8eNsnBOTbQN8vg8a1vNE"
ENV = {"DOWNLOADS_MASTER_KEY": MASTER_KEY}
MODEL = "Pixel-Secret-Model-42"
DEVICE = "device-secret-7"
KEY = "idem-secret-key-9"


def url(path: Path) -> str:
    return f"sqlite:///{path}"


def open_service(path: Path) -> Runtime:
    return bootstrap(Settings(store=url(path), master_key=MASTER_KEY, snapshot_every=2))


def populate(path: Path) -> None:
    runtime = open_service(path)
    try:
        for account_id, device_id in (("gone", DEVICE), ("kept", "kept-device")):
            runtime.service.handle(OpenAccount(account_id, "premium"))
            runtime.service.handle(RegisterDevice(account_id, device_id, MODEL), idempotency_key=f"{KEY}-{account_id}")
            runtime.service.handle(AcquireLicense(account_id, device_id, "demo-title-1"))
    finally:
        runtime.close()


def cli(*args: str) -> str:
    done = _downloads(*args, env=ENV, timeout=300)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    return done.stdout + done.stderr


def assert_forgotten(path: Path) -> None:
    """The member ``gone`` answers ACCOUNT_ERASED and its key is a tombstone; ``kept`` reads whole."""
    runtime = open_service(path)
    try:
        assert refusal(lambda: runtime.service.get_account("gone"), Gone).code == "ACCOUNT_ERASED"
        keys = runtime.stores.keys
        assert keys is not None
        record = keys.get("account-gone")
        assert record is not None and record.erased and record.wrapped is None
        kept = runtime.service.get_account("kept")
        assert kept["devices"][0] == {
            "device_id": "kept-device",
            "model": MODEL,
            "status": "active",
            "active_downloads": 1,
        }
    finally:
        runtime.close()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source" / "downloads.db"
    path.parent.mkdir()
    populate(path)
    return path


def test_an_export_after_the_erasure_holds_no_key_and_nothing_readable_of_the_member(
    source: Path, tmp_path: Path
) -> None:
    cli("erase", "gone", "--store", url(source), "--by", "dpo", "--request-id", "ticket-1")
    archive = tmp_path / "after.jsonl.gz"
    cli("store", "export", str(archive), "--store", url(source))
    raw = gzip.decompress(archive.read_bytes())
    for secret in (MODEL, DEVICE, f"{KEY}-gone", f"{KEY}-kept"):
        assert secret.encode() not in raw, secret  # sealed, every member's
    assert b'{"key":"account-gone","created_at"' in raw and b'"erased_at"' in raw
    target = tmp_path / "restored" / "downloads.db"
    target.parent.mkdir()
    cli("store", "import", str(archive), "--store", url(target), "--decode")
    assert_forgotten(target)


def test_an_archive_written_before_the_erasure_stays_unreadable_for_the_member_when_its_erasure_is_carried(
    source: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "before.jsonl.gz"
    cli("store", "export", str(archive), "--store", url(source))
    cli("erase", "gone", "--store", url(source))
    target = tmp_path / "restored" / "downloads.db"
    target.parent.mkdir()
    said = cli("store", "import", str(archive), "--store", url(target), "--erasures-from", url(source))
    assert "carried 1 erasures" in said and "finished the erasure of 1 members" in said
    assert_forgotten(target)
    runtime = open_service(target)
    try:
        types = [e.type_name for e in runtime.stores.events.read("account-gone")]
        assert types[-1] == "AccountErased" and types.count("AccountErased") == 1
    finally:
        runtime.close()
    stored = b"".join(p.read_bytes() for p in target.parent.iterdir())
    assert DEVICE.encode() not in stored and MODEL.encode() not in stored


def test_an_archive_imported_without_its_erasures_says_they_are_not_known_there(source: Path, tmp_path: Path) -> None:
    archive = tmp_path / "before.jsonl.gz"
    cli("store", "export", str(archive), "--store", url(source))
    target = tmp_path / "restored" / "downloads.db"
    target.parent.mkdir()
    said = cli("store", "import", str(archive), "--store", url(target))
    assert "members erased elsewhere since then are forgotten here only if their erasures were carried" in said


def test_a_copy_keeps_erasures_made_before_it_and_while_it_runs(source: Path, tmp_path: Path) -> None:
    cli("erase", "gone", "--store", url(source))
    runtime = open_service(source)
    try:
        runtime.service.handle(OpenAccount("later", "basic"))
        runtime.service.handle(RegisterDevice("later", "later-device", MODEL))
    finally:
        runtime.close()
    target = tmp_path / "copy" / "downloads.db"
    target.parent.mkdir()
    state = str(tmp_path / "copy.json")
    cli("store", "copy", "--from", url(source), "--to", url(target), "--state", state)
    assert_forgotten(target)
    cli("erase", "later", "--store", url(source))  # after the first run: the next run carries it
    cli("store", "copy", "--from", url(source), "--to", url(target), "--state", state)
    runtime = open_service(target)
    try:
        assert refusal(lambda: runtime.service.get_account("later"), Gone).code == "ACCOUNT_ERASED"
    finally:
        runtime.close()


def test_verify_reports_erased_members_as_such_and_an_unfinished_erasure_as_a_problem(source: Path) -> None:
    cli("erase", "gone", "--store", url(source))
    said = cli("store", "verify", "--store", url(source))
    assert "no problems found" in said and "1 erased members" in said
    runtime = open_service(source)  # an erasure that stopped after its event: the key still stands
    try:
        runtime.service.handle(OpenAccount("half", "basic"))
        runtime.service.account_commands.run(
            "half",
            lambda account: account.erase(by="dpo", request_id="r", now=runtime.service.clock()),
            metadata=lambda _a, at: __import__("eskit").EventMetadata(recorded_at=at, command="erase_account"),
        )
    finally:
        runtime.close()
    done = _downloads("store", "verify", "--store", url(source), env=ENV, timeout=300)
    assert done.returncode == 1 and "run `downloads erase` again" in done.stdout, done.stdout
    cli("erase", "half", "--store", url(source))
    assert "no problems found" in cli("store", "verify", "--store", url(source))


@pytest.mark.parametrize("after", [0.4, 0.7, 1.0, 1.3])
def test_an_erase_killed_at_any_moment_is_finished_by_erasing_again(source: Path, after: float) -> None:
    """SIGKILL ``downloads erase`` part-way (the delays straddle its start and its steps); the store is then
    either as it was or part-erased, and erasing again leaves it wholly erased, with one AccountErased."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = Path(sys.executable).parent / "downloads"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DOWNLOADS_")}, **ENV}
    process = subprocess.Popen(
        [str(script), "erase", "gone", "--store", url(source)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(after)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    cli("erase", "gone", "--store", url(source))
    assert_forgotten(source)
    runtime = open_service(source)
    try:
        types = [e.type_name for e in runtime.stores.events.read("account-gone")]
        assert types[-1] == "AccountErased" and types.count("AccountErased") == 1
        assert runtime.stores.snapshots.versions("account-gone") == []
        assert runtime.service.denials is not None
    finally:
        runtime.close()
    assert "no problems found" in cli("store", "verify", "--store", url(source))


def test_history_says_the_member_was_erased_and_what_if_over_every_account_skips_them(
    source: Path, tmp_path: Path
) -> None:
    cli("erase", "gone", "--store", url(source))
    done = _downloads("history", "gone", "--store", url(source), env=ENV)
    assert done.returncode == 1 and done.stderr.startswith("Gone: ACCOUNT_ERASED: account 'gone' was erased at ")
    assert cli("history", "kept", "--store", url(source)).count("DeviceRegistered") == 1
    policy = tmp_path / "other.toml"
    policy.write_text("[plans.premium]\ndownload_devices = 1\n")
    said = cli("what-if", "--policy", str(policy), "--store", url(source))
    assert "1 accounts, " in said and "1 erased members skipped" in said
