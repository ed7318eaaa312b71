"""The quorum gate of the Cassandra store: fast refusals while cut off, a cheap probe to learn it is over."""

from __future__ import annotations

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
