"""Checking a store: every stream decodes, positions are contiguous, snapshots equal their folds.

:func:`verify_store` walks every stream once, page by page (memory flat in store
size), and for each:

* reads its events and checks their positions run 1, 2, 3 ... with no gap;
* decodes each with today's codec (upcasters applied);
* folds them into the stream's aggregate (the repository whose prefix the stream
  id has), calling ``inspect(aggregate, recorded)`` before each event is applied
  so an application can re-check its rules against the state that event met;
* loads every stored snapshot and compares it with the fold at its version.

Problems are reported, never repaired: a :class:`VerifyReport` counts them by
kind and keeps the first ``keep`` of them. Whatever a stream holds, the walk goes
on: an event that cannot be read back is an ``unreadable`` problem (and the
stream is read on after it), an event the state cannot take is a ``fold``
problem, a rule check or a snapshot that fails on odd state is a problem of its
kind. Only a failure of the store itself (:class:`~eskit.exceptions.OperationalError`)
stops the walk.

A stream whose key was erased (:mod:`eskit.privacy`) is counted as *erased*, not
as damage: its events decode with their personal fields erased and fold as
usual, but the application's rule check is not run on them (it would judge
erased values), and a snapshot that still stands for it is a problem (an
erasure that did not finish). Events of an erased stream that were written in
clear, before the stream was sealed, are counted apart: their personal fields
are still in the store's rows (history is never rewritten).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from eskit.aggregate import Aggregate
from eskit.codec import EventCodec
from eskit.events import StoredEvent
from eskit.exceptions import DamagedEvent, EskitError, OperationalError
from eskit.ports import EventStore, SnapshotStore
from eskit.privacy import ErasedKey
from eskit.privacy.keys import StreamKey
from eskit.repository import RecordedEvent, Repository

__all__ = ["Inspect", "Problem", "VerifyReport", "verify_store"]

_PAGE = 1000

#: an application's check of one event against the state before it: the problems it finds
Inspect = Callable[[Aggregate, RecordedEvent], Sequence[str]]


@dataclass(frozen=True)
class Problem:
    """One thing found wrong: its kind (``gap``, ``undecodable``, ``snapshot``, ``rule`` ...), where, and what."""

    kind: str
    stream_id: str
    position: int | None
    message: str

    def __str__(self) -> str:
        where = self.stream_id if self.position is None else f"{self.stream_id}@{self.position}"
        return f"{self.kind}: {where}: {self.message}"


@dataclass
class VerifyReport:
    """Counts of what was checked and of the problems found, with the first ``keep`` problems."""

    keep: int = 50
    streams: int = 0
    events: int = 0
    snapshots: int = 0
    #: streams whose key was erased (their personal fields cannot be read again: not damage)
    erased: int = 0
    #: events of erased streams written in clear before their stream was sealed (still readable in the rows)
    erased_in_clear: int = 0
    problems: list[Problem] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, problem: Problem) -> None:
        self.counts[problem.kind] += 1
        if len(self.problems) < self.keep:
            self.problems.append(problem)

    @property
    def sound(self) -> bool:
        return not self.counts

    @property
    def total_problems(self) -> int:
        return sum(self.counts.values())


def _walk(store: EventStore) -> Iterator[str]:
    after: str | None = None
    while page := store.stream_ids(after=after, limit=_PAGE):
        yield from page
        after = page[-1]


def _snapshot_versions(snapshots: SnapshotStore, stream_id: str) -> list[int]:
    """Every stored snapshot's version, oldest first."""
    return snapshots.versions(stream_id)


def verify_store(
    events: EventStore,
    codec: EventCodec,
    repositories: Sequence[Repository[Any]],
    *,
    snapshots: SnapshotStore | None = None,
    inspect: Inspect | None = None,
    report: VerifyReport | None = None,
    advance: Callable[[int], None] = lambda _n: None,
) -> VerifyReport:
    """Check every stream of ``events`` (see the module docstring); ``advance`` is told of each stream done."""
    report = report or VerifyReport()
    for stream_id in _walk(events):
        try:
            _verify_stream(stream_id, events, codec, repositories, snapshots, inspect, report)
        except OperationalError:
            raise  # the store failed, not the stream: nothing more can be checked
        except Exception as exc:  # whatever else the stream's content provokes is a finding, not the end
            report.add(Problem("unreadable", stream_id, None, f"{type(exc).__name__}: {exc}"))
        report.streams += 1
        advance(1)
    return report


def _pages(events: EventStore, stream_id: str) -> Iterator[tuple[list[StoredEvent], DamagedEvent | None]]:
    """The stream's events page by page; a page that meets an event that cannot be read back ends before
    it and comes with the error, and the next page starts after it."""
    gt = 0
    while True:
        try:
            page = events.read(stream_id, gt=gt, limit=_PAGE)
            damaged = None
        except DamagedEvent as exc:
            if exc.position <= gt:
                raise
            page = events.read(stream_id, gt=gt, lte=exc.position - 1) if exc.position > gt + 1 else []
            damaged = exc
        if not page and damaged is None:
            return
        yield page, damaged
        gt = damaged.position if damaged is not None else page[-1].position


def _repository_for(stream_id: str, repositories: Sequence[Repository[Any]]) -> Repository[Any] | None:
    matching = [r for r in repositories if stream_id.startswith(r.stream_prefix)]
    return max(matching, key=lambda r: len(r.stream_prefix), default=None)


