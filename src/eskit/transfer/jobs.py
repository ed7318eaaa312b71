"""Export, import and copy: a store's events moved position-faithfully, streaming.

* :func:`export_store` writes an archive (:mod:`eskit.transfer.archive`). On a
  store with a single-order feed (memory, SQLite) it is a *cut of the feed*:
  every event committed up to the feed's head when the export began, which is
  the whole store as it stood at that moment, however the service writes
  meanwhile. Elsewhere each stream is read whole in turn (*per stream*).
* :func:`import_store` checks an archive whole (every line against what every
  store holds, each stream's positions, the checksum and counts) before it
  writes anything, into an empty store only (or, with ``resume``, into the
  prefix an interrupted import left). Into a store that can (SQLite) it writes
  all or nothing: an import that fails or is interrupted leaves the store empty.
* Export refuses an event an import would refuse (a damaged store's), naming it.
* :func:`copy_store` copies any store into any store. With a source feed it
  follows the feed from a checkpoint kept in a small state file, so an
  interrupted copy resumes where it stood and a copy run again catches up
  with what the source accepted since; without one it walks the streams.
  Either way every write goes to its exact position (:mod:`eskit.transfer.loader`),
  so no event is written twice and none is skipped.

Snapshots are not moved: they are a cache the target rebuilds as commands run.

Streams' keys (:mod:`eskit.privacy`) move with the events, as the store keeps
them: wrapped by the master key, or as the tombstones of erased ones. A load
never puts a key where the target holds a tombstone, and always puts a
tombstone over a key (:meth:`~eskit.privacy.KeyStore.load`), so no export,
import or copy brings back an erased member: an import that is told where
erasures made since the archive was written are recorded
(:func:`carry_erasures`) keeps them too.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from eskit.events import NewEvent, StoredEvent
from eskit.exceptions import DamagedEvent, EskitError
from eskit.ports import EventFeed, EventStore
from eskit.privacy import KeyRecord, KeyStore
from eskit.stores.registry import Stores
from eskit.transfer.archive import ArchiveError, ArchiveHeader, ArchiveReader, ArchiveSummary, ArchiveWriter, Decode
from eskit.transfer.loader import Diverged, Loader
from eskit.transfer.progress import Progress, quiet

__all__ = [
    "CopyResult",
    "CopyState",
    "ImportResult",
    "NotEmpty",
    "carry_erasures",
    "check_archive",
    "copy_store",
    "export_store",
    "import_store",
    "single_feed",
]

_PAGE = 1000
#: streams read at once by an export that walks the streams
_READERS = 16


class NotEmpty(EskitError):
    """The target store holds events already."""


def single_feed(stores: Stores) -> EventFeed | None:
    """The store's feed when it has one commit order (one shard), else None."""
    return stores.feed if stores.feed is not None and stores.feed.shards == 1 else None


def _walk_streams(store: EventStore, *, after: str | None = None) -> Iterator[str]:
    while page := store.stream_ids(after=after, limit=_PAGE):
        yield from page
        after = page[-1]


def _read_stream(store: EventStore, stream_id: str, *, gt: int = 0) -> Iterator[StoredEvent]:
    while page := store.read(stream_id, gt=gt, limit=_PAGE):
        yield from page
        gt = page[-1].position


def _every_key(keys: KeyStore | None) -> Iterator[KeyRecord]:
    if keys is None:
        return
    after: str | None = None
    while page := keys.scan(after=after, limit=_PAGE):
        yield from page
        after = page[-1].subject


def _targets(target: Stores | EventStore) -> tuple[EventStore, KeyStore | None]:
    if isinstance(target, Stores):
        return target.events, target.keys
    return target, None


def carry_erasures(source: KeyStore, target: KeyStore) -> int:
    """Put every erasure ``source`` records (its tombstones) into ``target``; return how many changed it.

    Before an import of an archive written before some erasures: the target then never takes
    those members' keys from the archive, and their events stay unreadable.
    """
    carried = 0
    batch: list[KeyRecord] = []
    for record in _every_key(source):
        if record.erased:
            batch.append(record)
        if len(batch) >= _PAGE:
            carried += target.load(batch)
            batch = []
    if batch:
        carried += target.load(batch)
    return carried


# -- export ------------------------------------------------------------------------


def export_store(stores: Stores, path: str, *, progress: Progress = quiet) -> ArchiveSummary:
    """Write every stream's events to an archive at ``path``; return its summary.

    The file appears at ``path`` only when complete (it is written beside it
    first); an interrupted export leaves nothing behind. A damaged store (an event
    that cannot be read back, a stream with a gap) is refused with
    :class:`~eskit.transfer.archive.ArchiveError` naming the first such event:
    an archive that an import would refuse is no backup.
    """
    try:
        return _export(stores, path, progress)
    except DamagedEvent as exc:
        raise ArchiveError(f"cannot export {exc}") from exc


