"""Export, import and copy between stores: every event at its position, with its id, time and bytes."""

from __future__ import annotations

import dataclasses
import gzip
import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from eskit import (
    DomainEvent,
    EskitError,
    EventCodec,
    EventMetadata,
    Stores,
    Upcasters,
    open_stores,
)
from eskit.ports import EventStore
from eskit.transfer import (
    ArchiveError,
    ArchiveReader,
    CopyState,
    Diverged,
    NotEmpty,
    copy_store,
    export_store,
    import_store,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclasses.dataclass(frozen=True)
class Renamed(DomainEvent):
    """Version 2 calls the field ``title``; version 1 stored it as ``name``."""

    type_name = "Renamed"
    version = 2
    title: str


def _codec() -> EventCodec:
    upcasters = Upcasters()
    upcasters.register("Renamed", 1, lambda data: {"title": data.pop("name")})
    return EventCodec([Renamed], upcasters=upcasters)


def _fill(store: EventStore, streams: int = 40) -> None:
    """Streams of 1 to 7 events: some written as schema v1 (before the rename), some as v2, odd bytes too."""
    codec = _codec()
    for s in range(streams):
        stream = f"s-{s:03d}"
        for p in range(1 + s % 7):
            at = T0 + timedelta(seconds=s * 10 + p, microseconds=123457 * p)
            if p % 2 == 0:
                new = codec.encode(Renamed(f"t{s}.{p} ✓"), EventMetadata(recorded_at=at, request_id=f"r{s}.{p}"))
            else:  # an event from before the rename: schema 1, field ``name``
                new = dataclasses.replace(
                    codec.encode(Renamed("x"), EventMetadata(recorded_at=at, extra={"reply": {"n": p}})),
                    schema_version=1,
                    data=orjson.dumps({"name": f"old {s}.{p}"}),
                )
            store.append(stream, [new], expected_version=p)
    # metadata that is not UTF-8 still travels byte for byte
    store.append(
        "binary",
        [dataclasses.replace(codec.encode(Renamed("b"), EventMetadata(recorded_at=T0)), metadata=b"\xff\x00\xfe")],
        expected_version=0,
    )


def _everything(store: EventStore) -> list[Any]:
    found = []
    after = None
    while page := store.stream_ids(after=after, limit=7):
        for stream in page:
            found.extend(store.read(stream))
        after = page[-1]
    return sorted(found, key=lambda e: (e.stream_id, e.position))


@pytest.fixture
def sqlite(tmp_path: Path) -> Any:
    opened: list[Stores] = []

    def make(name: str) -> Stores:
        stores = open_stores(f"sqlite:///{tmp_path / name}")
        opened.append(stores)
        return stores

    yield make
    for stores in opened:
        stores.close()


def test_an_export_imported_elsewhere_holds_every_event_byte_for_byte(tmp_path: Path, sqlite: Any) -> None:
    source = open_stores("memory://")
    _fill(source.events)
    archive = str(tmp_path / "dump.jsonl.gz")
    summary = export_store(source, archive)
    assert (summary.streams, summary.events) == (41, sum(1 + s % 7 for s in range(40)) + 1)
    target = sqlite("target.db")
    result = import_store(archive, target.events)
    assert result.written == summary.events
    assert _everything(target.events) == _everything(source.events)  # ids, positions, times, bytes
    # old-schema events still decode through today's upcasters after the move
    codec = _codec()
    decoded = [codec.decode(e)[0] for e in target.events.read("s-006")]
    assert decoded[1] == Renamed("old 6.1")
    assert ArchiveReader(archive).header.consistency == "feed-cut"


def test_an_export_while_the_store_is_written_is_the_store_at_one_moment(tmp_path: Path, sqlite: Any) -> None:
    source = sqlite("busy.db")
    _fill(source.events, streams=10)
    stop = threading.Event()
    codec = _codec()

    def writer() -> None:
        n = 0
        while not stop.is_set() and n < 3000:
            stream = f"hot-{n % 5}"
            event = codec.encode(Renamed(str(n)), EventMetadata(recorded_at=T0))
            source.events.append(stream, [event], expected_version=source.events.version(stream))
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        archive = str(tmp_path / "busy.jsonl.gz")
        summary = export_store(source, archive)
    finally:
        stop.set()
        thread.join(timeout=60)
    cut = ArchiveReader(archive).header.feed_cut
    assert cut is not None and summary.events == cut
    # exactly the events with feed sequence <= cut, which per stream is a prefix
    assert source.feed is not None
    expected = {(f.event.stream_id, f.event.position) for f in source.feed.read(after=0, limit=cut)}
    exported = {(sid, pos) for sid, pos, _ in ArchiveReader(archive).events()}
    assert exported == expected


def test_import_refuses_a_store_that_holds_events_and_writes_nothing(tmp_path: Path, sqlite: Any) -> None:
    source = open_stores("memory://")
    _fill(source.events, streams=3)
    archive = str(tmp_path / "d.jsonl.gz")
    export_store(source, archive)
    target = sqlite("t.db")
    target.events.append("already-here", [_one()], expected_version=0)
    with pytest.raises(NotEmpty, match="already-here"):
        import_store(archive, target.events)
    assert target.events.stream_ids() == ["already-here"]


def _one() -> Any:
    return _codec().encode(Renamed("x"), EventMetadata(recorded_at=T0))


def _rewrite(archive: str, change: Any) -> None:
    with gzip.open(archive, "rb") as f:
        lines = f.read().splitlines(keepends=True)
    with gzip.open(archive, "wb") as f:
        f.write(b"".join(change(lines)))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda lines: lines[:-1], "no trailer"),
        (lambda lines: [*lines[:-3], lines[-3][:20]], "truncated"),
        (lambda lines: [lines[0], lines[1].replace(b"s-000", b"s-00X"), *lines[2:]], "checksum"),
        (lambda lines: [lines[0], *lines[2:]], "checksum"),
        (lambda lines: [lines[0].replace(b'"version":2', b'"version":9'), *lines[1:]], "version 9"),
    ],
    ids=["trailer cut off", "line cut short", "altered payload", "line removed", "newer format"],
)
def test_a_damaged_archive_is_refused_before_anything_is_written(
    tmp_path: Path, sqlite: Any, damage: Any, message: str
) -> None:
    source = open_stores("memory://")
    _fill(source.events, streams=5)
    archive = str(tmp_path / "d.jsonl.gz")
    export_store(source, archive)
    _rewrite(archive, damage)
    target = sqlite("t.db")
    with pytest.raises(ArchiveError, match=message):
        import_store(archive, target.events)
    assert target.events.stream_ids() == []


