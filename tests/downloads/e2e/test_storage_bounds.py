"""One request cannot make the store grow by more than a few hundred KiB (issue 8, item 2; issue 18, item 4).

Before, the idempotency reply was copied into every event a command wrote and
into every snapshot: closing an account with 600 active licenses under an
Idempotency-Key wrote 601 copies of the reply, and a sync with 1,000 made-up ids
grew the database by 14 MB. Then a sync still kept what the device said, whole: a
64 KB body of long made-up ids cost 63 KB per recorded denial and up to 128 KB of
metadata on an accepted sync's event (its arguments, and the stored reply's
``revoked`` list).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from downloads.adapters.denials import denial_log_path
from tests.support.server import expect_error, running_server, unique_id

LICENSES = 600

#: a 64 KB sync body: 490 made-up license ids of 128 characters, the longest an id may be
HOSTILE_IDS = [f"{n:04d}-" + "x" * 123 for n in range(490)]


def _stored_bytes(db: Path) -> int:
    """What the store holds: every event's and snapshot's bytes (the file itself grows in pages)."""
    with sqlite3.connect(db) as conn:
        (events,) = conn.execute("SELECT coalesce(sum(length(data) + length(metadata)), 0) FROM events").fetchone()
        (snapshots,) = conn.execute("SELECT coalesce(sum(length(state)), 0) FROM snapshots").fetchone()
    return int(events) + int(snapshots)


def _denial_bytes(db: Path) -> int:
    """What the denial log beside the store holds (nothing when it was never made)."""
    path = denial_log_path(str(db))
    if not path.exists():
        return 0
    with sqlite3.connect(path) as conn:
        (stored,) = conn.execute("SELECT coalesce(sum(length(body)), 0) FROM denials").fetchone()
    return int(stored)


def _open_with_phone(http: httpx.Client, account: str) -> None:
    assert http.post("/v1/accounts", json={"account_id": account, "plan": "premium"}).status_code == 201
    assert http.post(f"/v1/accounts/{account}/devices", json={"device_id": "phone", "model": "m"}).status_code == 201


def test_a_sync_naming_more_ids_than_a_device_may_hold_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    db = tmp_path / "downloads.db"
    with running_server(tmp_path, store=f"sqlite:///{db}") as server, server.client() as http:
        account = unique_id()
        _open_with_phone(http, account)
        before = (_stored_bytes(db), _denial_bytes(db))

        for device in ("phone", "ghost"):  # a device of the account, and one it never had
            for key in (None, f"sync-{device}"):
                sent = http.post(
                    f"/v1/accounts/{account}/devices/{device}/sync",
                    json={"license_ids": HOSTILE_IDS},
                    headers={"Idempotency-Key": key} if key else {},
                )
                details = expect_error(sent, 422, "TOO_MANY_LICENSE_IDS")
                assert details == {"limit": 100, "sent": 490}
        at_the_bound = http.post(f"/v1/accounts/{account}/devices/phone/sync", json={"license_ids": HOSTILE_IDS[:100]})
        assert at_the_bound.status_code == 200, at_the_bound.text

        assert (_stored_bytes(db), _denial_bytes(db)) == before


def test_a_hostile_sync_stores_a_few_kilobytes_whether_accepted_or_denied(tmp_path: Path) -> None:
    db = tmp_path / "downloads.db"
    policy = tmp_path / "policy.toml"
    policy.write_text("[devices]\nmax_active_downloads = 490\n")  # every id of the body may be held
    with running_server(tmp_path, store=f"sqlite:///{db}", policy=policy) as server, server.client() as http:
        account = unique_id()
        _open_with_phone(http, account)
        licenses = [
            http.post(f"/v1/accounts/{account}/licenses", json={"device_id": "phone", "title_id": t}).json()
            for t in ("demo-title-1", "demo-title-2")
        ]
        license_id, lost = licenses[0]["license_id"], licenses[1]["license_id"]
        body = {"license_ids": [*HOSTILE_IDS[:489], license_id]}  # the device lost the other one
        sync = f"/v1/accounts/{account}/devices/phone/sync"

        before = _stored_bytes(db)
        first = http.post(sync, json=body, headers={"Idempotency-Key": "hostile"})
        accepted = _stored_bytes(db) - before
        replayed = http.post(sync, json=body, headers={"Idempotency-Key": "hostile"})
        before = _stored_bytes(db)
        unchanged = http.post(sync, json=body, headers={"Idempotency-Key": "hostile-again"})  # nothing to release
        answered = _stored_bytes(db) - before

        before = _denial_bytes(db)
        denied = http.post(f"/v1/accounts/{account}/devices/ghost/sync", json=body, headers={"Idempotency-Key": "d"})
        denial = _denial_bytes(db) - before
        denials = http.get(f"/v1/accounts/{account}/denials")
        events = http.get(f"/v1/accounts/{account}/events")

    assert first.status_code == 200, first.text
    expect_error(denied, 404, "DEVICE_NOT_FOUND")
    assert accepted < 4 * 1024, accepted  # was about 128 KB: the ids as arguments, and again as `revoked`
    assert unchanged.status_code == 200 and answered < 2 * 1024, answered  # one RequestAnswered event
    assert denial < 2 * 1024, denial  # was about 63 KB
    assert len(denials.content) < 4 * 1024 and len(events.content) < 8 * 1024
    assert "xxxxxxxxxx" not in denials.text + events.text  # no made-up id is stored
    assert first.json() == {"active": [license_id], "released": [lost], "revoked": HOSTILE_IDS[:489]}
    assert (replayed.status_code, replayed.json()) == (200, first.json())
    assert replayed.headers.get("idempotent-replayed") == "true"


@pytest.mark.slow
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
            # The policy lets a device hold 1,000 licenses, so a sync may name 1,000 ids.
            junk = {"license_ids": [f"made-up-{i:04d}-{'x' * 40}" for i in range(1000)]}
            synced = http.post(
                f"/v1/accounts/{account}/devices/tablet/sync", json=junk, headers={"Idempotency-Key": "s"}
            )
            assert synced.status_code == 200 and len(synced.json()["revoked"]) == 1000
            after_sync = _stored_bytes(db)
            resent = http.post(
                f"/v1/accounts/{account}/devices/tablet/sync", json=junk, headers={"Idempotency-Key": "s"}
            )
            assert resent.json() == synced.json() and resent.headers.get("idempotent-replayed") == "true"
            closed = http.post(f"/v1/accounts/{account}/close", headers={"Idempotency-Key": "close-1"})
            assert closed.status_code == 200
            after_close = _stored_bytes(db)

            again = http.post(f"/v1/accounts/{account}/close", headers={"Idempotency-Key": "close-1"})
            assert again.json() == closed.json() and again.headers.get("idempotent-replayed") == "true"

    # A sync that releases nothing writes one small event under its key, never the ids it was sent.
    assert after_sync - before < 4 * 1024, after_sync - before
    # 600 revocations (about 300 bytes each) and the reply (about 6 KB) once: a few hundred KiB.
    assert after_close - after_sync < 400 * 1024, after_close - after_sync