def _export(stores: Stores, path: str, progress: Progress) -> ArchiveSummary:
    feed = single_feed(stores)
    source = stores.url.split(":", 1)[0]
    now = datetime.now(UTC)
    if feed is not None:
        cut = feed.head()
        header = ArchiveHeader(created_at=now, source=source, consistency="feed-cut", feed_cut=cut)
        with ArchiveWriter(path, header) as out, progress("exporting", total=cut) as advance:
            after = 0
            while after < cut:
                page = [f for f in feed.read(after=after, limit=min(_PAGE, cut - after)) if f.sequence <= cut]
                if not page:  # the cut is committed, so this cannot happen short of a damaged store
                    raise EskitError(f"the feed ends at {after}, before the cut at {cut}")
                for item in page:
                    out.write(item.event)
                after = page[-1].sequence
                advance(len(page))
            _write_keys(stores, out)
            return out.finish()
    header = ArchiveHeader(created_at=now, source=source, consistency="per-stream", feed_cut=None)
    events = stores.events

    def whole(stream_id: str) -> list[StoredEvent]:
        return list(_read_stream(events, stream_id))

    # Streams are read a few dozen at a time in parallel (each read is a round trip or two on a
    # networked store) and written in walk order; memory holds at most one such group of streams.
    with (
        ArchiveWriter(path, header) as out,
        progress("exporting", unit="events") as advance,
        ThreadPoolExecutor(max_workers=_READERS, thread_name_prefix="eskit-export") as pool,
    ):
        last: str | None = None
        while streams := events.stream_ids(after=last, limit=_READERS * 2):
            for stream in pool.map(whole, streams):
                for event in stream:
                    out.write(event)
                advance(len(stream))
            last = streams[-1]
        _write_keys(stores, out)
        return out.finish()


def _write_keys(stores: Stores, out: ArchiveWriter) -> None:
    """Every key record, after the events: each written event's key was made before it was written, so it is
    here; an erasure made while the export ran is here as its tombstone."""
    for record in _every_key(stores.keys):
        out.write_key(record)


# -- import ------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportResult:
    summary: ArchiveSummary
    written: int
    skipped: int
    #: whether the store took the import all or nothing (an interrupted one then left nothing)
    atomic: bool = False


def _first_streams(store: EventStore, n: int = 3) -> list[str]:
    return store.stream_ids(limit=n)


def check_archive(path: str, *, decode: Decode | None = None, progress: Progress = quiet) -> ArchiveReader:
    """Check the archive at ``path`` whole (see :meth:`ArchiveReader.check`) and return its reader.

    Touches no store: call it before opening the target, so a refused archive leaves
    the target as it was (not even created). ``decode`` also checks that every event
    decodes with an application's codec. Raises :class:`~eskit.transfer.archive.ArchiveError`.
    """
    reader = ArchiveReader(path, decode=decode)
    with progress("checking", unit="events") as advance:
        reader.check(advance=advance)
    return reader


def import_store(
    archive: str | ArchiveReader,
    target: Stores | EventStore,
    *,
    resume: bool = False,
    decode: Decode | None = None,
    progress: Progress = quiet,
) -> ImportResult:
    """Check an archive whole, then write its events into ``target`` at their positions.

    ``archive`` is a path, or a reader :func:`check_archive` returned (then it is not
    checked twice). Raises :class:`~eskit.transfer.archive.ArchiveError` (before
    writing anything) for an archive that is damaged, truncated, altered or holds
    what some store cannot, and :class:`NotEmpty` when the target holds events,
    unless ``resume`` says they are what an interrupted import of this archive left
    (checked by event id, stream by stream). Where the target can
    (:meth:`~eskit.ports.EventStore.all_or_nothing`), every event is written in one
    transaction: an import that fails part-way, or is interrupted, leaves nothing.
    The archive's key records go to the target's key store (never a key over a
    tombstone there); an archive that holds keys needs a target that keeps them
    (``Stores``), else :class:`~eskit.transfer.archive.ArchiveError` before anything is written.
    """
    reader = archive if isinstance(archive, ArchiveReader) else ArchiveReader(archive, decode=decode)
    if reader.summary is None:
        with progress("checking", unit="events") as advance:
            reader.check(advance=advance)
    summary = reader.summary
    assert summary is not None
    target, keys = _targets(target)
    if summary.keys and keys is None:
        raise ArchiveError(f"the archive holds {summary.keys:,} streams' keys and the target keeps none")
    found = _first_streams(target)
    if found and not resume:
        more = " and more" if len(found) == 3 else ""
        raise NotEmpty(
            f"the target store is not empty: it holds {', '.join(repr(s) for s in found)}{more}; "
            "import into an empty store (or pass --resume to finish an interrupted import of this file)"
        )
    loader = Loader(target)
    records: list[KeyRecord] = []
    with target.all_or_nothing() as atomic, progress("importing", total=summary.events) as advance:
        done = 0
        for item in reader.items():
            if isinstance(item, KeyRecord):
                records.append(item)
                if len(records) >= _PAGE:
                    _load_keys(keys, records)
                continue
            stream_id, position, event = item
            loader.add(stream_id, position, event)
            done += 1
            if done % _PAGE == 0:
                advance(_PAGE)
        loader.flush()
        _load_keys(keys, records)
        advance(done % _PAGE)
    return ImportResult(summary, loader.written, loader.skipped, atomic)


