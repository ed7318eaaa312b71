"""The data tools on stores the service built: export and import, and verify finding damage done on purpose."""

from __future__ import annotations

import dataclasses
import gzip
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from downloads.application import DownloadsService
from downloads.bootstrap import ENCRYPTION, Runtime, bootstrap, open_read_side
from downloads.domain import ACCOUNT_EVENTS, TITLE_EVENTS
from downloads.domain.events import DeviceRegistered, LicenseIssued
from downloads.entrypoints.cli import main
from downloads.settings import Settings
from eskit import EventCodec, EventMetadata, Upcasters
from eskit.stores.sqlite import read_models_path, sqlite_path
from tests.support.history import MASTER_KEY, Built, all_events, archive_of_history, build_history


def wired(url: str, *, codec: EventCodec | None = None, master_key: str | None = None) -> Runtime:
    """The service on ``url`` (with ``master_key``, else the development key kept beside the store)."""
    return bootstrap(Settings(store=url, snapshot_every=4, master_key=master_key), codec=codec)


@dataclasses.dataclass(frozen=True)
class DeviceRegisteredV2(DeviceRegistered):
    """Code that moved on after the store was written: ``DeviceRegistered`` at schema 2 has a new field."""

    version = 2
    registered_from: str = "app"


def newer_codec() -> EventCodec:
    """Today's codec with DeviceRegistered at v2 and the upcaster from the v1 events the store holds."""
    upcasters = Upcasters()
    upcasters.register("DeviceRegistered", 1, lambda data: {**data, "registered_from": "before-v2"})
    classes = [DeviceRegisteredV2 if cls is DeviceRegistered else cls for cls in (*ACCOUNT_EVENTS, *TITLE_EVENTS)]
    return EventCodec(classes, upcasters=upcasters, encryption=ENCRYPTION)


def answers(service: DownloadsService, accounts: list[str]) -> list[Any]:
    """Every read the service gives about these accounts."""
    return [(service.get_account(a), service.list_licenses(a)) for a in accounts]


def assert_replays(service: DownloadsService, built: Built) -> None:
    """Every command sent under a key gets its first answer again, and writes nothing."""
    before = {a: service.accounts.events.version(service.accounts.stream_id(a)) for a in built.accounts}
    for command, key, body, created, wrote in built.keyed:
        reply = service.handle(command, idempotency_key=key)
        assert reply.replayed == wrote, (command, key)
        assert (reply.body, reply.created) == (body, created), (command, key)
    after = {a: service.accounts.events.version(service.accounts.stream_id(a)) for a in built.accounts}
    assert after == before


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A store of 2,000 accounts built by the service (with snapshots and keyed commands), and its export."""
    archive = str(tmp_path_factory.mktemp("export") / "downloads.jsonl.gz")
    source, built = archive_of_history(archive, 2000)
    yield source, built, archive
    source.close()


@pytest.mark.slow
def test_an_import_into_sqlite_holds_every_event_and_answers_and_replays_as_before(
    exported: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, built, archive = exported
    url = f"sqlite:///{tmp_path / 'imported.db'}"
    assert main(["store", "import", archive, "--store", url]) == 0
    assert "imported 2,002 streams" in capsys.readouterr().out  # 2,000 accounts and two titles
    # The imported store is read by code one schema later: its v1 events go through the upcaster.
    target = wired(url, codec=newer_codec(), master_key=MASTER_KEY)  # the key the archive's keys are wrapped with
    try:
        assert all_events(target.stores.events) == all_events(source.stores.events)
        registered = [r.event for r in target.service.accounts.history(built.accounts[7])[1:3]]
        assert [type(e) for e in registered] == [DeviceRegisteredV2, DeviceRegisteredV2]
        assert {e.registered_from for e in registered} == {"before-v2"}  # type: ignore[attr-defined]
        assert answers(target.service, built.accounts) == answers(source.service, built.accounts)
        assert_replays(target.service, built)
    finally:
        target.close()


def test_import_into_a_store_that_holds_events_is_refused_and_writes_nothing(
    exported: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, archive = exported
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    runtime = wired(url)
    build_history(runtime.service, 2, prefix="mine")
    before = all_events(runtime.stores.events)
    assert main(["store", "import", archive, "--store", url]) == 1
    assert "NotEmpty: the target store is not empty: it holds 'account-mine-00000'" in capsys.readouterr().err
    assert all_events(runtime.stores.events) == before
    runtime.close()


def test_a_truncated_archive_is_refused_by_the_command_and_writes_nothing(
    exported: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, archive = exported
    cut = tmp_path / "cut.jsonl.gz"
    with gzip.open(archive, "rb") as whole:
        data = whole.read()
    with gzip.open(cut, "wb") as half:
        half.write(data[: len(data) // 2])
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    assert main(["store", "import", str(cut), "--store", url]) == 1
    assert "ArchiveError" in capsys.readouterr().err
    runtime = wired(url)
    assert runtime.stores.events.stream_ids() == []
    runtime.close()


# -- verify ----------------------------------------------------------------------------


@pytest.fixture
def sound_store(tmp_path: Path) -> str:
    """A SQLite store of 30 accounts with snapshots and read models caught up."""
    url = f"sqlite:///{tmp_path / 'downloads.db'}"
    runtime = wired(url)
    build_history(runtime.service, 30)
    read_side = open_read_side(runtime)
    assert read_side is not None
    while read_side.step():
        pass
    read_side.close()
    runtime.close()
    return url


def verify(url: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    status = main(["store", "verify", "--store", url])
    captured = capsys.readouterr()
    return status, captured.out + captured.err.splitlines()[-1] if status > 1 or not captured.out else captured.out


def test_verify_passes_a_sound_store(sound_store: str, capsys: pytest.CaptureFixture[str]) -> None:
    status, out = verify(sound_store, capsys)
    assert status == 0, out
    assert "checked 32 streams" in out and "no problems found" in out
    assert " 0 snapshots" not in out and " 0 read-model rows" not in out


def _db(url: str) -> sqlite3.Connection:
    return sqlite3.connect(url[len("sqlite:///") :], isolation_level=None)


def _gap(url: str) -> None:
    with _db(url) as db:
        db.execute("DELETE FROM events WHERE stream_id = 'account-acct-00003' AND position = 4")


def _corrupt_payload(url: str) -> None:
    with _db(url) as db:
        db.execute("UPDATE events SET data = x'7b22' WHERE stream_id = 'account-acct-00004' AND position = 2")


def _snapshot_differs(url: str) -> None:
    """The snapshot at version 4 replaced by another state, sealed with the member's key as a snapshot is."""
    runtime = wired(url)
    account = runtime.service.accounts.load("acct-00001", version=4)
    assert account.plan != "basic"
    account.plan = "basic"
    assert runtime.service.accounts.take_snapshot(account)
    runtime.close()


