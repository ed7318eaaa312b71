"""One request cannot make the store grow by more than a few hundred KiB (issue 8, item 2).

Before, the idempotency reply was copied into every event a command wrote and
into every snapshot: closing an account with 600 active licenses under an
Idempotency-Key wrote 601 copies of the reply, and a sync with 1,000 made-up ids
grew the database by 14 MB.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.support.server import running_server, unique_id

pytestmark = pytest.mark.slow

LICENSES = 600


def _stored_bytes(db: Path) -> int:
    """What the store holds: every event's and snapshot's bytes (the file itself grows in pages)."""
    with sqlite3.connect(db) as conn:
        (events,) = conn.execute("SELECT coalesce(sum(length(data) + length(metadata)), 0) FROM events").fetchone()
        (snapshots,) = conn.execute("SELECT coalesce(sum(length(state)), 0) FROM snapshots").fetchone()
    return int(events) + int(snapshots)


def test_closing_an_account_with_600_licenses_and_a_junk_sync_grow_the_store_a_little(tmp_path: Path) -> None:
    db = tmp_path / "downloads.db"
    policy = tmp_path / "policy.toml"
    policy.write_text("[devices]\nmax_active_downloads = 1000\n")
    with running_server(tmp_path, store=f"sqlite:///{db}", policy=policy) as server:
        account = unique_id()
        with server.client("admin") as http:
            assert http.post("/v1/accounts", json={"account_id": account, "plan": "premium"}).status_code == 201
            # As many devices as an account may have, with long names: the account's reply is large.
            for d in ["phone", "tablet", *(f"device-{i}" for i in range(18))]:
                body = {"device_id": d, "model": "m" * 200}
                assert http.post(f"/v1/accounts/{account}/devices", json=body).is_success
            for i in range(LICENSES):
                assert http.put(f"/v1/titles/t-{i}", json={"studio": "default"}).status_code == 200
                body = {"device_id": "phone", "title_id": f"t-{i}"}
                assert http.post(f"/v1/accounts/{account}/licenses", json=body).status_code == 201

            before = _stored_bytes(db)
            junk = {"license_ids": [f"made-up-{i:04d}-{'x' * 40}" for i in range(1000)]}
            synced = http.post(
                f"/v1/accounts/{account}/devices/tablet/sync", json=junk, headers={"Idempotency-Key": "s"}
            )
            assert synced.status_code == 200 and len(synced.json()["revoked"]) == 1000
            after_sync = _stored_bytes(db)
            closed = http.post(f"/v1/accounts/{account}/close", headers={"Idempotency-Key": "close-1"})
            assert closed.status_code == 200
            after_close = _stored_bytes(db)

            again = http.post(f"/v1/accounts/{account}/close", headers={"Idempotency-Key": "close-1"})
            assert again.json() == closed.json() and again.headers.get("idempotent-replayed") == "true"

    assert after_sync - before < 64 * 1024  # a sync that releases nothing writes nothing
    # 600 revocations (about 300 bytes each) and the reply (about 6 KB) once: a few hundred KiB.
    assert after_close - after_sync < 400 * 1024, after_close - after_sync