def _load_keys(keys: KeyStore | None, records: list[KeyRecord]) -> None:
    if records and keys is not None:
        keys.load(records)
    records.clear()


# -- copy --------------------------------------------------------------------------


@dataclass
class CopyState:
    """Where a copy stands, kept in a file between runs; it only saves work (every write is checked).

    ``feed_after``: the source feed sequence copied up to (copies that follow the feed);
    ``after_stream``: the last stream copied in the current walk (copies that walk), None at a walk's start.
    """

    path: str
    source: str
    target: str
    feed_after: int = 0
    after_stream: str | None = None
    walks: int = 0
    #: the last event written, ``[stream_id, position, event_id]``: a resumed copy checks the target holds it
    last: list[Any] | None = None

    @classmethod
    def open(cls, path: str, *, source: str, target: str) -> CopyState:
        """The state at ``path``, or a fresh one; refuses a file that belongs to another copy."""
        try:
            with open(path, "rb") as f:
                saved = orjson.loads(f.read())
        except FileNotFoundError:
            return cls(path, source, target)
        except (OSError, orjson.JSONDecodeError) as exc:
            raise EskitError(f"cannot read the copy state {path!r}: {exc}") from exc
        if saved.get("source") != source or saved.get("target") != target:
            raise EskitError(
                f"the copy state {path!r} belongs to a copy from {saved.get('source')!r} to "
                f"{saved.get('target')!r}: give another --state file for this one"
            )
        return cls(
            path,
            source,
            target,
            int(saved.get("feed_after", 0)),
            saved.get("after_stream"),
            int(saved.get("walks", 0)),
            saved.get("last"),
        )

    def wrote(self, event: StoredEvent) -> None:
        """Remember ``event`` as the last one written (saved with the next :meth:`save`)."""
        self.last = [event.stream_id, event.position, str(event.event_id)]

    def check_target(self, target: EventStore) -> None:
        """Raise unless ``target`` holds the last event this copy wrote (it was not emptied or replaced)."""
        if not self.last:
            return
        stream_id, position, event_id = self.last
        there = target.read(stream_id, gt=position - 1, lte=position)
        if not there or str(there[0].event_id) != event_id:
            raise EskitError(
                f"the target does not hold the last event this copy wrote ({stream_id!r} at {position}): it was "
                f"emptied or replaced since. Start the copy again with another state file than {self.path!r}"
            )

    @property
    def started(self) -> bool:
        return self.feed_after > 0 or self.after_stream is not None or self.walks > 0

    def save(self) -> None:
        value = {
            "source": self.source,
            "target": self.target,
            "feed_after": self.feed_after,
            "after_stream": self.after_stream,
            "walks": self.walks,
            "last": self.last,
        }
        partial = self.path + ".partial"
        with open(partial, "wb") as f:
            f.write(orjson.dumps(value, option=orjson.OPT_INDENT_2))
        os.replace(partial, self.path)


@dataclass(frozen=True)
class CopyResult:
    written: int
    skipped: int
    mode: str  # "feed" or "walk"
    position: int  # the source feed sequence reached (feed mode), streams met (walk mode)