def test_a_file_that_is_not_gzip_is_refused_clearly(tmp_path: Path, sqlite: Any) -> None:
    path = tmp_path / "plain.txt"
    path.write_text("hello\n")
    with pytest.raises(ArchiveError, match="gzip"):
        import_store(str(path), sqlite("t.db").events)
    with pytest.raises(ArchiveError, match="no archive"):
        import_store(str(tmp_path / "missing.gz"), sqlite("u.db").events)


def test_an_interrupted_export_leaves_no_file(tmp_path: Path) -> None:
    source = open_stores("memory://")
    _fill(source.events, streams=5)
    archive = tmp_path / "d.jsonl.gz"

    class Stop(Exception):
        pass

    def progress(label: str, **_: Any) -> Any:
        import contextlib

        @contextlib.contextmanager
        def task() -> Any:
            def advance(n: int) -> None:
                raise Stop

            yield advance

        return task()

    with pytest.raises(Stop):
        export_store(source, str(archive), progress=progress)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_import_resumes_without_writing_an_event_twice(tmp_path: Path, sqlite: Any) -> None:
    source = open_stores("memory://")
    _fill(source.events)
    archive = str(tmp_path / "d.jsonl.gz")
    export_store(source, archive)
    target = sqlite("t.db")
    # a first import that got through part of the file, as a Ctrl-C would leave it
    for n, (stream, position, event) in enumerate(ArchiveReader(archive).events()):
        if n == 60:
            break
        target.events.append(stream, [event], expected_version=position - 1)
    with pytest.raises(NotEmpty):
        import_store(archive, target.events)
    result = import_store(archive, target.events, resume=True)
    assert (result.written, result.skipped) == (result.summary.events - 60, 60)
    assert _everything(target.events) == _everything(source.events)


