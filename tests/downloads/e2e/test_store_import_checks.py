"""``downloads store import`` against crafted archives: refused whole, in one line, before the target is opened.

Each archive here passes the digest check (its digest is recomputed): what refuses it is the
check of every line against what every store can hold, made before the target file is opened.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.downloads.e2e.test_api_cli import _downloads
from tests.support.archives import EventLine, changed, read_lines, write_archive
from tests.support.history import MASTER_KEY, archive_of_history


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list[EventLine]]:
    """The lines of a real export: two titles, then three accounts' events (event i is on line i + 2)."""
    path = tmp_path_factory.mktemp("export") / "sound.jsonl.gz"
    source, _ = archive_of_history(str(path), 3)
    source.close()
    header, events = read_lines(path)
    assert [e["stream"] for e in events[2:4]] == ["account-acct-00000"] * 2
    assert (events[12]["stream"], events[12]["position"]) == ("account-acct-00001", 1)
    return header, events


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _refused(archive: Path, store: Path, *extra: str) -> str:
    """Import ``archive`` into ``store``; assert it is refused in one line and return that line."""
    done = _downloads(
        "store",
        "import",
        str(archive),
        "--store",
        f"sqlite:///{store}",
        *extra,
        env={"DOWNLOADS_MASTER_KEY": MASTER_KEY},
        timeout=300,
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    progress = ("checking:", "importing:")  # the progress bar's lines on stderr
    lines = [line for line in done.stderr.strip().splitlines() if not line.startswith(progress)]
    assert len(lines) == 1, done.stderr
    return lines[0]


def _twice(events: list[EventLine]) -> list[EventLine]:
    return [*events[:6], events[5], *events[6:]]  # account-acct-00000 position 4 once more, on line 8


CRAFTED = {
    "a position written twice": (_twice, "line 8: ", "position 4 again"),
    "a gap": (lambda ev: [*ev[:6], *ev[7:]], "line 8: ", "jumps from position 4 to 6"),
    "a stream without its first event": (lambda ev: [*ev[:12], *ev[13:]], "line 14: ", "starts at position 2"),
    "a position of 2**63": (
        lambda ev: changed(ev, 26, lambda e: {**e, "position": 2**63}),
        "line 28: ",
        "position 9223372036854775808 is out of range",
    ),
    "a schema version of 10**30": (
        lambda ev: changed(ev, 10, lambda e: {**e, "schema_version": 10**30}),
        "line 12: ",
        "schema_version",
    ),
    "a time past what stores encode": (
        lambda ev: changed(ev, 26, lambda e: {**e, "recorded_at": "9999-12-31T23:59:59.999999-14:00"}),
        "line 28: ",
        "recorded_at",
    ),
    "a time without a time zone": (
        lambda ev: changed(ev, 3, lambda e: {**e, "recorded_at": "2026-12-01T12:00:00"}),
        "line 5: ",
        "time zone",
    ),
    "a boolean position": (lambda ev: changed(ev, 0, lambda e: {**e, "position": True}), "line 2: ", "position"),
}


@pytest.mark.parametrize("kind", list(CRAFTED))
def test_a_crafted_archive_is_refused_naming_its_line_and_no_store_file_is_made(
    exported: tuple[dict[str, Any], list[EventLine]], tmp_path: Path, kind: str
) -> None:
    header, events = exported
    craft, line, what = CRAFTED[kind]
    archive = tmp_path / "crafted.jsonl.gz"
    write_archive(archive, header, craft(events))
    target = tmp_path / "target"
    target.mkdir()
    said = _refused(archive, target / "restored.db")
    assert said.startswith(f"ArchiveError: {line}"), said
    assert what in said, said
    assert _files(target) == {}  # no store file, no read-model file, no journal


def test_a_refused_archive_leaves_an_existing_store_and_another_application_s_file_byte_for_byte(
    exported: tuple[dict[str, Any], list[EventLine]], tmp_path: Path
) -> None:
    header, events = exported
    crafted = tmp_path / "crafted.jsonl.gz"
    write_archive(crafted, header, _twice(events))
    junk = tmp_path / "junk.jsonl.gz"
    junk.write_bytes(os.urandom(4096))

    stores = tmp_path / "stores"
    stores.mkdir()
    empty = stores / "empty.db"
    made = _downloads("store", "init", "--store", f"sqlite:///{empty}")
    assert made.returncode == 0, made.stderr
    other = stores / "other-app.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total INTEGER)")
        db.execute("INSERT INTO invoices VALUES (1, 100)")
    db.close()
    before = _files(stores)

    for archive in (crafted, junk):
        for store in (empty, other):
            said = _refused(archive, store)
            assert said.startswith("ArchiveError: line "), said
            assert _files(stores) == before, (archive.name, store.name)


