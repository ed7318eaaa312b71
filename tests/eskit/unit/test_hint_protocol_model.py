"""A model of the Cassandra feed design, "hint, then append", checked by hypothesis stateful testing.

The Cassandra feed is not built yet (see docs/read-side.md); this model is the argument it will be
built on, made executable. Writers write a hint ``(stream, head they intend)`` before their
conditional append; a follower lists hinted streams, reads a stream's committed head ``h``, applies
the events after its per-stream checkpoint up to ``h`` (checkpoint and effect together), then
deletes the stream's hints up to ``h``. Any actor may stop between any two of its steps (a crash:
what it did so far stays, what it had not done never happens). Invariants after every step: every
committed event is applied or still covered by a hint at or above it; applied events are each
stream's 1..checkpoint, once, in order; and once the writers stop, a follower applies everything.
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
    hinted: bool = False


@dataclass
class FollowerStep:
    stream: str
    head: int | None = None
    applied: bool = False


class HintThenAppend(RuleBasedStateMachine):
    @initialize()
    def start(self) -> None:
        self.heads = dict.fromkeys(STREAMS, 0)  # committed events per stream (the conditional head)
        self.hints: set[tuple[str, int]] = set()
        self.checkpoints = dict.fromkeys(STREAMS, 0)  # in the read model, changed with its effect
        self.applied: dict[str, list[int]] = {s: [] for s in STREAMS}
        self.appends: list[Append] = []
        self.steps: list[FollowerStep] = []

    # -- writers ------------------------------------------------------------------------

    @rule(stream=st.sampled_from(STREAMS), count=st.integers(1, 3), stale=st.booleans())
    def begin_append(self, stream: str, count: int, stale: bool) -> None:
        """A writer read the head (possibly an old one) and means to append ``count`` events after it."""
        expected = max(0, self.heads[stream] - 1) if stale else self.heads[stream]
        self.appends.append(Append(stream, expected, count))

    @rule(data=st.data())
    def write_hint(self, data: st.DataObject) -> None:
        waiting = [a for a in self.appends if not a.hinted]
        if waiting:
            append = data.draw(st.sampled_from(waiting))
            self.hints.add((append.stream, append.expected + append.count))  # a plain quorum write
            append.hinted = True

    @rule(data=st.data())
    def propose(self, data: st.DataObject) -> None:
        """The conditional append (one Paxos round): only after its hint, and only at the expected head."""
        hinted = [a for a in self.appends if a.hinted]
        if hinted:
            append = data.draw(st.sampled_from(hinted))
            self.appends.remove(append)
            if self.heads[append.stream] == append.expected:
                self.heads[append.stream] = append.expected + append.count

    @rule(data=st.data())
    def writer_crashes(self, data: st.DataObject) -> None:
        if self.appends:
            self.appends.remove(data.draw(st.sampled_from(self.appends)))  # its hint, if written, stays

    # -- the follower -------------------------------------------------------------------

    @rule(data=st.data())
    def list_hinted_stream(self, data: st.DataObject) -> None:
        streams = sorted({s for s, _ in self.hints})
        if streams:
            self.steps.append(FollowerStep(data.draw(st.sampled_from(streams))))

    @rule(data=st.data())
    def read_head(self, data: st.DataObject) -> None:
        pending = [s for s in self.steps if s.head is None]
        if pending:
            step = data.draw(st.sampled_from(pending))
            step.head = self.heads[step.stream]

    @rule(data=st.data())
    def apply_up_to_head(self, data: st.DataObject) -> None:
        ready = [s for s in self.steps if s.head is not None and not s.applied]
        if ready:
            step = data.draw(st.sampled_from(ready))
            checkpoint = self.checkpoints[step.stream]
            # one transaction: the effect and the checkpoint, applied only from where the checkpoint is
            self.applied[step.stream].extend(range(checkpoint + 1, max(checkpoint, step.head or 0) + 1))
            self.checkpoints[step.stream] = max(checkpoint, step.head or 0)
            step.applied = True

    @rule(data=st.data())
    def delete_hints_up_to_head(self, data: st.DataObject) -> None:
        done = [s for s in self.steps if s.applied]
        if done:
            step = data.draw(st.sampled_from(done))
            self.steps.remove(step)
            assert step.head is not None
            self.hints = {(s, h) for s, h in self.hints if not (s == step.stream and h <= step.head)}

    @rule(data=st.data())
    def follower_crashes(self, data: st.DataObject) -> None:
        if self.steps:
            self.steps.remove(data.draw(st.sampled_from(self.steps)))

    # -- what must hold -----------------------------------------------------------------

    @invariant()
    def every_committed_event_is_applied_or_still_hinted(self) -> None:
        for stream, head in self.heads.items():
            for position in range(self.checkpoints[stream] + 1, head + 1):
                assert any(s == stream and h >= position for s, h in self.hints), (stream, position, self.hints)

    @invariant()
    def applied_events_are_each_streams_prefix_once_in_order(self) -> None:
        for stream in STREAMS:
            assert self.applied[stream] == list(range(1, self.checkpoints[stream] + 1))
            assert self.checkpoints[stream] <= self.heads[stream]

    def teardown(self) -> None:
        """The writers stop; a follower that keeps going applies every committed event."""
        if not hasattr(self, "heads"):
            return
        self.appends.clear()
        for _ in range(2 * len(STREAMS) + len(self.hints)):
            for stream in sorted({s for s, _ in self.hints}):
                head = self.heads[stream]
                self.applied[stream].extend(range(self.checkpoints[stream] + 1, head + 1))
                self.checkpoints[stream] = max(self.checkpoints[stream], head)
                self.hints = {(s, h) for s, h in self.hints if not (s == stream and h <= head)}
        assert self.checkpoints == self.heads


TestHintThenAppend = HintThenAppend.TestCase
TestHintThenAppend.settings = settings(max_examples=500, stateful_step_count=40, deadline=None)
