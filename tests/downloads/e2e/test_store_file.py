"""A SQLite store that knows its file: removed, replaced or full, the service says so (issue 8).

An earlier version silently made a new empty database when its file was removed
while serving, acknowledged writes into it, and kept saying ready; after a
restart every account was gone. Now the store records the file's identity when
it opens it and checks it before each commit and on ``/readyz``, which also
proves it can write; a server process creates the file at start, never later.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.server import Server, expect_error, running_server, unique_id

pytestmark = pytest.mark.slow


def _open_account(server: Server) -> int:
    with server.client() as http:
        return http.post("/v1/accounts", json={"account_id": unique_id(), "plan": "basic"}).status_code


def _readyz(server: Server) -> tuple[int, object]:
    with server.client(role=None) as http:
        answer = http.get("/readyz")
    return answer.status_code, answer.json()


def _db_files(path: Path) -> list[Path]:
    return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]


def test_a_removed_store_file_is_503_and_not_ready_and_no_new_file_is_made(tmp_path: Path) -> None:
    db = tmp_path / "downloads.db"
    with running_server(tmp_path, store=f"sqlite:///{db}", workers=2) as server:
        assert _open_account(server) == 201
        for path in _db_files(db):
            path.unlink()

        with server.client() as http:
            for _ in range(20):  # both workers, every connection
                answer = http.post("/v1/accounts", json={"account_id": unique_id(), "plan": "basic"})
                expect_error(answer, 503, "STORE_UNAVAILABLE")
        assert _readyz(server) == (503, {"status": "unavailable"})
        assert not db.exists(), "the server made a new database file"


def test_a_replaced_store_file_is_503_and_not_ready(tmp_path: Path) -> None:
    db = tmp_path / "downloads.db"
    with running_server(tmp_path, store=f"sqlite:///{db}") as server:
        assert _open_account(server) == 201
        shutil.copyfile(db, tmp_path / "copy.db")
        (tmp_path / "copy.db").replace(db)  # another file (another inode) at the same path

        with server.client() as http:
            expect_error(http.post("/v1/accounts", json={"account_id": "x", "plan": "basic"}), 503, "STORE_UNAVAILABLE")
        assert _readyz(server)[0] == 503


def test_a_full_disk_is_503_and_not_ready(tmp_path: Path) -> None:
    db = tmp_path / "downloads.db"
    prlimit = shutil.which("prlimit")
    assert prlimit is not None, "prlimit (util-linux) is needed to cap the server's file size"
    # Files the server writes may not grow past 256 KiB: the disk is "full" once they reach it.
    limit = 256 * 1024
    with running_server(tmp_path, store=f"sqlite:///{db}", prefix=[prlimit, f"--fsize={limit}", "--"]) as server:
        assert _readyz(server) == (200, {"status": "ready"})
        statuses = []
        with server.client() as http:
            for _ in range(2000):
                body = {"account_id": f"{unique_id()}-{'x' * 100}", "plan": "basic"}
                status = http.post("/v1/accounts", json=body).status_code
                statuses.append(status)
                if status != 201:
                    break
        assert statuses[-1] == 503, f"never ran out of space: {len(statuses)} accounts"
        assert _readyz(server) == (503, {"status": "unavailable"})


def test_readyz_tells_anonymous_callers_only_a_status(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        assert _readyz(server) == (200, {"status": "ready"})


def _chattr(flag: str, paths: list[Path]) -> bool:
    chattr = shutil.which("chattr")
    if chattr is None:
        return False
    import subprocess

    done = subprocess.run([chattr, flag, *map(str, paths)], capture_output=True, check=False)
    return done.returncode == 0


def test_a_store_file_made_read_only_while_serving_is_503_and_not_ready(tmp_path: Path) -> None:
    db = tmp_path / "downloads.db"
    with running_server(tmp_path, store=f"sqlite:///{db}") as server:
        assert _open_account(server) == 201
        files = [p for p in _db_files(db) if not p.name.endswith("-shm")]
        # The immutable flag refuses writes even through descriptors already open (a chmod would
        # not), which is what a file turned read-only under a running server looks like to it.
        # The -shm index stays writable: SQLite maps it into memory, where a refused write is a
        # SIGBUS, not an error it could report.
        if not _chattr("+i", files):
            pytest.skip("cannot set the immutable flag here (needs root on ext4, xfs or btrfs)")
        try:
            with server.client() as http:
                for _ in range(5):
                    answer = http.post("/v1/accounts", json={"account_id": unique_id(), "plan": "basic"})
                    expect_error(answer, 503, "STORE_UNAVAILABLE")
            assert _readyz(server) == (503, {"status": "unavailable"})
        finally:
            _chattr("-i", files)