def test_a_sound_archive_is_not_imported_into_another_application_s_sqlite_file(
    exported: tuple[dict[str, Any], list[EventLine]], tmp_path: Path
) -> None:
    header, events = exported
    archive = tmp_path / "sound.jsonl.gz"
    write_archive(archive, header, events)
    other = tmp_path / "other-app.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total INTEGER)")
    db.close()
    before = other.read_bytes()
    said = _refused(archive, other)
    assert "not an eskit store" in said and "invoices" in said, said
    assert other.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other-app.db", "sound.jsonl.gz"]


def test_decode_refuses_an_event_this_application_cannot_read_and_without_it_the_import_goes_through(
    exported: tuple[dict[str, Any], list[EventLine]], tmp_path: Path
) -> None:
    header, events = exported
    archive = tmp_path / "unknown.jsonl.gz"
    write_archive(archive, header, changed(events, 9, lambda e: {**e, "type": "LicenseMisplaced"}))
    said = _refused(archive, tmp_path / "checked.db", "--decode")
    assert said.startswith("ArchiveError: line 11: "), said
    assert "LicenseMisplaced" in said, said
    assert not (tmp_path / "checked.db").exists()

    done = _downloads("store", "import", str(archive), "--store", f"sqlite:///{tmp_path / 'plain.db'}")
    assert done.returncode == 0, done.stderr
    assert "imported 5 streams" in done.stdout


def _huge_line_archive(path: Path, megabytes: int) -> None:
    """An archive whose one event line holds ``megabytes`` MB of payload (a few hundred KB compressed)."""
    digest = hashlib.sha256()
    with gzip.open(path, "wb", compresslevel=6) as out:

        def put(data: bytes) -> None:
            digest.update(data)
            out.write(data)

        put(b'{"format":"eskit-archive","version":1,"created_at":"2026-12-01T00:00:00Z","source":"sqlite",')
        put(b'"consistency":"feed-cut","feed_cut":1}\n')
        put(b'{"stream":"account-a","position":1,"event_id":"9f1f3c3e-5d0e-4f4b-9a51-0c1f3e2b7a10",')
        put(b'"type":"AccountOpened","schema_version":1,"recorded_at":"2026-12-01T00:00:00Z","metadata":"{}","data":"')
        chunk = b"a" * (1 << 20)
        for _ in range(megabytes):
            put(chunk)
        put(b'"}\n')
        out.write(b'{"end":true,"streams":1,"events":1,"sha256":"' + digest.hexdigest().encode() + b'"}\n')


@pytest.mark.slow
def test_an_archive_with_a_300_mb_line_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    archive = tmp_path / "huge.jsonl.gz"
    _huge_line_archive(archive, 300)
    assert archive.stat().st_size < 2_000_000
    store = tmp_path / "target" / "restored.db"
    store.parent.mkdir()
    script = Path(sys.executable).parent / "downloads"
    # A fresh interpreter that runs the command and reports the largest resident size of its children.
    measure = (
        "import resource, subprocess, sys\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stderr.write(done.stderr)\n"
        "print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOWNLOADS_")}
    ran = subprocess.run(
        [sys.executable, "-c", measure, str(script), "store", "import", str(archive), "--store", f"sqlite:///{store}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    status, peak_kib = (int(n) for n in ran.stdout.split())
    assert status == 1, ran.stderr
    assert ran.stderr.strip().splitlines()[-1].startswith("ArchiveError: line 2: "), ran.stderr
    assert "longer than" in ran.stderr and "Traceback" not in ran.stderr, ran.stderr
    assert peak_kib < 200 * 1024, f"the import peaked at {peak_kib / 1024:.0f} MB"
    assert list(store.parent.iterdir()) == []
