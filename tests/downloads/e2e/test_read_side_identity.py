"""Read models know the store they follow: a store file made anew is never followed from the old one's position.

The read models of ``x.db`` live in ``x.readmodels.db`` beside it. When ``x.db`` is removed and
made again (a restore, a mistake) while the read-model file stays, the read side must not go on
from the old store's position: it rebuilds the read models from the new store's first event.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from downloads.bootstrap import open_read_side
from eskit.stores.sqlite import read_models_path, sqlite_path
from tests.downloads.e2e.test_api_cli import _downloads
from tests.downloads.e2e.test_read_side import eventually
from tests.downloads.integration.test_store_tools import wired
from tests.support.history import build_history
from tests.support.server import expect_error, running_server


def models_path(store: str) -> Path:
    return read_models_path(sqlite_path(store))


def _head(runtime: object) -> int:
    feed = runtime.stores.feed  # type: ignore[attr-defined]
    assert feed is not None
    return int(feed.head())


def _project(store: str, accounts: int, prefix: str) -> int:
    """Build ``accounts`` accounts in ``store``, run its read side to the end; return the feed's head."""
    runtime = wired(store)
    build_history(runtime.service, accounts, prefix=prefix)
    read_side = open_read_side(runtime)
    while read_side.step():
        pass
    head = _head(runtime)
    assert {s.position for s in read_side.status()} == {head}
    read_side.close()
    runtime.close()
    return head


def _remove_store(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)


def _status(store: str) -> dict[str, list[str]]:
    shown = _downloads("projections", "status", "--store", store)
    assert shown.returncode == 0, shown.stderr
    return {line.split()[0]: line.split() for line in shown.stdout.splitlines()[1:]}


def test_a_store_made_anew_beside_old_read_models_is_projected_from_its_first_event(tmp_path: Path) -> None:
    path = tmp_path / "downloads.db"
    store = f"sqlite:///{path}"
    old_head = _project(store, 30, "old")
    models = models_path(store)
    assert models.exists()

    _remove_store(path)
    runtime = wired(store)
    build_history(runtime.service, 1, prefix="new")
    new_head = runtime.stores.feed.head() if runtime.stores.feed else 0
    runtime.close()
    assert 0 < new_head < old_head

    before = _status(store)
    for name, row in before.items():  # never "caught up" at the old store's position
        assert not (row[1] == "caught_up" and int(row[2]) == old_head), (name, row)
        assert row[1] == "failing" and "another store" in " ".join(row), (name, row)

    # A server that runs no read side answers no read from the other store's rows, and says why.
    with (
        running_server(tmp_path, store=store, env={"DOWNLOADS_READ_SIDE": "off"}) as idle,
        idle.client("support") as support,
    ):
        expect_error(support.get("/v1/lookup", params={"device_id": "old-00003-d1"}), 503, "READ_SIDE_UNAVAILABLE")
        statuses = support.get("/v1/projections").json()["projections"]
        assert {(p["status"], p["position"], p["lag_events"]) for p in statuses} == {("failing", 0, new_head)}
        assert all("another store" in p["error"] for p in statuses)
    verified = _downloads("store", "verify", "--store", store)
    assert verified.returncode == 1 and "read_model: read models: these read models were built from another store" in (
        verified.stdout
    ), verified.stdout + verified.stderr

    with running_server(tmp_path, store=store) as server, server.client("support") as support:

        def caught_up() -> list[dict[str, object]] | None:
            found: list[dict[str, object]] = support.get("/v1/projections").json()["projections"]
            return found if all(p["status"] == "caught_up" for p in found) else None

        statuses = eventually(caught_up, "the read models caught up with the new store")
        assert {p["position"] for p in statuses} == {new_head}
        assert {p["error"] for p in statuses} == {None}
        assert support.get("/v1/lookup", params={"device_id": "old-00003-d1"}).json()["accounts"] == []
        assert support.get("/v1/lookup", params={"device_id": "new-00000-d1"}).json()["accounts"] == ["new-00000"]
        assert {r["account_id"] for r in support.get("/v1/titles/t-rare/licenses").json()["licenses"]} == {"new-00000"}


def _forget_identities(store_path: Path, models: Path) -> None:
    """Make both files look as files made before stores had an identity (no identity table)."""
    for file in (store_path, models):
        with sqlite3.connect(file, isolation_level=None) as db:
            for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                if table in ("eskit_store", "eskit_identity"):
                    db.execute(f"DROP TABLE {table}")
        db.close()


def test_read_models_made_before_identities_are_kept_when_within_the_store_and_rebuilt_when_past_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "downloads.db"
    store = f"sqlite:///{path}"
    head = _project(store, 3, "acct")
    models = models_path(store)

    # Within the store: the old read-model file is adopted as it stands (nothing is projected again).
    _forget_identities(path, models)
    runtime = wired(store)
    read_side = open_read_side(runtime)
    assert read_side.step() == 0
    assert {s.position for s in read_side.status()} == {head}
    assert {s.error for s in read_side.status()} == {None}
    read_side.close()
    runtime.close()

    # Past the store: a store made anew (and older than identities) with fewer events; rebuilt from zero.
    _remove_store(path)
    runtime = wired(store)
    build_history(runtime.service, 1, prefix="new")
    runtime.close()
    _forget_identities(path, models)
    runtime = wired(store)
    read_side = open_read_side(runtime)
    while read_side.step():
        pass
    new_head = _head(runtime)
    assert new_head < head
    assert {s.position for s in read_side.status()} == {new_head}
    assert read_side.lookup("device_id", "acct-00001-d1").accounts == []
    assert read_side.lookup("device_id", "new-00000-d1").accounts == ["new-00000"]
    read_side.close()
    runtime.close()


def test_a_store_put_back_from_an_older_copy_of_its_file_is_projected_again_from_its_first_event(
    tmp_path: Path,
) -> None:
    path = tmp_path / "downloads.db"
    store = f"sqlite:///{path}"
    early_head = _project(store, 2, "early")
    backup = tmp_path / "backup.db"
    copied = sqlite3.connect(path)
    copied.execute(f"VACUUM INTO '{backup}'")  # a consistent copy of the file: the same store id
    copied.close()
    late_head = _project(store, 10, "late")
    assert late_head > early_head

    _remove_store(path)
    backup.rename(path)
    runtime = wired(store)
    read_side = open_read_side(runtime)
    assert not read_side.belongs()
    while read_side.step():
        pass
    assert {s.position for s in read_side.status()} == {early_head}
    assert read_side.lookup("device_id", "late-00001-d1").accounts == []
    assert read_side.lookup("device_id", "early-00001-d1").accounts == ["early-00001"]
    read_side.close()
    runtime.close()
