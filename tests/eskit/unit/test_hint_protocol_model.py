"""A model of the Cassandra feed as built, "hint, then append", checked by hypothesis stateful testing.

This is the argument of ``eskit.stores.cassandra.feed`` and ``eskit.projection.StreamFollower``
made executable. Writers write a hint ``(stream, head they intend, writer)`` before their
conditional append, and delete their own hint after a definite refusal. Followers (any number at
once) list hinted streams, read a stream's committed head ``h``, read their checkpoint, write the
effects of the events after it up to ``h`` (idempotent: an effect written twice is one effect),
move the checkpoint (only forward), then delete the stream's hints up to ``h``. Any actor may stop
between any two of its steps (a crash: what it did so far stays, what it had not done never
happens). Invariants after every step: every committed event has its effect or is still covered
by a hint at or above it; effects are only of committed events, and cover each stream's
1..checkpoint; and once the writers stop, a follower applies everything.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

STREAMS = ("a", "b", "c")


@dataclass
class Append:
    stream: str
    expected: int
    count: int
    writer: int
    hinted: bool = False
    refused: bool = False


@dataclass
class FollowerStep:
    stream: str
    head: int | None = None
    checkpoint: int | None = None
    effects: bool = False
    moved: bool = False


class HintThenAppend(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.heads = dict.fromkeys(STREAMS, 0)  # committed events per stream (the conditional head)
        self.hints: set[tuple[str, int, int]] = set()  # (stream, head, writer)
        self.checkpoints = dict.fromkeys(STREAMS, 0)  # in the read model, beside its effects
        self.effects: dict[str, set[int]] = {s: set() for s in STREAMS}  # idempotent: a set
        self.appends: list[Append] = []
        self.steps: list[FollowerStep] = []
        self.writers = 0

    # -- writers ------------------------------------------------------------------------

    @rule(stream=st.sampled_from(STREAMS), count=st.integers(1, 3), stale=st.booleans())
    def begin_append(self, stream: str, count: int, stale: bool) -> None:
        """A writer read the head (possibly an old one) and means to append ``count`` events after it."""
        expected = max(0, self.heads[stream] - 1) if stale else self.heads[stream]
        self.writers += 1  # every attempt hints under an id of its own
        self.appends.append(Append(stream, expected, count, self.writers))

    @rule(data=st.data())
    def write_hint(self, data: st.DataObject) -> None:
        waiting = [a for a in self.appends if not a.hinted]
        if waiting:
            append = data.draw(st.sampled_from(waiting))
            self.hints.add((append.stream, append.expected + append.count, append.writer))  # plain quorum write
            append.hinted = True

    @rule(data=st.data())
    def propose(self, data: st.DataObject) -> None:
        """The conditional append (one Paxos round): only after its hint, and only at the expected head."""
        hinted = [a for a in self.appends if a.hinted and not a.refused]
        if hinted:
            append = data.draw(st.sampled_from(hinted))
            if self.heads[append.stream] == append.expected:
                self.heads[append.stream] = append.expected + append.count
                self.appends.remove(append)
            else:
                append.refused = True  # definitely not appended: it may now delete its own hint

    @rule(data=st.data())
    def refused_writer_deletes_its_hint(self, data: st.DataObject) -> None:
        refused = [a for a in self.appends if a.refused]
        if refused:
            append = data.draw(st.sampled_from(refused))
            self.appends.remove(append)
            self.hints.discard((append.stream, append.expected + append.count, append.writer))

    @rule(data=st.data())
    def writer_crashes(self, data: st.DataObject) -> None:
        if self.appends:
            self.appends.remove(data.draw(st.sampled_from(self.appends)))  # its hint, if written, stays

    # -- the follower -------------------------------------------------------------------

    @rule(data=st.data())
    def list_hinted_stream(self, data: st.DataObject) -> None:
        streams = sorted({s for s, _, _ in self.hints})
        if streams:
            self.steps.append(FollowerStep(data.draw(st.sampled_from(streams))))

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
            self.hints = {(s, h, w) for s, h, w in self.hints if not (s == step.stream and h <= step.head)}

    @rule(data=st.data())
    def follower_crashes(self, data: st.DataObject) -> None:
        if self.steps:
            self.steps.remove(data.draw(st.sampled_from(self.steps)))

    # -- what must hold -----------------------------------------------------------------

    @invariant()
    def every_committed_event_is_applied_or_still_hinted(self) -> None:
        for stream, head in self.heads.items():
            for position in range(1, head + 1):
                if position not in self.effects[stream]:
                    assert any(s == stream and h >= position for s, h, _ in self.hints), (stream, position)

    @invariant()
    def effects_are_of_committed_events_and_cover_the_checkpoint(self) -> None:
        for stream in STREAMS:
            assert self.effects[stream] <= set(range(1, self.heads[stream] + 1))
            assert set(range(1, self.checkpoints[stream] + 1)) <= self.effects[stream]
            assert self.checkpoints[stream] <= self.heads[stream]

    def teardown(self) -> None:
        """The writers stop; a follower that keeps going applies every committed event."""
        if not hasattr(self, "heads"):
            return
        self.appends.clear()
        for _ in range(2 * len(STREAMS) + len(self.hints)):
            for stream in sorted({s for s, _, _ in self.hints}):
                head = self.heads[stream]
                self.effects[stream] |= set(range(self.checkpoints[stream] + 1, head + 1))
                self.checkpoints[stream] = max(self.checkpoints[stream], head)
                self.hints = {(s, h, w) for s, h, w in self.hints if not (s == stream and h <= head)}
        assert self.checkpoints == self.heads
        assert all(self.effects[s] == set(range(1, self.heads[s] + 1)) for s in STREAMS)


TestHintThenAppend = HintThenAppend.TestCase
TestHintThenAppend.settings = settings(max_examples=500, stateful_step_count=40, deadline=None)
