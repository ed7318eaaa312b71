"""The SQLite event store: appends checked and written in one write transaction, grouped.

Appends run in ``BEGIN IMMEDIATE`` transactions, which take the database's
single write lock up front, so the version check and the inserts of one append
are atomic across threads and processes. Appends that arrive while a commit is
under way share the next one (group commit), and each is still answered only
after the commit holding its events returned.

:meth:`SQLiteEventStore.append_all` makes appends to several streams, and records a
*tracking position* (how far its caller has come in some upstream sequence whose events
caused these appends), as one unit that commits whole or not at all: it is checked and
written inside a grouped transaction like any append, so it never holds the write lock
for longer than one group's commit and never waits on another writer.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from eskit.events import NewEvent, StoredEvent
from eskit.exceptions import (
    ConcurrencyError,
    DamagedEvent,
    EskitError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    StoreUnavailable,
)
from eskit.ports import EventStore
from eskit.stores.checks import check_append, check_read
from eskit.stores.sqlite.connection import SQLiteConnection, translate_errors
from eskit.stores.sqlite.schema import (
    INSERT_EVENT,
    SELECT_LAST_SEQ,
    SELECT_TRACKED,
    SELECT_VERSION,
    UPSERT_TRACKED,
)
from eskit.stores.timestamps import from_micros, to_micros

__all__ = ["SQLiteEventStore", "row_to_event"]


def row_to_event(
    stream_id: str, row: tuple[int, bytes, str, int, bytes, bytes, int], *, sequence: int | None = None
) -> StoredEvent:
    """The event a row holds; :class:`DamagedEvent` for a row no append writes (edited by hand, or forged)."""
    position, event_id, type_name, schema_version, data, metadata, recorded_at = row
    try:
        if not isinstance(type_name, str) or not isinstance(schema_version, int):
            raise TypeError(f"type {type_name!r} or schema version {schema_version!r} is not what an append writes")
        return StoredEvent(
            stream_id=stream_id,
            position=position,
            type_name=type_name,
            schema_version=schema_version,
            data=bytes(data),
            metadata=bytes(metadata),
            recorded_at=from_micros(recorded_at),
            event_id=uuid.UUID(bytes=bytes(event_id)),
        )
    except OverflowError:
        reason = f"its recorded time ({recorded_at} microseconds after 1970) is outside the times stores encode"
        raise DamagedEvent(stream_id, position, reason, sequence=sequence) from None
    except (TypeError, ValueError) as exc:
        raise DamagedEvent(stream_id, position, str(exc), sequence=sequence) from None


@dataclass(frozen=True)
class _Part:
    """The rows of one stream's append and the version they must follow."""

    stream_id: str
    expected_version: int
    rows: Sequence[tuple[object, ...]]


@dataclass
class _Append:
    """One caller's unit of work, waiting to be written whole in some group's transaction.

    Its parts (appends to distinct streams) and its tracking position are all checked
    before any of them is written, so a unit is stored whole or not at all.
    """

    parts: Sequence[_Part]
    tracking: tuple[str, int] | None = None
    wake: threading.Event | None = None  # made only for a caller that has to wait
    finished: bool = False
    lead: bool = False
    error: BaseException | None = None
    #: the feed sequence numbers each part's events took, once written
    sequences: list[range] = field(default_factory=list)