def _limit_exceeded(url: str) -> None:
    """A license on a basic account's second device, written around the service (its plan allows one)."""
    runtime = wired(url)
    account = runtime.service.accounts.load("acct-00003")
    assert account.plan == "basic" and account.devices_with_downloads() == {"acct-00003-d1"}
    at = account.last_at
    assert at is not None
    account.trigger(LicenseIssued("forged", "acct-00003-d2", "t-open", at, at, True))
    runtime.service.accounts.save(account, EventMetadata(recorded_at=at))
    runtime.close()


def _orphan_row(url: str) -> None:
    path = read_models_path(sqlite_path(url))
    with sqlite3.connect(path, isolation_level=None) as db:
        (table,) = db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'rm_licenses_by_title_v%_licenses'"
        ).fetchone()
        db.execute(f"INSERT INTO {table} VALUES ('t-open', 'acct-00002', 'ghost', 'acct-00002-d1', 'active', 0, 0)")


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_gap, "gap: account-acct-00003@5: positions jump from 3 to 5"),
        (_corrupt_payload, "undecodable: account-acct-00004@2"),
        (_snapshot_differs, "snapshot: account-acct-00001@4: differs from the fold of its events (in plan)"),
        (_limit_exceeded, "rule: account-acct-00003@10: license 'forged' issued: DEVICE_LIMIT_REACHED"),
        (_orphan_row, "read_model: account-acct-00002: read model licenses_by_title: license 'ghost' is not in"),
    ],
    ids=["gap", "corrupt payload", "snapshot differs", "limit exceeded", "orphan read-model row"],
)
def test_verify_reports_each_damage_precisely_and_fails(
    sound_store: str, capsys: pytest.CaptureFixture[str], damage: Any, expected: str
) -> None:
    damage(sound_store)
    status, out = verify(sound_store, capsys)
    assert status == 1, out
    assert expected in out, out
    problems = [line for line in out.splitlines() if line.startswith("  ")]
    assert len(problems) == 1, out  # that damage, and nothing else made up
