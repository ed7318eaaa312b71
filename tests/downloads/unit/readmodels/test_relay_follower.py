"""The relay in the read side's runner, on the in-memory backend (which follows streams, as Cassandra does)."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from downloads.application import ChangePlan
from downloads.readmodels.readside import ReadSide
from downloads.readmodels.relay import RELAY
from eskit import StoredEvent
from eskit.readmodel import Sink
from tests.downloads.factories import start_service


class Collected(Sink):
    """A destination that acknowledges by returning; what it got, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def publish(self, events: Sequence[StoredEvent]) -> None:
        with self.lock:
            self.events += [(e.stream_id, e.position) for e in events]


def every_event(side: ReadSide) -> set[tuple[str, int]]:
    store = side.runner.stores.events
    return {(s, e.position) for s in store.stream_ids() for e in store.read(s)}


def drain(side: ReadSide, rounds: int = 100) -> None:
    for _ in range(rounds):
        if not side.step():
            return


def test_a_deployment_without_a_relay_shows_none_and_registers_none() -> None:
    app = start_service()
    side = ReadSide(app.app.stores, app.app.service.accounts.codec, app.app.policy, app.app.service)
    app.account("a1")
    drain(side)

    assert RELAY not in side.names
    assert RELAY not in [s.name for s in side.status()]
    assert not side.relay_registered()
    side.close()
    app.close()


def test_a_runner_without_the_relay_keeps_every_stream_for_it_and_reports_it_until_one_with_it_takes_over() -> None:
    """The relay is registered by one process; another, without a destination, holds the lease for a while.

    With a stream feed a stream's hints are removed once every follower has it: had the second runner
    left the relay out, it would have settled streams the relay never published, and they would be lost.
    """
    app = start_service()
    wiring = (app.app.stores, app.app.service.accounts.codec, app.app.policy, app.app.service)
    sink = Collected()
    relaying = ReadSide(*wiring, relay=sink)
    app.account("a1")
    drain(relaying)
    relaying.stop()  # lets the lease go
    blind = ReadSide(*wiring, store=relaying.store)

    for n in range(6):
        app.service.handle(ChangePlan("a1", ("premium", "standard")[n % 2]))
    app.account("a2")
    drain(blind)

    (relay,) = [s for s in blind.status() if s.name == RELAY]
    assert relay.status == "failing" and "RelayNotConfigured" in (relay.error or "")
    assert sink.events and set(sink.events) < every_event(blind)  # the new events wait

    blind.stop()
    drain(relaying)

    assert set(sink.events) == every_event(relaying)  # nothing was lost while the other runner held the lease
    (relay,) = [s for s in relaying.status() if s.name == RELAY]
    assert relay.error is None
    blind.close()
    relaying.close()
    app.close()


def test_forgetting_the_relay_removes_it_from_the_deployment() -> None:
    app = start_service()
    wiring = (app.app.stores, app.app.service.accounts.codec, app.app.policy, app.app.service)
    relaying = ReadSide(*wiring, relay=Collected())
    app.account("a1")
    drain(relaying)
    assert relaying.relay_registered()

    assert relaying.forget_relay() == 1

    blind = ReadSide(*wiring, store=relaying.store)
    assert RELAY not in blind.names and not blind.relay_registered()
    relaying.close()
    app.close()