class _GroupCommitter:
    """Group commit: appends that arrive while a commit is under way share the next one.

    Every commit waits for an fsync, which costs far more than the inserts. A
    caller that finds no commit under way leads: it writes every append waiting
    at that moment in one ``BEGIN IMMEDIATE`` transaction, each checked against
    its expected version (and so against the appends before it in the group),
    commits once, wakes their callers, and hands the lead to the first caller
    still waiting. A caller is answered only after the commit holding its
    events returned, so acknowledged still means durable; if that commit fails,
    every append in it fails and none is stored.
    """

    def __init__(self, db: SQLiteConnection, *, max_group: int = 64) -> None:
        self.db = db
        self.max_group = max_group
        self._lock = threading.Lock()
        self._waiting: list[_Append] = []
        self._leading = False
        self._pid = os.getpid()
        #: when the last group failed in the backend (full disk, I/O error) with no commit since

    def submit(self, append: _Append) -> None:
        if self._pid != os.getpid():  # a forked child starts with no commit under way
            self._lock, self._waiting, self._leading, self._pid = threading.Lock(), [], False, os.getpid()
        with self._lock:
            self._waiting.append(append)
            if not self._leading:
                self._leading = append.lead = True
            else:
                append.wake = threading.Event()
        while not append.finished:
            if append.lead:
                self._lead(append)
            else:
                assert append.wake is not None
                append.wake.wait()
                append.wake.clear()
        if append.error is not None:
            raise append.error

    def _lead(self, me: _Append) -> None:
        while not me.finished:
            with self._lock:
                group, self._waiting = self._waiting[: self.max_group], self._waiting[self.max_group :]
            try:
                self._write(group)
                self.db.failed_write = None
            except BaseException as exc:  # the group's transaction failed: none of its events are stored
                if isinstance(exc, OperationalError):
                    self.db.failed_write = (time.monotonic(), f"an append failed: {exc}")
                for append in group:
                    append.error = append.error or exc
            for append in group:
                append.finished = True
                if append.wake is not None:
                    append.wake.set()
        with self._lock:
            if self._waiting:
                successor = self._waiting[0]
                successor.lead = True
                assert successor.wake is not None  # everyone queued behind a leader has one
                successor.wake.set()
            else:
                self._leading = False

    def write_now(self, group: list[_Append]) -> None:
        """Write ``group`` in one transaction of the caller's own, beside the grouped appends.

        ``BEGIN IMMEDIATE`` orders it with every other transaction, so the feed's sequence
        stays gap-free. A failed transaction marks every append of the group with its error.
        """
        try:
            self._write(group)
        except BaseException as exc:
            for append in group:
                append.error = append.error or exc
            if not isinstance(exc, Exception):
                raise

    def _write(self, group: list[_Append]) -> None:
        with self.db.transaction(immediate=True) as conn:
            # The feed's sequence continues from the last committed one, under the write lock:
            # committed sequence numbers are always 1 .. max, with no gap a follower could skip.
            (last,) = conn.execute(SELECT_LAST_SEQ).fetchone()
            seq = last or 0
            for append in group:
                # Checked against what is committed and what this group wrote before it.
                append.error = _refusal(conn, append)
                if append.error is not None:
                    continue
                append.sequences = []
                for part in append.parts:
                    conn.executemany(INSERT_EVENT, [(*row, seq + n) for n, row in enumerate(part.rows, start=1)])
                    append.sequences.append(range(seq + 1, seq + 1 + len(part.rows)))
                    seq += len(part.rows)
                if append.tracking is not None:
                    conn.execute(UPSERT_TRACKED, append.tracking)


def _refusal(conn: sqlite3.Connection, append: _Append) -> EskitError | None:
    """Why ``append`` cannot be written now (a stale version, a tracking position not ahead), or None."""
    for part in append.parts:
        (current,) = conn.execute(SELECT_VERSION, (part.stream_id,)).fetchone()
        current = current or 0
        if current != part.expected_version:
            return ConcurrencyError(part.stream_id, part.expected_version, current)
    if append.tracking is not None:
        upstream, position = append.tracking
        row = conn.execute(SELECT_TRACKED, (upstream,)).fetchone()
        if row is not None and row[0] >= position:
            return IntegrityError(f"tracking of {upstream!r} is at {row[0]}: position {position} is not ahead of it")
    return None