def _interrupting(label_to_stop: str, after_calls: int) -> Any:
    """A progress port that raises KeyboardInterrupt (a Ctrl-C) at the ``after_calls``-th advance of a task."""
    import contextlib

    def progress(label: str, **_: Any) -> Any:
        @contextlib.contextmanager
        def task() -> Any:
            calls = 0

            def advance(n: int) -> None:
                nonlocal calls
                calls += 1
                if label == label_to_stop and calls == after_calls:
                    raise KeyboardInterrupt

            yield advance

        return task()

    return progress


def test_an_import_into_sqlite_interrupted_part_way_leaves_the_store_empty(tmp_path: Path, sqlite: Any) -> None:
    source = open_stores("memory://")
    _fill(source.events, streams=1000)
    archive = str(tmp_path / "d.jsonl.gz")
    summary = export_store(source, archive)
    assert summary.events > 3000  # more than one batch of the loader is written before the interruption
    target = sqlite("t.db")
    with pytest.raises(KeyboardInterrupt):
        import_store(archive, target.events, progress=_interrupting("importing", 2))
    assert target.events.stream_ids() == []  # all or nothing: no part of the archive stays
    result = import_store(archive, target.events)  # so the same command again finishes it, without --resume
    assert (result.written, result.skipped) == (summary.events, 0)
    assert _everything(target.events) == _everything(source.events)


def _state(tmp_path: Path, source: Stores, target: Stores) -> CopyState:
    return CopyState.open(str(tmp_path / "copy.json"), source=source.url, target=target.url)


def test_a_copy_stopped_halfway_resumes_and_catches_up_with_new_writes(tmp_path: Path, sqlite: Any) -> None:
    source, target = sqlite("source.db"), sqlite("target.db")
    _fill(source.events, streams=1000)
    pages = iter(range(2))
    first = copy_store(source, target.events, _state(tmp_path, source, target), stop=lambda: next(pages, None) is None)
    assert 0 < first.written < len(_everything(source.events))
    # the source keeps accepting writes, to old streams and new ones
    source.events.append("s-000", [_one()], expected_version=1)
    source.events.append("new-stream", [_one(), _one()], expected_version=0)
    # and the state file was lost for part of the progress: the copy is one page behind what it wrote
    state = _state(tmp_path, source, target)
    state.feed_after -= 500
    second = copy_store(source, target.events, state)
    assert second.skipped == 500
    assert _everything(target.events) == _everything(source.events)
    again = copy_store(source, target.events, _state(tmp_path, source, target))
    assert (again.written, again.skipped) == (0, 0)


def test_a_copy_into_a_store_that_holds_other_events_stops(tmp_path: Path, sqlite: Any) -> None:
    source, target = sqlite("source.db"), sqlite("target.db")
    _fill(source.events, streams=5)
    target.events.append("s-002", [_one()], expected_version=0)
    with pytest.raises(NotEmpty, match="s-002"):
        copy_store(source, target.events, _state(tmp_path, source, target))
    state = _state(tmp_path, source, target)
    state.feed_after = 1  # as if resuming: the conflicting stream is found out by event id
    with pytest.raises(Diverged, match="s-002"):
        copy_store(source, target.events, state)


def test_a_copy_state_of_another_copy_is_refused(tmp_path: Path, sqlite: Any) -> None:
    source, target, other = sqlite("a.db"), sqlite("b.db"), sqlite("c.db")
    _fill(source.events, streams=3)
    copy_store(source, target.events, _state(tmp_path, source, target))
    with pytest.raises(Exception, match="belongs to a copy"):
        _state(tmp_path, source, other)


