"""SQLite snapshots: a lookup reads what it finds, never its neighbours' states; older files are migrated."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest

from eskit import Snapshot, open_stores
from eskit.stores.sqlite import SQLiteSnapshotStore

T = TypeVar("T")

BIG = 1_000_000  # bytes of state in each big snapshot: an account with a long history
#: a few pages (4 KiB each), with room for whatever else the test process reads meanwhile
FEW_PAGES = 200_000
AT = datetime(2030, 1, 1, tzinfo=UTC)

#: the snapshots table as eskit made it before (state stored inside the primary key's b-tree)
OLD_SNAPSHOTS = """CREATE TABLE snapshots (
    stream_id TEXT NOT NULL, version INTEGER NOT NULL, type_name TEXT NOT NULL, schema_version INTEGER NOT NULL,
    state BLOB NOT NULL, recorded_at INTEGER NOT NULL, PRIMARY KEY (stream_id, version)
) WITHOUT ROWID"""


def snapshot(stream_id: str, version: int, size: int) -> Snapshot:
    return Snapshot(stream_id, version, "Account", 1, bytes([version % 251]) * size, AT)


def bytes_read(action: Callable[[], T]) -> tuple[T, int]:
    """What ``action`` returns, and how many bytes this process read from files while it ran (Linux)."""
    io = Path("/proc/self/io")
    if not io.exists():
        pytest.skip("needs /proc/self/io to count bytes read")

    def rchar() -> int:
        return int(next(line for line in io.read_text().splitlines() if line.startswith("rchar:")).split()[1])

    before = rchar()
    result = action()
    return result, rchar() - before


def big_neighbours(path: Path) -> None:
    """Accounts with big snapshots on both sides, in key order, of the streams the tests look up."""
    stores = open_stores(f"sqlite:///{path}")
    try:
        assert stores.snapshots is not None
        for stream in ("account-a", "account-b", "title-a", "zz-account"):
            for version in (100, 200, 300):
                stores.snapshots.save(snapshot(stream, version, BIG))
        stores.snapshots.save(snapshot("title-small", 3, 100))
    finally:
        stores.close()


def lookups(path: Path) -> dict[str, tuple[int, int | None]]:
    """Bytes read by each lookup, each on a fresh connection (an empty page cache), and the version found."""
    found: dict[str, tuple[int, int | None]] = {}
    for name, stream, lte in (
        ("absent", "title-missing", None),
        ("small", "title-small", None),
        ("older", "account-b", 250),
        ("versions", "account-b", -1),
    ):
        store = SQLiteSnapshotStore(path)
        try:
            store.db.get()  # opened, schema checked: only the lookup is counted
            if lte == -1:
                versions, read = bytes_read(lambda: store.versions(stream))  # noqa: B023
                found[name] = (read, len(versions))
            else:
                loaded, read = bytes_read(lambda: store.load(stream, lte=lte))  # noqa: B023
                found[name] = (read, loaded.version if loaded else None)
        finally:
            store.close()
    return found


def test_a_snapshot_lookup_reads_a_few_pages_whatever_the_size_of_the_neighbouring_snapshots(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    big_neighbours(path)

    found = lookups(path)

    assert found["absent"][1] is None
    assert found["small"][1] == 3
    assert found["older"][1] == 200
    assert found["versions"][1] == 3
    # A few index and table pages each, plus the one state read in full when one is found.
    assert found["absent"][0] < FEW_PAGES, found
    assert found["small"][0] < FEW_PAGES, found
    assert found["versions"][0] < FEW_PAGES, found
    assert found["older"][0] < BIG + FEW_PAGES, found


def old_file(path: Path) -> list[tuple[str, int, int]]:
    """A store file as the previous schema made it, with big and small snapshots; returns what it holds."""
    big_neighbours(path)  # today's tables and events table, then the snapshots table as it was
    with sqlite3.connect(path) as conn:
        rows = conn.execute(
            "SELECT stream_id, version, type_name, schema_version, state, recorded_at FROM snapshots"
        ).fetchall()
        conn.execute("DROP TABLE snapshots")
        conn.execute(OLD_SNAPSHOTS)
        conn.executemany("INSERT INTO snapshots VALUES (?, ?, ?, ?, ?, ?)", rows)
        held = [(r[0], r[1], len(r[4])) for r in rows]
    conn.close()
    return sorted(held)


def absent_lookup_without_migrating(path: Path) -> int:
    """Bytes read by the store's lookup of an absent stream, on a plain connection (the file left as it is)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the schema read before counting
        row, read = bytes_read(
            lambda: conn.execute(
                "SELECT version, state FROM snapshots WHERE stream_id = ? AND version <= ?"
                " ORDER BY version DESC LIMIT 1",
                ("title-missing", 2**62),
            ).fetchone()
        )
    finally:
        conn.close()
    assert row is None
    return read


def stored(path: Path) -> list[tuple[str, int, int]]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT stream_id, version, length(state) FROM snapshots").fetchall()
    conn.close()
    return sorted(rows)


def test_a_file_made_with_the_old_snapshots_table_is_migrated_keeping_every_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    held = old_file(path)
    assert absent_lookup_without_migrating(path) > BIG  # the cost the migration removes, on the old table

    stores = open_stores(f"sqlite:///{path}")
    try:
        assert stores.snapshots is not None
        newest = stores.snapshots.load("account-a")
        assert newest is not None and (newest.version, newest.state) == (300, bytes([300 % 251]) * BIG)
        stores.snapshots.save(snapshot("account-a", 400, 10))
        stores.snapshots.save(snapshot("account-a", 400, 20))  # saving a version again replaces it
        stores.snapshots.delete("account-a", [100])
    finally:
        stores.close()

    assert stored(path) == sorted([row for row in held if row[:2] != ("account-a", 100)] + [("account-a", 400, 20)])
    found = lookups(path)
    assert found["absent"] == (found["absent"][0], None) and found["absent"][0] < FEW_PAGES, found
    assert found["older"][1] == 200


def test_a_migrated_file_opens_again_without_migrating_again(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    held = old_file(path)
    open_stores(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        schema = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'snapshots'").fetchone()[0]
    conn.close()

    open_stores(f"sqlite:///{path}").close()

    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT sql FROM sqlite_master WHERE name = 'snapshots'").fetchone()[0] == schema
    conn.close()
    assert stored(path) == held
