"""Apache Cassandra stores: linearizable appends with lightweight transactions.

Layout (see ``docs/cassandra.md``)::

    events    PRIMARY KEY ((stream_id, bucket), position)   static column head
    snapshots PRIMARY KEY (stream_id, version)  newest first
    eskit_settings                                          bucket_size, recorded once

A stream's events are spread over partitions (*buckets*) of ``bucket_size``
positions so no partition grows without bound. An append of positions
``E+1 .. E+k`` (``E`` the expected version) goes, whole, into bucket
``E // bucket_size`` (so a long append may spill past the bucket's nominal end)
as one conditional batch on that partition: ``UPDATE ... SET head = E+k IF head
= E`` (``IF head = null`` for a bucket's first append) plus the event rows. The
Paxos round makes two appends at the same version exclude each other.

A bucket's first append also checks, at serial consistency, that the previous
bucket's head is ``E``: once the stream has moved into a new bucket, the old
one never changes again, so that check cannot go stale.

Unknown outcomes: when a conditional write times out, the same batch (same
event ids, same condition) is sent again. If it applies, the append happened
once; if not, the events at ``E+1..`` are read at serial consistency and
compared by event id, which tells our own earlier write from another writer's.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from eskit.events import NewEvent, StoredEvent
from eskit.exceptions import (
    ConcurrencyError,
    DamagedEvent,
    EskitError,
    InterfaceError,
    OperationalError,
    QuorumUnreachable,
    StoreUnavailable,
    UnknownOutcome,
)
from eskit.ports import EventStore
from eskit.stores.cassandra.feed import CassandraStreamFeed
from eskit.stores.cassandra.gate import QuorumGate
from eskit.stores.cassandra.session import CassandraSession, Deadline, applied, backoff, translate
from eskit.stores.checks import check_append, check_read
from eskit.stores.timestamps import from_micros, to_micros
from eskit.timetravel import TIME_STRIDE

log = logging.getLogger(__name__)

__all__ = ["CassandraEventStore"]


def _all_unavailable(exc: Exception) -> bool:
    """Whether a driver's NoHostAvailable says only that replicas were unavailable (nothing was sent)."""
    from cassandra import Unavailable

    errors = getattr(exc, "errors", None) or {}
    return all(isinstance(e, Unavailable) for e in errors.values())


def _row_to_event(stream_id: str, row: Any) -> StoredEvent:
    """The event a row holds; :class:`DamagedEvent` for a row no append writes (as the SQLite store does)."""
    try:
        if row.event_id is None or row.type_name is None or row.schema_version is None:
            raise ValueError("its id, type or schema version is missing")
        return StoredEvent(
            stream_id=stream_id,
            position=row.position,
            type_name=row.type_name,
            schema_version=row.schema_version,
            data=bytes(row.data or b""),
            metadata=bytes(row.metadata or b""),
            recorded_at=from_micros(row.recorded_at),
            event_id=row.event_id,
        )
    except OverflowError:
        reason = f"its recorded time ({row.recorded_at} microseconds after 1970) is outside the times stores encode"
        raise DamagedEvent(stream_id, row.position, reason) from None
    except (TypeError, ValueError) as exc:
        raise DamagedEvent(stream_id, row.position, str(exc)) from None


