"""Store URLs: one string picks the backend; bad ones fail at start with a clear message."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from eskit import InterfaceError, NewEvent, StoreUnavailable, open_stores
from eskit.stores.cassandra.settings import CassandraSettings
from eskit.stores.memory import InMemoryEventStore, InMemorySnapshotStore
from eskit.stores.sqlite import SQLiteEventStore, SQLiteSnapshotStore, sqlite_path


def event(n: int) -> NewEvent:
    return NewEvent("test.Happened", 1, b'{"n":%d}' % n, b"{}", datetime(2026, 1, 1, tzinfo=UTC))


def test_a_memory_url_opens_in_memory_stores() -> None:
    stores = open_stores("memory://")

    assert isinstance(stores.events, InMemoryEventStore)
    assert isinstance(stores.snapshots, InMemorySnapshotStore)
    assert stores.url == "memory://"


def test_each_memory_url_opens_a_store_of_its_own() -> None:
    first, second = open_stores("memory://"), open_stores("memory://")

    first.events.append("s", [event(1)], expected_version=0)

    assert second.events.version("s") == 0


def test_a_sqlite_url_with_three_slashes_is_relative_to_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    stores = open_stores("sqlite:///events.db")
    try:
        assert isinstance(stores.events, SQLiteEventStore)
        assert isinstance(stores.snapshots, SQLiteSnapshotStore)
        stores.events.append("s", [event(1)], expected_version=0)
    finally:
        stores.close()

    assert (tmp_path / "events.db").is_file()


def test_a_sqlite_url_with_four_slashes_is_an_absolute_path(tmp_path: Path) -> None:
    path = tmp_path / "data" / "events.db"
    path.parent.mkdir()

    url = f"sqlite:///{path}"
    assert url.startswith("sqlite:////")

    stores = open_stores(url)
    try:
        stores.events.append("s", [event(1)], expected_version=0)
    finally:
        stores.close()

    reopened = SQLiteEventStore(path)
    try:
        assert [e.data for e in reopened.read("s")] == [b'{"n":1}']
    finally:
        reopened.close()


def test_a_relative_and_an_absolute_url_to_the_same_file_see_the_same_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_stores("sqlite:///events.db")
    absolute = open_stores(f"sqlite:///{tmp_path / 'events.db'}")
    try:
        relative.events.append("s", [event(1)], expected_version=0)
        assert absolute.events.version("s") == 1
    finally:
        relative.close()
        absolute.close()


def test_a_query_string_is_not_part_of_the_sqlite_path() -> None:
    assert sqlite_path("sqlite:///events.db?mode=rwc") == "events.db"
    assert sqlite_path("sqlite:////var/lib/events.db") == "/var/lib/events.db"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://localhost/events", "unknown store URL 'postgresql://localhost/events'"),
        ("events.db", "use memory://, sqlite:///path.db or cassandra://"),
        ("", "unknown store URL"),
        ("sqlite://events.db", "not a SQLite URL"),
        ("sqlite:///", "names no file"),
        ("sqlite:///folder/", "names no file"),
        ("sqlite:///?mode=ro", "names no file"),
    ],
)
def test_a_bad_url_raises_interface_error_saying_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(InterfaceError, match=message):
        open_stores(url)


def test_a_sqlite_file_in_a_missing_folder_raises_store_unavailable_at_open(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-folder" / "events.db"

    with pytest.raises(StoreUnavailable, match="no-such-folder"):
        open_stores(f"sqlite:///{missing}")

    assert not missing.parent.exists()


def test_closed_sqlite_stores_refuse_to_be_used(tmp_path: Path) -> None:
    stores = open_stores(f"sqlite:///{tmp_path / 'events.db'}")
    stores.close()

    with pytest.raises(InterfaceError, match="closed"):
        stores.events.read("s")


@pytest.mark.parametrize(("text", "expected"), [("true", True), ("yes", True), ("1", True), ("false", False)])
def test_a_cassandra_url_sets_its_yes_or_no_options(text: str, expected: bool) -> None:
    url = f"cassandra://127.0.0.1,127.0.0.2:9043/ks?create_schema={text}&single_writer_region={text}"

    settings = CassandraSettings.from_url(url)

    assert (settings.create_schema, settings.single_writer_region) == (expected, expected)
    assert (settings.hosts, settings.port, settings.keyspace) == (("127.0.0.1", "127.0.0.2"), 9043, "ks")


def test_a_cassandra_url_without_options_keeps_the_defaults() -> None:
    settings = CassandraSettings.from_url("cassandra://127.0.0.1/ks")

    assert (settings.create_schema, settings.single_writer_region, settings.bucket_size) == (False, False, 10_000)
    assert (settings.command_timeout, settings.commit_consistency) == (5.0, None)


def test_a_cassandra_url_sets_the_command_timeout_and_the_commit_level() -> None:
    settings = CassandraSettings.from_url("cassandra://h/ks?command_timeout=1.5&commit_consistency=quorum")

    assert (settings.command_timeout, settings.commit_consistency) == (1.5, "QUORUM")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("command_timeout=0", "command_timeout must be more than 0"),
        ("command_timeout=-1", "command_timeout must be more than 0"),
        ("command_timeout=1e9", "at most 600"),
        ("command_timeout=soon", "bad option value"),
        ("commit_consistency=SERIAL", "commit_consistency must be one of"),
    ],
)
def test_a_bad_cassandra_timeout_or_commit_level_is_refused(query: str, message: str) -> None:
    with pytest.raises(InterfaceError, match=message):
        CassandraSettings.from_url(f"cassandra://h/ks?{query}")
