"""A damaged SQLite store, seen through every tool in its own process: findings, never a traceback.

The store is built by the service, then damaged the way an operator's mistake or a forger would:
an event deleted from the middle of a stream (a license's ``LicenseIssued``, with the snapshots
that covered it), a stream's first event deleted, a payload that no longer decodes, a forged
event that breaks a limit, a recorded time no store can encode, a read-model row that names no
license.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from downloads.bootstrap import open_read_side
from tests.downloads.e2e.test_api_cli import _downloads
from tests.downloads.integration.test_store_tools import _corrupt_payload, _limit_exceeded, _orphan_row, wired
from tests.support.history import build_history


def _db(url: str) -> sqlite3.Connection:
    return sqlite3.connect(url[len("sqlite:///") :], isolation_level=None)


def _issued_deleted(url: str) -> None:
    """acct-00005's second license loses its ``LicenseIssued`` (position 5); its renewal (7) still names it."""
    with _db(url) as db:
        db.execute("DELETE FROM events WHERE stream_id = 'account-acct-00005' AND position = 5")
        db.execute("DELETE FROM snapshots WHERE stream_id = 'account-acct-00005'")


def _first_deleted(url: str) -> None:
    with _db(url) as db:
        db.execute("DELETE FROM events WHERE stream_id = 'account-acct-00006' AND position = 1")
        db.execute("DELETE FROM snapshots WHERE stream_id = 'account-acct-00006'")


def _time_out_of_range(url: str) -> None:
    """A recorded time one microsecond past 9999-12-31T23:59:59.999999Z, as microseconds since 1970."""
    with _db(url) as db:
        db.execute(
            "UPDATE events SET recorded_at = 253402300800000000 WHERE stream_id = 'account-acct-00007' AND position = 3"
        )


@pytest.fixture
def damaged(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'downloads.db'}"
    runtime = wired(url)
    build_history(runtime.service, 30)
    read_side = open_read_side(runtime)
    assert read_side is not None
    while read_side.step():
        pass
    read_side.close()
    runtime.close()
    for damage in (_issued_deleted, _first_deleted, _corrupt_payload, _limit_exceeded, _time_out_of_range, _orphan_row):
        damage(url)
    return url


def test_verify_reports_every_damage_as_a_finding_and_exits_1(damaged: str) -> None:
    done = _downloads("store", "verify", "--store", damaged, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    findings = [line.strip() for line in done.stdout.splitlines() if line.startswith("  ")]
    expected = [
        "gap: account-acct-00005@6: positions jump from 4 to 6",
        "fold: account-acct-00005: ",  # its renewal names a license it no longer has
        "gap: account-acct-00006@2: positions jump from 0 to 2",
        "undecodable: account-acct-00004@2",
        "rule: account-acct-00003@10: license 'forged' issued: DEVICE_LIMIT_REACHED",
        "unreadable: account-acct-00007@3: ",
        "read_model: account-acct-00002: read model licenses_by_title: license 'ghost' is not in",
    ]
    for start in expected:
        assert any(f.startswith(start) for f in findings), (start, done.stdout)
    assert "recorded" in next(f for f in findings if f.startswith("unreadable: account-acct-00007@3"))


def test_export_of_a_damaged_store_is_refused_in_one_line_and_leaves_no_archive(damaged: str, tmp_path: Path) -> None:
    archive = tmp_path / "backup.jsonl.gz"
    done = _downloads("store", "export", str(archive), "--store", damaged, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    said = [line for line in done.stderr.strip().splitlines() if not line.startswith("exporting:")]
    assert len(said) == 1 and said[0].startswith("ArchiveError: cannot export account-acct-"), done.stderr
    assert "store verify" in said[0], done.stderr
    assert not archive.exists() and not Path(str(archive) + ".partial").exists()


def test_history_of_a_damaged_account_is_an_error_line_not_a_traceback(damaged: str) -> None:
    done = _downloads("history", "acct-00007", "--store", damaged, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "account-acct-00007" in done.stderr and "3" in done.stderr