class CassandraEventStore(EventStore):
    """Event streams in Cassandra; see the module docstring for the design."""

    #: ``append_many`` runs its appends at once: a bulk load must not give it one stream twice
    concurrent_appends = True

    def __init__(self, connection: CassandraSession, feed: CassandraStreamFeed | None = None) -> None:
        self.db = connection
        self.command_budget = connection.settings.command_timeout  # a command's whole time, turns and retries
        #: the feed's hints, written before every append (None only in tools that never append)
        self.feed = feed
        assert connection.statements is not None, "the session's statements are prepared by open_stores"
        self.sql = connection.statements
        self.bucket_size = connection.settings.bucket_size
        self._last_bucket: dict[str, int] = {}  # a hint only: buckets never disappear
        # Streams whose append was just refused: the next read is serial, so that it sees the
        # winning write even when that write was committed in another region.
        self._read_serially: set[str] = set()
        #: refuses appends at once while this region cannot reach a global quorum (see gate.py)
        self.gate = QuorumGate(self._probe)
        #: counts of unknown outcomes met and how they were resolved (for metrics and tests)
        self.outcomes = {"timed_out": 0, "resent_applied": 0, "found_ours": 0, "found_theirs": 0, "unresolved": 0}

    # -- buckets ---------------------------------------------------------------

    def _bucket_of_version(self, version: int) -> int:
        """The bucket an append after ``version`` goes to."""
        return version // self.bucket_size

    def _head(
        self, stream_id: str, bucket: int, *, serial: bool = False, deadline: Deadline | None = None
    ) -> int | None:
        if serial:
            row = self._serial_query(self.sql.select_head, (stream_id, bucket), deadline).one()
        else:
            row = self.db.query(self.sql.select_head, (stream_id, bucket)).one()
        return None if row is None else row.head

    def _serial_query(self, statement: Any, params: Sequence[Any], deadline: Deadline | None = None) -> Any:
        """A read at serial consistency. It needs a global quorum, like an append, so it is bounded the
        same way and guarded by the gate: refused at once while cut off, and a failure tells the gate."""
        self.gate.check()
        try:
            return self.db.query(
                statement,
                params,
                serial=True,
                deadline=deadline or Deadline.for_command(self.db.settings.command_timeout),
            )
        except OperationalError as exc:
            if not isinstance(exc, QuorumUnreachable):
                self.gate.failed(f"{type(exc).__name__} on a serial read")
            raise

    def _serially(self, stream_id: str) -> bool:
        """Whether the next read of the stream is serial: after a refused append, while a quorum is reachable.

        Cut off from the other regions, a serial read cannot answer; what this region holds can.
        """
        return stream_id in self._read_serially and self.gate.allows()

    def read_latest(self, stream_id: str) -> bool:
        """With several regions, a local read may miss another region's append until its commit arrives:
        the next read of the stream is serial. Cut off from a quorum, what this region holds is all it
        can read (False), and so it is with one region, where every read sees every acknowledged append."""
        if len(self.db.data_centres) < 2 or not self.gate.allows():
            return False
        if len(self._read_serially) >= 100_000:
            self._read_serially.clear()  # a hint only
        self._read_serially.add(stream_id)
        return True

    def version(self, stream_id: str) -> int:
        serial = self._serially(stream_id)
        version = self._version(stream_id, serial=serial)
        self._read_serially.discard(stream_id)
        return version

    def _version(self, stream_id: str, *, serial: bool) -> int:
        bucket = self._last_bucket.get(stream_id, 0)
        version = 0
        while True:
            head = self._head(stream_id, bucket, serial=serial)
            if head is None:
                if bucket > 0 and version == 0:
                    # This read cannot see the hinted bucket: walk from the first one instead.
                    self._last_bucket.pop(stream_id, None)
                    return self._version_from_start(stream_id, serial=serial)
                return version
            version = head
            self._remember_bucket(stream_id, bucket)
            following = self._bucket_of_version(head)
            if following == bucket:
                return version
            bucket = following

    def _remember_bucket(self, stream_id: str, bucket: int) -> None:
        if bucket == 0:
            self._last_bucket.pop(stream_id, None)  # the default needs no entry
            return
        if len(self._last_bucket) >= 100_000:
            self._last_bucket.clear()  # a hint only: losing it costs a few reads
        self._last_bucket[stream_id] = bucket

    def _version_from_start(self, stream_id: str, *, serial: bool) -> int:
        version, bucket = 0, 0
        while (head := self._head(stream_id, bucket, serial=serial)) is not None:
            version = head
            following = self._bucket_of_version(head)
            if following == bucket:
                break
            bucket = following
        return version

    # -- append ----------------------------------------------------------------

    def append(self, stream_id: str, events: Sequence[NewEvent], *, expected_version: int) -> int:
        check_append(stream_id, events, expected_version)
        if len(events) > self.bucket_size:
            raise InterfaceError(f"an append holds at most bucket_size={self.bucket_size} events")
        # Refused at once, without a request, while this region cannot reach a global quorum.
        self.gate.check()
        deadline = Deadline.for_command(self.db.settings.command_timeout)
        head, writer = expected_version + len(events), uuid.uuid4()  # one hint per attempt, never shared
        at = to_micros(events[0].recorded_at)
        if self.feed is not None:
            # Hint first: an append whose hint could not be written is not proposed (see feed.py).
            try:
                self.feed.hint(stream_id, head, writer, at, deadline=deadline)
            except OperationalError as exc:
                raise StoreUnavailable(f"cannot append to {stream_id!r}: its feed hint failed ({exc})") from exc
        try:
            version = self._append(stream_id, events, expected_version, writer, at, deadline)
        except ConcurrencyError:
            self.gate.succeeded()  # a refusal is an answer from a quorum
            if self.feed is not None:  # definitely not appended: its hint would only cost followers a look
                self.feed.withdraw(stream_id, head, writer)
            if len(self._read_serially) >= 100_000:
                self._read_serially.clear()  # a hint only: a non-serial reload conflicts once more
            self._read_serially.add(stream_id)
            raise
        except (StoreUnavailable, UnknownOutcome) as exc:
            self.gate.failed(f"{type(exc).__name__} on an append")
            raise
        self.gate.succeeded()
        return version

    def _append(
        self,
        stream_id: str,
        events: Sequence[NewEvent],
        expected_version: int,
        writer: uuid.UUID,
        at: int,
        deadline: Deadline,
    ) -> int:
        bucket = self._bucket_of_version(expected_version)
        new_version = expected_version + len(events)
        # Guess whether this is the bucket's first append (true when the previous append ended
        # exactly on a bucket boundary, as single-event appends do); a wrong guess shows in the
        # refused condition's current head and costs one more round, a right one saves a read.
        first_in_bucket = expected_version % self.bucket_size == 0
        durable_hint: Any = None
        for _ in range(2):
            if first_in_bucket and bucket > 0:
                # The previous bucket must end exactly at the expected version. Once it does, no
                # later append can change it, so this check cannot go stale.
                previous = self._head(stream_id, bucket - 1, serial=True, deadline=deadline)
                if previous != expected_version:
                    raise ConcurrencyError(stream_id, expected_version, previous)
            if durable_hint is None and self.feed is not None:
                # The durable hint travels alongside the Paxos round (see feed.py): no round trip of its own.
                durable_hint = self.feed.hint_durably(stream_id, new_version, writer, at)
            batch = self._batch(stream_id, bucket, events, expected_version, first_in_bucket)
            applied, head = self._conditional(batch, stream_id, bucket, expected_version, events, deadline)
            if applied:
                self._remember_bucket(stream_id, bucket)
                self._index_times(
                    stream_id,
                    {
                        p: to_micros(e.recorded_at)
                        for p, e in enumerate(events, start=expected_version + 1)
                        if (p - 1) % TIME_STRIDE == 0
                    },
                )
                if self.feed is not None:
                    # Acknowledged only once its hint is durable (survives the loss of this region).
                    self.feed.confirm(durable_hint, stream_id, new_version, deadline)
                return new_version
            wrong_guess = (head is None) != first_in_bucket and (head is None or head == expected_version)
            if not wrong_guess:
                raise ConcurrencyError(stream_id, expected_version, head)
            first_in_bucket = head is None
        raise ConcurrencyError(stream_id, expected_version, None)

    def _batch(
        self, stream_id: str, bucket: int, events: Sequence[NewEvent], expected_version: int, first_in_bucket: bool
    ) -> Any:
        from cassandra.query import BatchStatement, BatchType

        batch = BatchStatement(
            batch_type=BatchType.UNLOGGED,
            consistency_level=self.db.commit_cl,
            serial_consistency_level=self.db.serial_cl,
        )
        new_version = expected_version + len(events)
        if first_in_bucket:
            batch.add(self.sql.set_head_if_null, (new_version, stream_id, bucket))
        else:
            batch.add(self.sql.set_head_if, (new_version, stream_id, bucket, expected_version))
        for offset, event in enumerate(events, start=1):
            batch.add(
                self.sql.insert_event,
                (
                    stream_id,
                    bucket,
                    expected_version + offset,
                    event.event_id,
                    event.type_name,
                    event.schema_version,
                    event.data,
                    event.metadata,
                    to_micros(event.recorded_at),
                ),
            )
        return batch

    def _conditional(
        self,
        batch: Any,
        stream_id: str,
        bucket: int,
        expected_version: int,
        events: Sequence[NewEvent],
        deadline: Deadline,
    ) -> tuple[bool, int | None]:
        """Run the conditional batch, resolving unknown outcomes, within ``deadline``.

        Returns whether our events are stored and, when they are not, the
        bucket's current head as the refused condition reported it. Raises
        :class:`UnknownOutcome` when an attempt may have been applied and the
        cluster cannot tell whether it was, :class:`StoreUnavailable` when no
        attempt can have been (the replicas were unavailable every time).
        """
        from cassandra import InvalidRequest, Unavailable
        from cassandra.cluster import NoHostAvailable

        attempts = self.db.settings.retries + 1
        uncertain = False
        cap = self.db.settings.request_timeout
        for attempt in range(1, attempts + 1):
            try:
                result = self.db.session.execute(batch, timeout=deadline.timeout(cap))
            except (Unavailable, NoHostAvailable) as exc:
                if isinstance(exc, NoHostAvailable) and not _all_unavailable(exc):
                    uncertain = self._uncertain(stream_id, exc)  # a connection lost under the request
                # Otherwise refused by the coordinator before any Paxos round: this attempt wrote nothing.
                if attempt == attempts or deadline.remaining() < 0.05:
                    break
                backoff(attempt, deadline)
                continue
            except InvalidRequest as exc:
                if uncertain:
                    break
                raise translate(exc, f"cannot append to {stream_id!r}") from exc
            except Exception as exc:
                # A timeout, a failed coordinator, a dropped connection: the batch may have been
                # applied. Send the same batch again (same event ids, same condition).
                uncertain = self._uncertain(stream_id, exc)
                if attempt == attempts or deadline.remaining() < 0.05:
                    break
                backoff(attempt, deadline)
                continue
            if applied(result):
                if uncertain:
                    self.outcomes["resent_applied"] += 1
                return True, None
            head = getattr(result.one(), "head", None)
            if not uncertain:
                return False, head
            # Refused after an uncertain attempt: whatever stands at E+1 now is final.
            return self._resolve(stream_id, bucket, expected_version, events, final=True, deadline=deadline), head
        if not uncertain:
            raise StoreUnavailable(f"cannot append to {stream_id!r}: not enough replicas are available")
        return self._resolve(stream_id, bucket, expected_version, events, final=False, deadline=deadline), None

    def _uncertain(self, stream_id: str, exc: Exception) -> bool:
        self.outcomes["timed_out"] += 1
        log.info("conditional append to %s failed (%s), resolving", stream_id, type(exc).__name__)
        return True

    def _resolve(
        self,
        stream_id: str,
        bucket: int,
        expected_version: int,
        events: Sequence[NewEvent],
        *,
        final: bool,
        deadline: Deadline | None = None,
    ) -> bool:
        """After an uncertain attempt: are our events at E+1 (True), another writer's (False)?

        When nothing stands there and no resend was refused (``final`` false), an
        attempt may still be in flight at a slow coordinator and apply later, so
        the answer is :class:`UnknownOutcome`, never a conflict.
        """
        try:
            row = self._row_after(stream_id, bucket, expected_version, deadline)
        except OperationalError as exc:
            self.outcomes["unresolved"] += 1
            raise UnknownOutcome(
                f"append to {stream_id!r} at version {expected_version} may or may not have happened; "
                "retry the command with the same request id"
            ) from exc
        if row is None and not final:
            self.outcomes["unresolved"] += 1
            raise UnknownOutcome(
                f"append to {stream_id!r} at version {expected_version} timed out and may still apply; "
                "retry the command with the same request id"
            )
        ours = row is not None and row.event_id == events[0].event_id
        self.outcomes["found_ours" if ours else "found_theirs"] += 1
        return ours

    def _row_after(self, stream_id: str, bucket: int, expected_version: int, deadline: Deadline | None = None) -> Any:
        """The event row at position E+1 in ``bucket``, read at serial consistency (None if absent)."""
        return self._serial_query(
            self.sql.select_range, (stream_id, bucket, expected_version, expected_version + 1, 1), deadline
        ).one()

    def _ours(self, stream_id: str, bucket: int, expected_version: int, events: Sequence[NewEvent]) -> bool:
        """Whether the events standing after ``expected_version`` are ours (read serially)."""
        row = self._row_after(stream_id, bucket, expected_version)
        return row is not None and row.event_id == events[0].event_id

    # -- reads -----------------------------------------------------------------

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
        if limit == 0:
            return []
        serial = self._serially(stream_id)
        found = self._read(stream_id, gt, lte, limit, desc, serial=serial)
        if found is None and not serial and self.gate.allows():
            # Fewer rows than the head promised: a commit reached only some replicas. A serial read
            # finishes any Paxos round in flight, after which rows and head agree.
            found = self._read(stream_id, gt, lte, limit, desc, serial=True)
        if found is None:
            raise OperationalError(
                f"the replicas of stream {stream_id!r} disagree: its head is past the events they return; "
                "try again when every replica is reachable"
            )
        self._read_serially.discard(stream_id)
        return found

    def _read(
        self, stream_id: str, gt: int, lte: int | None, limit: int | None, desc: bool, *, serial: bool
    ) -> list[StoredEvent] | None:
        """The events in range, or None when fewer come back than the head says exist."""
        if lte is None and not serial and not desc:
            handled, found = self._read_to_head(stream_id, gt, limit)
            if handled:
                return found
        if lte is not None and lte > gt and (lte - 1) // self.bucket_size - gt // self.bucket_size <= 1:
            # A short bounded range (time travel, a cached aggregate catching up): when every
            # position comes back, the rows alone prove the read complete, no head needed.
            found = self._rows(stream_id, gt, lte, limit, desc, serial=serial)
            if len(found) == (lte - gt if limit is None else min(limit, lte - gt)):
                return found
        head = self._version(stream_id, serial=serial)
        # Never walk buckets past the stream's head: a huge ``lte`` would otherwise mean a query per bucket.
        upper = head if lte is None else min(lte, head)
        if upper <= gt:
            return []
        found = self._rows(stream_id, gt, upper, limit, desc, serial=serial)
        # Positions are contiguous: exactly this many events stand in (gt, upper].
        expected = upper - gt if limit is None else min(limit, upper - gt)
        return found if len(found) >= expected else None

    def _read_to_head(self, stream_id: str, gt: int, limit: int | None) -> tuple[bool, list[StoredEvent] | None]:
        """Everything after ``gt`` in one round trip: the head of the stream's last known bucket and the
        rows of the buckets up to it, read side by side (a load, a catch-up). Returns (False, None) when
        the stream has moved past that bucket (the caller then walks the buckets), else (True, what
        :meth:`_read` returns)."""
        last = self._last_bucket.get(stream_id, 0)
        first = max(0, (gt + 1) // self.bucket_size - 1)
        if not 0 <= last - first <= 2:
            return False, None
        wanted = 2**31 - 1 if limit is None else limit
        queries: list[tuple[Any, Sequence[Any]]] = [(self.sql.select_head, (stream_id, last))]
        queries += [(self.sql.select_range, (stream_id, b, gt, 2**62, wanted)) for b in range(first, last + 1)]
        head_rows, *bucket_rows = self.db.query_all(queries)
        row = head_rows.one()
        head = None if row is None else row.head
        if head is None:
            # Nothing in the last known bucket: an empty stream (bucket 0), or a stale hint.
            return (True, []) if last == 0 else (False, None)
        if self._bucket_of_version(head) != last:
            return False, None  # the stream went on into a later bucket
        if head <= gt:
            return True, []
        found = [_row_to_event(stream_id, r) for rows in bucket_rows for r in rows if r.position <= head]
        if limit is not None:
            found = found[:limit]
        expected = head - gt if limit is None else min(limit, head - gt)
        return True, (found if len(found) >= expected else None)

    def _rows(
        self, stream_id: str, gt: int, upper: int, limit: int | None, desc: bool, *, serial: bool
    ) -> list[StoredEvent]:
        """The rows with ``gt < position <= upper`` bucket by bucket, stopping at ``limit``."""
        # The event at position p was appended after some version E in [p - bucket_size, p - 1]
        # and lives in bucket E // bucket_size: (p - 1) // size or the bucket before it.
        first = max(0, (gt + 1) // self.bucket_size - 1)
        last = (upper - 1) // self.bucket_size
        buckets = range(last, first - 1, -1) if desc else range(first, last + 1)
        statement = self.sql.select_range_desc if desc else self.sql.select_range
        # Every position in a bucket is below every position in the next, so buckets read in order
        # give events in order, and the read can stop as soon as it has ``limit`` of them.
        found: list[StoredEvent] = []
        if len(buckets) <= 3 and not serial:
            # A short range: its few bucket queries go out at once, one round trip in all.
            wanted = 2**31 - 1 if limit is None else limit
            queries = [(statement, (stream_id, bucket, gt, upper, wanted)) for bucket in buckets]
            for rows in self.db.query_all(queries):
                found.extend(_row_to_event(stream_id, row) for row in rows)
            return found if limit is None else found[:limit]
        for bucket in buckets:
            wanted = 2**31 - 1 if limit is None else limit - len(found)
            params = (stream_id, bucket, gt, upper, wanted)
            rows = self._serial_query(statement, params) if serial else self.db.query(statement, params)
            found.extend(_row_to_event(stream_id, row) for row in rows)
            if limit is not None and len(found) >= limit:
                break
        return found

    def stream_ids(self, *, after: str | None = None, limit: int = 1000) -> list[str]:
        """Streams in token order: the partitions of their first buckets, one page of partitions at a time."""
        found: list[str] = []
        if limit <= 0:
            return found
        cursor: tuple[str, int] | None = None if after is None else (after, 0)
        while len(found) < limit:
            page = max(limit - len(found), 100)
            if cursor is None:
                rows = list(self.db.query(self.sql.first_partitions, (page,)))
            else:
                rows = list(self.db.query(self.sql.next_partitions, (*cursor, page)))
            # Every stream has a bucket 0 (its first append goes there); later buckets are skipped.
            found.extend(row.stream_id for row in rows if row.bucket == 0)
            if len(rows) < page:
                break
            cursor = (rows[-1].stream_id, rows[-1].bucket)
        return found[:limit]

    def append_many(self, appends: Sequence[tuple[str, Sequence[NewEvent], int]]) -> list[int | EskitError]:
        """The appends at once (each its own conditional batch), a bounded number in flight."""
        from concurrent.futures import ThreadPoolExecutor

        if not appends:
            return []

        def one(stream_id: str, events: Sequence[NewEvent], expected: int) -> int | EskitError:
            try:
                return self.append(stream_id, events, expected_version=expected)
            except EskitError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=min(32, len(appends)), thread_name_prefix="eskit-append") as pool:
            futures = [pool.submit(one, *append) for append in appends]
        return [f.result() for f in futures]

    def _index_times(self, stream_id: str, times: dict[int, int]) -> None:
        """Record stride positions' times in the time index, without waiting: a missed entry costs only speed.

        One attempt each, sent and not awaited (off the command's path); an entry that did not land
        is read from the events and written again by the next read that lacks it.
        """
        for position, micros in times.items():

            def lost(exc: Exception, position: int = position) -> None:
                log.warning("time index of %s at %d not written: %s", stream_id, position, exc)

            try:
                future = self.db.session.execute_async(self.sql.insert_time.bind((stream_id, position, micros)))
                future.add_errback(lost)
            except Exception as exc:  # the session is closing: the index is repaired on read
                lost(exc)

    def recorded_times(self, stream_id: str, positions: Sequence[int]) -> dict[int, datetime]:
        """Stride positions from the time index (one partition); the rest, and any the index lacks,
        from the events: one query per bucket, all in flight at once (then the bucket before, for
        positions written by an append that spilled past its bucket's end)."""
        found: dict[int, datetime] = {}
        strided = [p for p in positions if (p - 1) % TIME_STRIDE == 0]
        if len(strided) > 1:
            for row in self.db.query(self.sql.select_indexed_times, (stream_id, strided)):
                found[row.position] = from_micros(row.recorded_at)
        wanted = [p for p in positions if p not in found]
        unindexed = [p for p in strided if p not in found] if len(strided) > 1 else []
        found.update(self._times_from_events(stream_id, wanted))
        # Repair the index where it lacked a position (an append whose index write failed, or older data).
        self._index_times(stream_id, {p: to_micros(found[p]) for p in unindexed if p in found})
        return found

    def _times_from_events(self, stream_id: str, positions: Sequence[int]) -> dict[int, datetime]:
        found: dict[int, datetime] = {}
        wanted = list(positions)
        for shift in (0, 1):
            by_bucket: dict[int, list[int]] = {}
            for position in wanted:
                bucket = (position - 1) // self.bucket_size - shift
                if bucket >= 0:
                    by_bucket.setdefault(bucket, []).append(position)
            queries = [(self.sql.select_times, (stream_id, b, ps)) for b, ps in by_bucket.items()]
            for rows in self.db.query_all(queries):
                for row in rows:
                    found[row.position] = from_micros(row.recorded_at)
            wanted = [p for p in wanted if p not in found]
            if not wanted:
                break
        return found

    def ping(self) -> None:
        """Ready when the local node answers; :class:`QuorumUnreachable` when appends would be refused."""
        self.db.query("SELECT release_version FROM system.local")
        self.gate.ready()

    def announce(self, stream_id: str, version: int) -> None:
        """Write the stream's feed hint at the durable level (a command found already done is answered again)."""
        # With one region the hint before the proposal is already on a quorum of all replicas.
        if self.feed is not None and self.feed.two_phase and version > 0:
            self.gate.check()
            try:
                self.feed.announce(stream_id, version, deadline=Deadline.for_command(self.db.settings.command_timeout))
            except OperationalError as exc:
                self.gate.failed(f"{type(exc).__name__} on a durable hint")
                raise

    def _probe(self) -> None:
        """One plain read at the durable level: it needs the same replicas an append needs."""
        statement = self.sql.probe.bind(())
        statement.consistency_level = self.db.write_cl
        self.db.session.execute(statement, timeout=min(1.0, self.db.settings.command_timeout))

    def close(self) -> None:
        self.db.close()
