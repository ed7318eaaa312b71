"""A model of the Cassandra feed as built, "hint, then append", checked by hypothesis stateful testing.

This is the argument of ``eskit.stores.cassandra.feed`` and ``eskit.projection.StreamFollower``
made executable, with regions. A writer in some region writes a *local* hint ``(stream, head it
intends, writer)`` before its conditional append (on its own region's replicas only), and the same
hint *durably* (on a quorum of all regions) at any moment after that, alongside the Paxos round.
It acknowledges its command only once the append committed and the durable hint is written, and
deletes its own hint after a definite refusal. A local hint reaches the other regions later (the
cluster's own replication), unless its region is lost first: losing a region destroys the hints
that were only there, and stops its writers. A client whose command was not acknowledged retries
it under its key; when the command is found already done, the durable hint of the stream's head is
written (``announce``) before the answer.

Followers (any number at once) list hinted streams, read a stream's committed head ``h``, read
their checkpoint, write the effects of the events after it up to ``h`` (idempotent), move the
checkpoint (only forward), then delete the stream's hints up to ``h``. The backstop sweep does the
same for a stream without looking at hints. Any actor may stop between any two of its steps.

Invariants after every step: every *acknowledged* event has its effect or is covered by a durable
hint at or above it, so no loss of a region can make the feed miss it; every committed event has
its effect, or is covered by some hint, or is one the loss of a region left unannounced and nobody
was told of (the window the backstop sweep, or the stream's next append, closes); effects are only
of committed events. Once the writers stop, followers plus one backstop sweep apply everything.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

STREAMS = ("a", "b", "c")
REGIONS = (1, 2, 3)


@dataclass(frozen=True)
class Hint:
    stream: str
    head: int
    writer: int
    region: int
    durable: bool  # on a quorum of all regions (survives any one region); else only in ``region``


@dataclass
class Append:
    stream: str
    expected: int
    count: int
    writer: int
    region: int
    local: bool = False  # local hint written (the append may be proposed)
    durable: bool = False  # durable hint written
    committed: bool = False
    refused: bool = False

    @property
    def head(self) -> int:
        return self.expected + self.count


@dataclass
class FollowerStep:
    stream: str
    head: int | None = None
    checkpoint: int | None = None
    effects: bool = False
    moved: bool = False


class HintThenAppend(RuleBasedStateMachine):
    #: the writer acknowledges only once its durable hint is written (the design); a broken variant
    #: sets it False to show the model catches it
    ack_needs_durable_hint = True

    @initialize()
    def start(self) -> None:
        self.heads = dict.fromkeys(STREAMS, 0)  # committed events per stream (the conditional head)
        self.hints: set[Hint] = set()
        self.checkpoints = dict.fromkeys(STREAMS, 0)  # in the read model, beside its effects
        self.effects: dict[str, set[int]] = {s: set() for s in STREAMS}  # idempotent: a set
        self.appends: list[Append] = []
        self.acked: set[tuple[str, int]] = set()  # (stream, position) of every acknowledged event
        self.unacked: list[Append] = []  # committed appends nobody was told of (their clients retry)
        self.lost = False  # a region was lost (at most one: two would lose the global quorum)
        self.steps: list[FollowerStep] = []
        self.writers = 0

    def _alive(self, region: int) -> bool:
        return not self.lost or region != self.lost_region

    # -- writers ------------------------------------------------------------------------

    @rule(
        stream=st.sampled_from(STREAMS), count=st.integers(1, 3), stale=st.booleans(), region=st.sampled_from(REGIONS)
    )
    def begin_append(self, stream: str, count: int, stale: bool, region: int) -> None:
        """A writer read the head (possibly an old one) and means to append ``count`` events after it."""
        if not self._alive(region):
            return
        expected = max(0, self.heads[stream] - 1) if stale else self.heads[stream]
        self.writers += 1  # every attempt hints under an id of its own
        self.appends.append(Append(stream, expected, count, self.writers, region))

    @rule(data=st.data())
    def write_local_hint(self, data: st.DataObject) -> None:
        waiting = [a for a in self.appends if not a.local]
        if waiting:
            append = data.draw(st.sampled_from(waiting))
            self.hints.add(Hint(append.stream, append.head, append.writer, append.region, durable=False))
            append.local = True

    @rule(data=st.data())
    def write_durable_hint(self, data: st.DataObject) -> None:
        """Alongside the Paxos round: before, during or after it (never before the local hint)."""
        waiting = [a for a in self.appends if a.local and not a.durable and not a.refused]
        if waiting:
            append = data.draw(st.sampled_from(waiting))
            self.hints.add(Hint(append.stream, append.head, append.writer, append.region, durable=True))
            append.durable = True

    @rule(data=st.data())
    def propose(self, data: st.DataObject) -> None:
        """The conditional append (one Paxos round, on a global quorum): only after the local hint."""
        hinted = [a for a in self.appends if a.local and not a.committed and not a.refused]
        if hinted:
            append = data.draw(st.sampled_from(hinted))
            if self.heads[append.stream] == append.expected:
                self.heads[append.stream] = append.head
                append.committed = True
            else:
                append.refused = True  # definitely not appended: it may now delete its own hint

    @rule(data=st.data())
    def acknowledge(self, data: st.DataObject) -> None:
        ready = [a for a in self.appends if a.committed and (a.durable or not self.ack_needs_durable_hint)]
        if ready:
            append = data.draw(st.sampled_from(ready))
            self.appends.remove(append)
            self.acked |= {(append.stream, p) for p in range(append.expected + 1, append.head + 1)}

    @rule(data=st.data())
    def refused_writer_deletes_its_hint(self, data: st.DataObject) -> None:
        refused = [a for a in self.appends if a.refused]
        if refused:
            append = data.draw(st.sampled_from(refused))
            self.appends.remove(append)
            self.hints = {h for h in self.hints if h.writer != append.writer}

    @rule(data=st.data())
    def writer_crashes(self, data: st.DataObject) -> None:
        """The process dies (or answers 503): its hints stay; a committed append is now unknown to its client."""
        if self.appends:
            append = data.draw(st.sampled_from(self.appends))
            self.appends.remove(append)
            if append.committed:
                self.unacked.append(append)

    @rule(data=st.data())
    def client_retry_finds_it_done(self, data: st.DataObject) -> None:
        """The retry under its key finds the command stored: the stream's head is announced durably, then acked."""
        if self.unacked:
            append = data.draw(st.sampled_from(self.unacked))
            self.unacked.remove(append)
            self.writers += 1
            head = self.heads[append.stream]  # the retry reads the stream: at or above the append
            self.hints.add(Hint(append.stream, head, self.writers, 0, durable=True))
            self.acked |= {(append.stream, p) for p in range(append.expected + 1, append.head + 1)}

    # -- the cluster --------------------------------------------------------------------

    @rule(data=st.data())
    def local_hint_replicates(self, data: st.DataObject) -> None:
        """The cluster copies a local hint to the other regions (a QUORUM-visible copy) in time."""
        local = sorted((h for h in self.hints if not h.durable), key=repr)
        if local:
            hint = data.draw(st.sampled_from(local))
            self.hints.add(Hint(hint.stream, hint.head, hint.writer, hint.region, durable=True))

    @rule(region=st.sampled_from(REGIONS))
    def lose_region(self, region: int) -> None:
        """A whole region is gone: hints only there are lost, its writers stop mid-way."""
        if self.lost:
            return
        self.lost, self.lost_region = True, region
        self.hints = {h for h in self.hints if h.durable or h.region != region}
        for append in [a for a in self.appends if a.region == region]:
            self.appends.remove(append)
            if append.committed:
                self.unacked.append(append)

    # -- the follower -------------------------------------------------------------------

    @rule(data=st.data())
    def list_hinted_stream(self, data: st.DataObject) -> None:
        streams = sorted({h.stream for h in self.hints})
        if streams:
            self.steps.append(FollowerStep(data.draw(st.sampled_from(streams))))

    @rule(stream=st.sampled_from(STREAMS))
    def backstop_sweep(self, stream: str) -> None:
        """The occasional sweep over every stream: a follower step that needs no hint."""
        self.steps.append(FollowerStep(stream))

    @rule(data=st.data())
    def read_head(self, data: st.DataObject) -> None:
        pending = [s for s in self.steps if s.head is None]
        if pending:
            step = data.draw(st.sampled_from(pending))
            step.head = self.heads[step.stream]

    @rule(data=st.data())
    def read_checkpoint(self, data: st.DataObject) -> None:
        ready = [s for s in self.steps if s.head is not None and s.checkpoint is None]
        if ready:
            step = data.draw(st.sampled_from(ready))
            step.checkpoint = self.checkpoints[step.stream]

    @rule(data=st.data())
    def write_effects(self, data: st.DataObject) -> None:
        """The events after the checkpoint read, up to the head read: written again if already there."""
        ready = [s for s in self.steps if s.checkpoint is not None and not s.effects]
        if ready:
            step = data.draw(st.sampled_from(ready))
            assert step.head is not None and step.checkpoint is not None
            self.effects[step.stream] |= set(range(step.checkpoint + 1, step.head + 1))
            step.effects = True

    @rule(data=st.data())
    def move_checkpoint(self, data: st.DataObject) -> None:
        """Written at the head as its timestamp: the highest write wins, so it never goes back."""
        ready = [s for s in self.steps if s.effects and not s.moved]
        if ready:
            step = data.draw(st.sampled_from(ready))
            assert step.head is not None
            self.checkpoints[step.stream] = max(self.checkpoints[step.stream], step.head)
            step.moved = True

    @rule(data=st.data())
    def delete_hints_up_to_head(self, data: st.DataObject) -> None:
        done = [s for s in self.steps if s.moved]
        if done:
            step = data.draw(st.sampled_from(done))
            self.steps.remove(step)
            assert step.head is not None
            self.hints = {h for h in self.hints if not (h.stream == step.stream and h.head <= step.head)}

    @rule(data=st.data())
    def follower_crashes(self, data: st.DataObject) -> None:
        if self.steps:
            self.steps.remove(data.draw(st.sampled_from(self.steps)))

    # -- what must hold -----------------------------------------------------------------

    def _covered(self, stream: str, position: int, *, durable: bool) -> bool:
        return any(h.stream == stream and h.head >= position and (h.durable or not durable) for h in self.hints)

    @invariant()
    def every_acknowledged_event_is_applied_or_durably_hinted(self) -> None:
        """So that losing any one region cannot hide it from the feed."""
        for stream, position in self.acked:
            if position not in self.effects[stream]:
                assert self._covered(stream, position, durable=True), (stream, position)

    @invariant()
    def every_committed_event_is_applied_hinted_or_unknown_to_everyone(self) -> None:
        for stream, head in self.heads.items():
            for position in range(1, head + 1):
                if position in self.effects[stream] or self._covered(stream, position, durable=False):
                    continue
                # Only the loss of a region removes a hint no settle removed: the append's client was
                # never told, and the backstop (or the stream's next append) brings it to the feed.
                assert self.lost and (stream, position) not in self.acked, (stream, position)

    @invariant()
    def effects_are_of_committed_events_and_cover_the_checkpoint(self) -> None:
        for stream in STREAMS:
            assert self.effects[stream] <= set(range(1, self.heads[stream] + 1))
            assert set(range(1, self.checkpoints[stream] + 1)) <= self.effects[stream]
            assert self.checkpoints[stream] <= self.heads[stream]

    def teardown(self) -> None:
        """The writers stop; a follower that keeps going, plus one backstop sweep, applies every committed event."""
        if not hasattr(self, "heads"):
            return
        self.appends.clear()
        for stream in STREAMS:  # the backstop sweep
            self.effects[stream] |= set(range(self.checkpoints[stream] + 1, self.heads[stream] + 1))
            self.checkpoints[stream] = self.heads[stream]
        for _ in range(2 * len(STREAMS) + len(self.hints)):
            for stream in sorted({h.stream for h in self.hints}):
                head = self.heads[stream]
                self.effects[stream] |= set(range(self.checkpoints[stream] + 1, head + 1))
                self.checkpoints[stream] = max(self.checkpoints[stream], head)
                self.hints = {h for h in self.hints if not (h.stream == stream and h.head <= head)}
        assert self.checkpoints == self.heads
        assert all(self.effects[s] == set(range(1, self.heads[s] + 1)) for s in STREAMS)


TestHintThenAppend = HintThenAppend.TestCase
TestHintThenAppend.settings = settings(max_examples=500, stateful_step_count=40, deadline=None)


class AcknowledgedOnTheLocalHintAlone(HintThenAppend):
    """The design without its second half: an append acknowledged before its durable hint is written."""

    ack_needs_durable_hint = False


def test_the_model_catches_an_append_acknowledged_before_its_hint_is_durable() -> None:
    with pytest.raises(AssertionError):
        run_state_machine_as_test(
            AcknowledgedOnTheLocalHintAlone,
            # The first counterexample is enough (no shrinking): it is the broken variant that fails.
            settings=settings(
                max_examples=2000, stateful_step_count=40, deadline=None, database=None, phases=[Phase.generate]
            ),
        )
