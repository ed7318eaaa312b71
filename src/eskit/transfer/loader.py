"""Writing events at their exact positions into a target store, in bulk, idempotently.

The loader takes events in any order that keeps each stream's positions
ascending, gathers runs of one stream's consecutive events and writes each run with
:meth:`~eskit.ports.EventStore.append_many` at ``expected_version = first
position - 1``. A write is therefore only ever accepted at the right place:
an event the target holds already (a resumed run) makes its group conflict,
and the conflicting streams are then brought up one by one: events the target
holds are skipped once their ids prove them the same events, and a target that
holds different events at those positions stops the load (:class:`Diverged`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from eskit.events import NewEvent
from eskit.exceptions import ConcurrencyError, EskitError
from eskit.ports import EventStore

__all__ = ["Diverged", "Loader", "MissingEvents"]

#: events per append: within every store's batch limit, large enough to amortise a round trip
MAX_APPEND = 100


class Diverged(EskitError):
    """The target holds other events than the source at the same positions of a stream."""


class MissingEvents(EskitError):
    """The target lacks events of a stream before the ones about to be written, and no source can fill them."""


#: reads events ``(gt, lte]`` of a stream from the source, for filling a gap in the target
Fill = Callable[[str, int, int], Sequence[NewEvent]]


@dataclass
class Loader:
    """Buffers events and writes them in batches; call :meth:`flush` at the end.

    ``max_events`` bounds what is buffered (memory stays flat). A store whose
    ``append_many`` commits in order (memory, SQLite: one transaction) gets
    runs of consecutive same-stream events in the order they came, so the
    target's commit order across streams is the source's (a read side rebuilt
    there meets a title's event before the accounts' events that need it). A
    store that runs the appends of a call at once (``concurrent_appends``,
    Cassandra, where there is no order across streams to keep) gets each
    stream at most once per call, so a stream never races itself.
    """

    target: EventStore
    fill: Fill | None = None
    max_events: int = 2000
    written: int = 0  # events this loader wrote
    skipped: int = 0  # events the target held already
    _runs: list[tuple[str, int, list[NewEvent]]] = field(default_factory=list)
    _streams: set[str] = field(default_factory=set)
    _buffered: int = 0

    @property
    def ordered(self) -> bool:
        return not getattr(self.target, "concurrent_appends", False)

    def add(self, stream_id: str, position: int, event: NewEvent) -> None:
        last = self._runs[-1] if self._runs else None
        if last is not None and last[0] == stream_id and last[1] + len(last[2]) == position:
            if len(last[2]) < MAX_APPEND:
                last[2].append(event)
                self._count()
                return
            self.flush()  # a long run: one append of MAX_APPEND at a time
        elif stream_id in self._streams and not self.ordered:
            self.flush()  # this stream is in the batch already: it may not race itself
        self._runs.append((stream_id, position, [event]))
        self._streams.add(stream_id)
        self._count()

    def _count(self) -> None:
        self._buffered += 1
        if self._buffered >= self.max_events:
            self.flush()

    def flush(self) -> None:
        if not self._runs:
            return
        groups, self._runs, self._streams, self._buffered = self._runs, [], set(), 0
        answers = self.target.append_many([(sid, events, first - 1) for sid, first, events in groups])
        failed = [a for a in answers if isinstance(a, EskitError) and not isinstance(a, ConcurrencyError)]
        for (sid, first, events), answer in zip(groups, answers, strict=True):
            if isinstance(answer, ConcurrencyError):
                # The stream holds some of these events already (a resumed run): bring it up on its own.
                self._bring_up(sid, first, events)
            elif not isinstance(answer, EskitError):
                self.written += len(events)
        if failed:
            raise failed[0]

    def _bring_up(self, stream_id: str, first: int, events: list[NewEvent]) -> None:
        last = first + len(events) - 1
        held = self.target.version(stream_id)
        if held < first - 1:
            if self.fill is None:
                raise MissingEvents(
                    f"the target's stream {stream_id!r} ends at position {held}, before {first - 1}: "
                    "it was written by something else than this load"
                )
            missing = list(self.fill(stream_id, held, first - 1))
            if len(missing) != first - 1 - held:
                raise MissingEvents(f"the source no longer holds positions {held + 1}..{first - 1} of {stream_id!r}")
            events, first = [*missing, *events], held + 1
        overlap = min(held, last)
        if overlap >= first:
            there = self.target.read(stream_id, gt=first - 1, lte=overlap)
            for stored, ours in zip(there, events, strict=False):
                if stored.event_id != ours.event_id:
                    raise Diverged(
                        f"the target's stream {stream_id!r} holds another event at position {stored.position} "
                        f"({stored.event_id}) than the source ({ours.event_id})"
                    )
            self.skipped += overlap - first + 1
        rest = events[max(0, overlap - first + 1) :]
        for start in range(0, len(rest), MAX_APPEND):
            chunk = rest[start : start + MAX_APPEND]
            self.target.append(stream_id, chunk, expected_version=max(held, first - 1) + start)
            self.written += len(chunk)
