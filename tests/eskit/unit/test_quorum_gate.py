"""The quorum gate of the Cassandra store: fast refusals while cut off, a cheap probe to learn it is over."""

from __future__ import annotations

import threading

import pytest

from eskit import QuorumUnreachable
from eskit.stores.cassandra.gate import QuorumGate


class Cluster:
    """What the probe finds (reachable or not), and how many probes were sent."""

    def __init__(self) -> None:
        self.reachable = True
        self.probes = 0
        self.now = 0.0

    def probe(self) -> None:
        self.probes += 1
        if not self.reachable:
            raise TimeoutError("no answer from the other regions")

    def clock(self) -> float:
        return self.now


def test_a_failed_append_in_a_healthy_cluster_leaves_the_gate_open() -> None:
    cluster = Cluster()
    gate = QuorumGate(cluster.probe, clock=cluster.clock)

    gate.failed("a contended append timed out")

    assert gate.is_open and cluster.probes == 1
    gate.check()  # appends go ahead


def test_while_cut_off_appends_are_refused_without_a_request_and_one_probe_per_interval_reopens() -> None:
    cluster = Cluster()
    gate = QuorumGate(cluster.probe, interval=1.0, clock=cluster.clock)
    cluster.reachable = False
    gate.failed("Unavailable on an append")
    assert not gate.is_open

    for _ in range(100):
        with pytest.raises(QuorumUnreachable, match="reads still answer"):
            gate.check()
    assert cluster.probes == 1  # refused from memory

    cluster.now = 1.5
    with pytest.raises(QuorumUnreachable):
        gate.check()  # this caller probes: still cut off
    with pytest.raises(QuorumUnreachable):
        gate.check()  # the next ones wait for the next interval
    assert cluster.probes == 2

    cluster.reachable = True
    cluster.now = 3.0
    gate.check()  # the probe succeeds: this append goes ahead, and so do the next
    gate.check()
    assert gate.is_open and cluster.probes == 3


def test_readiness_probes_when_nothing_told_the_gate_how_the_cluster_is_for_an_interval() -> None:
    cluster = Cluster()
    gate = QuorumGate(cluster.probe, interval=1.0, clock=cluster.clock)
    gate.ready()
    assert cluster.probes == 0  # learned at start

    cluster.now = 2.0
    cluster.reachable = False
    with pytest.raises(QuorumUnreachable):
        gate.ready()
    assert cluster.probes == 1
    gate.succeeded()  # an append got through after all
    gate.ready()
    assert cluster.probes == 1


def _probing_gate(cluster: Cluster) -> tuple[QuorumGate, threading.Event, threading.Event]:
    """A gate whose probe, once started, waits until released (as one waiting on its timeout does)."""
    started, release = threading.Event(), threading.Event()

    def probe() -> None:
        started.set()
        release.wait(10)
        cluster.probe()

    return QuorumGate(probe, clock=cluster.clock), started, release


@pytest.mark.parametrize("reachable", [False, True])
def test_an_append_while_a_failed_append_is_probed_waits_for_the_probes_answer(reachable: bool) -> None:
    # Without the wait, appends started while the probe is out each spend the whole command timeout
    # when the region is cut off; one queued behind another command on its account then answers
    # only after two timeouts.
    cluster = Cluster()
    cluster.reachable = reachable
    gate, started, release = _probing_gate(cluster)
    prober = threading.Thread(target=gate.failed, args=("a timeout on an append",))
    prober.start()
    try:
        assert started.wait(10)
        answered: list[str] = []

        def append() -> None:
            try:
                gate.check()
                answered.append("went ahead")
            except QuorumUnreachable:
                answered.append("refused")

        waiting = threading.Thread(target=append)
        waiting.start()
        waiting.join(0.3)
        assert answered == [], "an append went ahead before the probe answered"
        release.set()
        waiting.join(10)
        assert answered == ["went ahead" if reachable else "refused"]
    finally:
        release.set()
        prober.join(10)


def test_an_append_waits_for_a_probe_that_does_not_answer_no_longer_than_the_gates_bound() -> None:
    cluster = Cluster()
    gate, started, release = _probing_gate(cluster)
    gate.doubt_wait = 0.2
    prober = threading.Thread(target=gate.failed, args=("a timeout on an append",))
    prober.start()
    try:
        assert started.wait(10)
        waiting = threading.Thread(target=gate.check)
        waiting.start()
        waiting.join(5)
        assert not waiting.is_alive()  # went ahead on what the gate knew: open
    finally:
        release.set()
        prober.join(10)