def test_a_copy_from_a_store_without_a_feed_walks_its_streams_and_resumes(tmp_path: Path, sqlite: Any) -> None:
    full = sqlite("source.db")
    _fill(full.events, streams=60)
    source = Stores(full.url, full.events, full.snapshots, None)  # as a store whose feed is sharded would be
    target = sqlite("target.db")
    calls = iter(range(25))
    first = copy_store(source, target.events, _state(tmp_path, source, target), stop=lambda: next(calls, None) is None)
    assert first.mode == "walk" and 0 < first.position < 61
    full.events.append("s-001", [_one()], expected_version=2)  # a stream already copied grows
    copy_store(source, target.events, _state(tmp_path, source, target))  # finishes the walk
    copy_store(source, target.events, _state(tmp_path, source, target))  # a second walk catches up
    assert _everything(target.events) == _everything(full.events)


def test_appends_racing_a_load_are_never_overwritten(sqlite: Any) -> None:
    from eskit.transfer import Loader

    target = sqlite("t.db")
    loader = Loader(target.events)
    ids = [uuid.uuid4() for _ in range(3)]
    events = [dataclasses.replace(_one(), event_id=i) for i in ids]
    target.events.append("x", [_one()], expected_version=0)  # someone else wrote position 1
    loader.add("x", 1, events[0])
    with pytest.raises(Diverged):
        loader.flush()
    assert target.events.version("x") == 1


def test_a_store_without_a_single_feed_is_exported_stream_by_stream(tmp_path: Path, sqlite: Any) -> None:
    full = sqlite("source.db")
    _fill(full.events, streams=70)
    source = Stores(full.url, full.events, full.snapshots, None)
    archive = str(tmp_path / "d.jsonl.gz")
    summary = export_store(source, archive)
    header = ArchiveReader(archive).header
    assert (header.consistency, header.feed_cut) == ("per-stream", None)
    target = sqlite("target.db")
    import_store(archive, target.events)
    assert summary.streams == 71
    assert _everything(target.events) == _everything(full.events)


def _feed_order(stores: Stores) -> list[tuple[str, int]]:
    assert stores.feed is not None
    return [(f.event.stream_id, f.event.position) for f in stores.feed.read(after=0, limit=100_000)]


def test_an_import_and_a_copy_into_sqlite_keep_the_source_s_commit_order_across_streams(
    tmp_path: Path, sqlite: Any
) -> None:
    # Found in review: the loader grouped each batch by stream, so A1 T1 A2 came back as A1 A2 T1, and a
    # projection rebuilt on the restored store met an account's event before the title event it needs.
    source = open_stores("memory://")
    for n in range(300):
        for stream in ("account-a", f"title-{n % 7}", "account-b"):
            source.events.append(stream, [_one()], expected_version=source.events.version(stream))
    archive = str(tmp_path / "d.jsonl.gz")
    export_store(source, archive)
    imported = sqlite("imported.db")
    import_store(archive, imported.events)
    assert _feed_order(imported) == _feed_order(source)
    copied = sqlite("copied.db")
    copy_store(source, copied.events, _state(tmp_path, source, copied))
    assert _feed_order(copied) == _feed_order(source)


def test_a_copy_resumed_into_a_target_that_was_emptied_is_refused(tmp_path: Path, sqlite: Any) -> None:
    # Found in review: the state file said "copied up to N", the target was new and empty, and the copy
    # carried on from N, leaving out every stream written before.
    source = sqlite("source.db")
    _fill(source.events, streams=20)
    target = sqlite("target.db")
    state = _state(tmp_path, source, target)
    copy_store(source, target.events, state)
    target.close()
    for leftover in tmp_path.glob("target.db*"):
        leftover.unlink()
    emptied = open_stores(target.url)
    try:
        with pytest.raises(EskitError, match="does not hold the last event"):
            copy_store(source, emptied.events, _state(tmp_path, source, emptied))
        assert emptied.events.stream_ids() == []
    finally:
        emptied.close()