def _verify_stream(
    stream_id: str,
    events: EventStore,
    codec: EventCodec,
    repositories: Sequence[Repository[Any]],
    snapshots: SnapshotStore | None,
    inspect: Inspect | None,
    report: VerifyReport,
) -> None:
    repository = _repository_for(stream_id, repositories)
    aggregate: Aggregate | None = None
    key: StreamKey = repository.stream_key(stream_id) if repository is not None else None
    erased = isinstance(key, ErasedKey)
    if repository is not None:
        aggregate = repository.aggregate_cls(stream_id[len(repository.stream_prefix) :])
        aggregate.stream_key = key
    pending = _snapshot_versions(snapshots, stream_id) if snapshots is not None and repository is not None else []
    report.snapshots += len(pending)
    if erased:
        report.erased += 1
        for version in pending:
            report.add(Problem("erasure", stream_id, version, "a snapshot of an erased stream remains: erase it again"))
        pending = []
    expected = 1
    for page, damaged in _pages(events, stream_id):
        for stored in page:
            report.events += 1
            if stored.position != expected:
                _gap(report, stream_id, expected, stored.position)
                aggregate = None  # a fold with a hole in it proves nothing more
            expected = stored.position + 1
            recorded = _decode(codec, stored, report, key)
            if recorded is None:
                aggregate = None
                continue
            if erased and codec.clear_personal(stored):
                report.erased_in_clear += 1
            if aggregate is not None:
                aggregate = _fold(aggregate, recorded, stream_id, None if erased else inspect, report)
            while aggregate is not None and pending and pending[0] == stored.position:
                assert repository is not None and snapshots is not None
                _compare_snapshot(repository, snapshots, aggregate, pending.pop(0), report)
        if damaged is not None:
            report.events += 1
            if damaged.position != expected:
                _gap(report, stream_id, expected, damaged.position)
            report.add(Problem("unreadable", stream_id, damaged.position, damaged.reason))
            aggregate, expected = None, damaged.position + 1
    for version in pending:
        if version >= expected:
            report.add(
                Problem("snapshot", stream_id, version, f"a snapshot at version {version}, past the stream's end")
            )


def _gap(report: VerifyReport, stream_id: str, expected: int, found: int) -> None:
    report.add(Problem("gap", stream_id, found, f"positions jump from {expected - 1} to {found}: events are missing"))


def _decode(codec: EventCodec, stored: StoredEvent, report: VerifyReport, key: StreamKey) -> RecordedEvent | None:
    try:
        event, metadata = codec.decode(stored, key=key)
    except (EskitError, ValueError, TypeError, KeyError) as exc:
        report.add(Problem("undecodable", stored.stream_id, stored.position, f"{stored.type_name}: {exc}"))
        return None
    return RecordedEvent(stored.position, stored.type_name, event, metadata, stored.schema_version)


def _fold(
    aggregate: Aggregate, recorded: RecordedEvent, stream_id: str, inspect: Inspect | None, report: VerifyReport
) -> Aggregate | None:
    if inspect is not None:
        try:
            messages = list(inspect(aggregate, recorded))
        except Exception as exc:  # odd state the rules were not written for: a finding too
            messages = [f"{recorded.type_name}: the rules cannot be checked against it: {type(exc).__name__}: {exc}"]
        for message in messages:
            report.add(Problem("rule", stream_id, recorded.position, message))
    try:
        aggregate.replay(recorded.event, recorded.metadata)
    except Exception as exc:  # an event the state cannot take (a license that was never issued ...)
        report.add(Problem("fold", stream_id, recorded.position, f"{recorded.type_name} cannot apply: {exc!r}"))
        return None
    return aggregate


def _compare_snapshot(
    repository: Repository[Any], snapshots: SnapshotStore, aggregate: Aggregate, version: int, report: VerifyReport
) -> None:
    stream_id = repository.stream_id(aggregate.id)
    try:
        _compare(repository, snapshots, aggregate, stream_id, version, report)
    except OperationalError:
        raise
    except Exception as exc:  # a snapshot row no save writes, or a state that will not serialize
        report.add(Problem("snapshot", stream_id, version, f"cannot be compared: {type(exc).__name__}: {exc}"))


def _compare(
    repository: Repository[Any],
    snapshots: SnapshotStore,
    aggregate: Aggregate,
    stream_id: str,
    version: int,
    report: VerifyReport,
) -> None:
    snapshot = snapshots.load(stream_id, lte=version)
    if snapshot is None or snapshot.version != version:
        return  # removed meanwhile
    serializer = repository.codec.serializer
    try:
        stored = serializer.loads(repository.open_snapshot(snapshot, aggregate.stream_key))
    except (EskitError, ValueError) as exc:
        report.add(Problem("snapshot", stream_id, version, f"unreadable: {exc}"))
        return
    if snapshot.schema_version != type(aggregate).snapshot_version:
        return  # an older schema: the repository upcasts or ignores it, the events decide
    folded = serializer.loads(serializer.dumps(aggregate.to_snapshot()))
    if stored != folded:
        differing = sorted(k for k in set(stored) | set(folded) if stored.get(k) != folded.get(k))
        report.add(
            Problem(
                "snapshot",
                stream_id,
                version,
                f"differs from the fold of its events (in {', '.join(map(str, differing)) or 'its shape'})",
            )
        )
