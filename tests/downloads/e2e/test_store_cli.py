"""``downloads store`` in its own process: progress on stderr, Ctrl-C mid-run, and a resumed run that finishes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eskit import open_stores
from eskit.transfer import CopyState, copy_store
from tests.support.history import MASTER_KEY, all_events, archive_of_history

pytestmark = pytest.mark.slow


def _start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    script = Path(sys.executable).parent / "downloads"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "downloads.entrypoints.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOWNLOADS_")}
    env["DOWNLOADS_MASTER_KEY"] = MASTER_KEY  # the key the source's members' keys are wrapped with
    return subprocess.Popen(
        [*command, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _interrupt_when(process: subprocess.Popen[str], ready: Path) -> tuple[int, str, str]:
    """Send Ctrl-C (SIGINT) once ``ready`` exists; return the exit status and output."""
    deadline = time.monotonic() + 120
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the command finished before it could be interrupted"
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    return process.returncode, out, err


@pytest.fixture(scope="module")
def big_source(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite store of 6,000 service-built accounts (about 50,000 events)."""
    workdir = tmp_path_factory.mktemp("source")
    runtime, _ = archive_of_history(str(workdir / "unused.jsonl.gz"), 6000)
    url = f"sqlite:///{workdir / 'source.db'}"
    target = open_stores(url)
    copy_store(runtime.stores, target, CopyState(str(workdir / "seed.json"), "memory://", url))  # keys too
    target.close()
    runtime.close()
    return url


def test_a_copy_interrupted_with_ctrl_c_says_how_to_resume_and_a_second_run_finishes_it(
    big_source: str, tmp_path: Path
) -> None:
    target = f"sqlite:///{tmp_path / 'target.db'}"
    state = tmp_path / "state.json"
    copying = _start("store", "copy", "--from", big_source, "--to", target, "--state", str(state), cwd=tmp_path)
    status, _, err = _interrupt_when(copying, state)
    assert status == 130, err
    assert "interrupted: run the same command again to resume" in err
    assert "copying" in err  # the progress bar
    partial = open_stores(target)
    held = len(all_events(partial.events))
    partial.close()
    finishing = _start("store", "copy", "--from", big_source, "--to", target, "--state", str(state), cwd=tmp_path)
    out, err = finishing.communicate(timeout=300)
    assert finishing.returncode == 0, err
    assert "(resuming)" in err and "copied" in out
    source, copied = open_stores(big_source), open_stores(target)
    try:
        expected = all_events(source.events)
        assert 0 < held < len(expected)
        assert all_events(copied.events) == expected
    finally:
        source.close()
        copied.close()


def test_an_export_interrupted_with_ctrl_c_leaves_no_archive(big_source: str, tmp_path: Path) -> None:
    archive = tmp_path / "backup.jsonl.gz"
    exporting = _start("store", "export", str(archive), "--store", big_source, cwd=tmp_path)
    status, _, err = _interrupt_when(exporting, tmp_path / "backup.jsonl.gz.partial")
    assert status == 130, err
    assert "interrupted: no archive written" in err
    assert list(tmp_path.iterdir()) == []


def test_an_export_prints_a_summary_and_verify_passes_the_imported_copy(big_source: str, tmp_path: Path) -> None:
    archive = tmp_path / "backup.jsonl.gz"
    exported = _start("store", "export", str(archive), "--store", big_source, cwd=tmp_path)
    out, err = exported.communicate(timeout=300)
    assert exported.returncode == 0, err
    assert "exported 6,002 streams" in out and "sha256 " in out
    restored = f"sqlite:///{tmp_path / 'restored.db'}"
    imported = _start("store", "import", str(archive), "--store", restored, cwd=tmp_path)
    out, err = imported.communicate(timeout=300)
    assert imported.returncode == 0, err
    assert "checking" in err and "importing" in err
    verified = _start("store", "verify", "--store", restored, cwd=tmp_path)
    out, err = verified.communicate(timeout=300)
    assert verified.returncode == 0, out + err
    assert "checked 6,002 streams" in out and "no problems found" in out


def test_an_import_killed_part_way_leaves_the_store_empty_and_the_same_command_then_imports_it_whole(
    big_source: str, tmp_path: Path
) -> None:
    archive = tmp_path / "backup.jsonl.gz"
    exported = _start("store", "export", str(archive), "--store", big_source, cwd=tmp_path)
    _, err = exported.communicate(timeout=300)
    assert exported.returncode == 0, err
    restored = tmp_path / "restored.db"
    url = f"sqlite:///{restored}"
    importing = _start("store", "import", str(archive), "--store", url, cwd=tmp_path)
    wal = Path(str(restored) + "-wal")
    deadline = time.monotonic() + 120
    while (
        importing.poll() is None and time.monotonic() < deadline and (not wal.exists() or wal.stat().st_size < 1 << 20)
    ):
        time.sleep(0.005)  # until the import has written a megabyte of events
    assert importing.poll() is None, "the import finished before it could be killed"
    importing.kill()  # SIGKILL: no cleanup of any kind
    importing.communicate(timeout=60)

    partial = open_stores(url, create_schema=False)
    try:
        assert partial.events.stream_ids() == []  # all or nothing: nothing
    finally:
        partial.close()
    again = _start("store", "import", str(archive), "--store", url, cwd=tmp_path)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert "imported 6,002 streams" in out
    source, copied = open_stores(big_source), open_stores(url)
    try:
        assert all_events(copied.events) == all_events(source.events)
    finally:
        source.close()
        copied.close()