class SQLiteEventStore(EventStore):
    """Event streams in one SQLite file; see the module docstring for the guarantees."""

    def __init__(self, path: str | os.PathLike[str] | SQLiteConnection) -> None:
        self.db = path if isinstance(path, SQLiteConnection) else SQLiteConnection(path)
        self._committer = _GroupCommitter(self.db)

    def append(self, stream_id: str, events: Sequence[NewEvent], *, expected_version: int) -> int:
        check_append(stream_id, events, expected_version)
        rows = self._rows(stream_id, events, expected_version)
        self._committer.submit(_Append([_Part(stream_id, expected_version, rows)]))
        return expected_version + len(rows)

    def append_all(
        self,
        appends: Sequence[tuple[str, Sequence[NewEvent], int]],
        *,
        tracking: tuple[str, int] | None = None,
    ) -> list[range]:
        """Make every append ``(stream_id, events, expected_version)`` and record ``tracking``: all or none.

        ``tracking`` is ``(upstream, position)``: how far the caller has come in an upstream
        sequence whose events caused these appends; it must be ahead of the position recorded
        for that upstream (:meth:`tracked`). Returns, for each append in order, the feed
        sequence numbers its events took; the call's events stand together in the feed.

        Raises, with nothing written: :class:`~eskit.exceptions.ConcurrencyError` for the first
        stale append; :class:`~eskit.exceptions.IntegrityError` for a tracking position not ahead
        of the recorded one; :class:`~eskit.exceptions.InterfaceError` for a stream named twice,
        an empty append, an empty upstream or a negative position. Once it returns, all is durable.
        """
        for stream_id, events, expected in appends:
            check_append(stream_id, events, expected)
        if len({stream_id for stream_id, _, _ in appends}) != len(appends):
            raise InterfaceError("append_all names a stream twice: give each stream's events as one append")
        if tracking is not None:
            upstream, position = tracking
            if not upstream or position < 0:
                raise InterfaceError(f"a tracking position needs an upstream name and a position >= 0, got {tracking}")
        if not appends and tracking is None:
            return []
        parts = [_Part(sid, expected, self._rows(sid, events, expected)) for sid, events, expected in appends]
        unit = _Append(parts, tracking=tracking)
        self._committer.submit(unit)
        return unit.sequences

    def tracked(self, upstream: str) -> int | None:
        """The tracking position last recorded for ``upstream`` by :meth:`append_all` (None if none)."""
        conn = self.db.get()
        with translate_errors():
            row = conn.execute(SELECT_TRACKED, (upstream,)).fetchone()
        return None if row is None else int(row[0])

    @staticmethod
    def _rows(stream_id: str, events: Sequence[NewEvent], expected_version: int) -> list[tuple[object, ...]]:
        return [
            (
                stream_id,
                expected_version + offset,
                event.event_id.bytes,
                event.type_name,
                event.schema_version,
                event.data,
                event.metadata,
                to_micros(event.recorded_at),
            )
            for offset, event in enumerate(events, start=1)
        ]

    def append_many(self, appends: Sequence[tuple[str, Sequence[NewEvent], int]]) -> list[int | EskitError]:
        """All the appends in one write transaction: one commit (and one fsync) for a bulk load."""
        for stream_id, events, expected in appends:
            check_append(stream_id, events, expected)
        group = [
            _Append([_Part(sid, expected, self._rows(sid, events, expected))]) for sid, events, expected in appends
        ]
        if group:
            self._committer.write_now(group)
        answers: list[int | EskitError] = []
        for append in group:
            if append.error is None:
                (part,) = append.parts
                answers.append(part.expected_version + len(part.rows))
            elif isinstance(append.error, EskitError):
                answers.append(append.error)
            else:
                raise append.error
        return answers

    atomic_loads = True

    def all_or_nothing(self) -> contextlib.AbstractContextManager[bool]:
        """One write transaction for every append of this thread in the block (see the port)."""

        @contextlib.contextmanager
        def block() -> Iterator[bool]:
            with self.db.all_or_nothing():
                yield True

        return block()

    def stream_ids(self, *, after: str | None = None, limit: int = 1000) -> list[str]:
        # Each next id is one seek in the primary key, so a page costs ``limit`` seeks
        # whatever the streams' lengths (a DISTINCT would visit every event).
        conn = self.db.get()
        found: list[str] = []
        if limit <= 0:
            return found
        with translate_errors():
            if after is None:
                row = conn.execute("SELECT min(stream_id) FROM events").fetchone()
                if row[0] is None:
                    return found
                found.append(row[0])
                after = row[0]
            while len(found) < limit:
                row = conn.execute("SELECT min(stream_id) FROM events WHERE stream_id > ?", (after,)).fetchone()
                if row[0] is None:
                    break
                found.append(row[0])
                after = row[0]
        return found

    def read(
        self,
        stream_id: str,
        *,
        gt: int = 0,
        lte: int | None = None,
        limit: int | None = None,
        desc: bool = False,
    ) -> list[StoredEvent]:
        check_read(gt, lte, limit)
        sql = (
            "SELECT position, event_id, type_name, schema_version, data, metadata, recorded_at"
            " FROM events WHERE stream_id = ? AND position > ?"
        )
        params: list[object] = [stream_id, gt]
        if lte is not None:
            sql += " AND position <= ?"
            params.append(lte)
        sql += " ORDER BY position DESC" if desc else " ORDER BY position"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        conn = self.db.get()
        with translate_errors():
            rows = conn.execute(sql, params).fetchall()
        return [row_to_event(stream_id, row) for row in rows]

    def version(self, stream_id: str) -> int:
        conn = self.db.get()
        with translate_errors():
            (current,) = conn.execute(SELECT_VERSION, (stream_id,)).fetchone()
        return int(current or 0)

    def recorded_times(self, stream_id: str, positions: Sequence[int]) -> dict[int, datetime]:
        marks = ",".join("?" * len(positions))
        conn = self.db.get()
        with translate_errors():
            rows = conn.execute(
                f"SELECT position, recorded_at FROM events WHERE stream_id = ? AND position IN ({marks})",
                (stream_id, *positions),
            ).fetchall()
        return {position: from_micros(at) for position, at in rows}

    #: after a failed write (an append, a key's), how long ``ping`` reports it unless an append succeeds meanwhile
    FAILURE_MEMORY = 30.0
    #: ``ping`` proves a write at most this often (seconds); in between it checks the file only
    PROBE_EVERY = 1.0
    _probed_at = float("-inf")

    def ping(self) -> None:
        """Check that the store's file is still its own and takes a durable write (one row, rewritten).

        A recent failed append or key write (full disk, I/O error) with no successful append since
        also fails the check: a probe of one small row can slip into the last free bytes that an
        append did not fit in.
        """
        failed = self.db.failed_write
        if failed is not None and time.monotonic() - failed[0] < self.FAILURE_MEMORY:
            raise StoreUnavailable(f"the last write to {self.db.path!r} failed: {failed[1]}")
        self.db.check_file()
        if time.monotonic() - self._probed_at < self.PROBE_EVERY:
            return  # a write proven this recently: probes cannot be used to load the write lock
        with self.db.transaction(immediate=True) as conn:
            conn.execute("INSERT OR REPLACE INTO eskit_health (id, checked_at) VALUES (1, ?)", (time.time_ns(),))
        self._probed_at = time.monotonic()

    def close(self) -> None:
        self.db.close()