def copy_store(
    source: Stores,
    target: Stores | EventStore,
    state: CopyState,
    *,
    follow: bool = False,
    stop: Callable[[], bool] = lambda: False,
    progress: Progress = quiet,
) -> CopyResult:
    """Copy ``source``'s events into ``target`` from where ``state`` stands; return what was done.

    Ends when the copy has caught up with the source (the feed's head, or the
    end of a walk over every stream), or, with ``follow``, keeps catching up
    until ``stop()`` says so. Raises :class:`NotEmpty` for a non-empty target
    when ``state`` shows no copy under way, and :class:`~eskit.transfer.loader.Diverged`
    when the target's events differ from the source's.

    Keys go with the events: a stream's key record is copied before the first of its events
    each page holds, and every record again at the end of each pass, so an erasure the source
    recorded meanwhile reaches the target (a tombstone always lands over a key).
    """
    target, target_keys = _targets(target)
    if source.keys is not None and target_keys is None and source.keys.scan(limit=1):
        raise EskitError("the source keeps streams' keys and the target keeps none: copy to a whole store")
    keys = _KeyCopier(source.keys, target_keys)
    if state.started:
        state.check_target(target)
    else:
        found = _first_streams(target)
        if found:
            raise NotEmpty(
                f"the target store is not empty (it holds {', '.join(repr(s) for s in found)}) and no copy "
                f"state was found at {state.path!r}: copy into an empty store, or give the state file of the "
                "copy to resume"
            )
    events = source.events

    def fill(stream_id: str, gt: int, lte: int) -> Sequence[NewEvent]:
        return [e.to_new() for e in events.read(stream_id, gt=gt, lte=lte)]

    loader = Loader(target, fill=fill)
    feed = single_feed(source)
    if feed is not None:
        return _follow_feed(feed, loader, state, keys, follow=follow, stop=stop, progress=progress)
    return _walk(events, target, loader, state, keys, follow=follow, stop=stop, progress=progress)


class _KeyCopier:
    """Brings streams' key records from the source's key store to the target's."""

    def __init__(self, source: KeyStore | None, target: KeyStore | None) -> None:
        self.source, self.target = source, target

    def streams(self, stream_ids: Sequence[str]) -> None:
        """The records of these streams (before their events are written)."""
        if self.source is None or self.target is None:
            return
        found = [r for s in dict.fromkeys(stream_ids) if (r := self.source.get(s)) is not None]
        if found:
            self.target.load(found)

    def every(self) -> None:
        """Every record (at the end of a pass: erasures made since their streams were copied)."""
        if self.source is not None and self.target is not None:
            batch: list[KeyRecord] = []
            for record in _every_key(self.source):
                batch.append(record)
                if len(batch) >= _PAGE:
                    self.target.load(batch)
                    batch = []
            if batch:
                self.target.load(batch)


def _follow_feed(
    feed: EventFeed,
    loader: Loader,
    state: CopyState,
    keys: _KeyCopier,
    *,
    follow: bool,
    stop: Callable[[], bool],
    progress: Progress,
) -> CopyResult:
    head = feed.head()
    synced = False  # every key record copied since the last page of events
    with progress("copying", total=max(head - state.feed_after, 0)) as advance:
        while not stop():
            page = feed.read(after=state.feed_after, limit=_PAGE)
            if not page:
                if not synced:
                    keys.every()
                    synced = True
                if not follow:
                    break
                time.sleep(0.2)
                continue
            synced = False
            keys.streams([item.event.stream_id for item in page])
            for item in page:
                loader.add(item.event.stream_id, item.event.position, item.event.to_new())
            loader.flush()
            state.feed_after = page[-1].sequence
            state.wrote(page[-1].event)
            state.save()
            advance(len(page))
    return CopyResult(loader.written, loader.skipped, "feed", state.feed_after)


def _check_same(source: EventStore, target: EventStore, stream_id: str, position: int) -> None:
    """The event the target holds at ``position`` is the source's (a copy resumed, not another store's data)."""
    theirs = source.read(stream_id, gt=position - 1, lte=position)
    mine = target.read(stream_id, gt=position - 1, lte=position)
    if not theirs or not mine or theirs[0].event_id != mine[0].event_id:
        raise Diverged(
            f"the target's stream {stream_id!r} holds another event at position {position} than the source "
            "(or the source holds none there)"
        )


def _walk(
    events: EventStore,
    target: EventStore,
    loader: Loader,
    state: CopyState,
    keys: _KeyCopier,
    *,
    follow: bool,
    stop: Callable[[], bool],
    progress: Progress,
) -> CopyResult:
    met = 0
    with progress("copying", unit="streams") as advance:
        while not stop():
            for stream_id in _walk_streams(events, after=state.after_stream):
                held = target.version(stream_id)
                if held:
                    _check_same(events, target, stream_id, held)
                keys.streams([stream_id])
                newest: StoredEvent | None = None
                for event in _read_stream(events, stream_id, gt=held):
                    loader.add(stream_id, event.position, event.to_new())
                    newest = event
                loader.flush()
                if newest is not None:
                    state.wrote(newest)
                state.after_stream = stream_id
                state.save()
                met += 1
                advance(1)
                if stop():
                    break
            else:
                keys.every()
                state.after_stream, state.walks = None, state.walks + 1
                state.save()
                if not follow:
                    break
    return CopyResult(loader.written, loader.skipped, "walk", met)
