"""The relay as one more follower of the read side: its name, and what a process without a destination runs.

The relay publishes every accepted event outside the store (a Kafka topic: the
sink is made by the composition root, see :mod:`downloads.adapters.relay`). It
is run by the read side's runner, under its lease, beside the projections.

A process that runs the read side without a destination for the relay (the
setting is not set there) still declares it, without registering it
(``register=False``): if another process registered it, this runner follows it
with a sink that refuses, so the relay is reported failing here
(:class:`RelayNotConfigured`) and, where the feed is per stream, no stream is
settled before the relay has it. Nothing is lost while the lease is in a
process that cannot publish; the relay catches up once a process that can
holds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from downloads.errors import DownloadsError
from eskit import StoredEvent
from eskit.readmodel import ProjectionSpec, Sink

__all__ = ["RELAY", "RelayNotConfigured", "relay_spec"]

#: the relay's name in the registry and in every status
RELAY = "relay"


class RelayNotConfigured(DownloadsError):
    """The relay is registered in this deployment, but this process has no destination for it."""


class _NoDestination(Sink):
    def publish(self, events: Sequence[StoredEvent]) -> None:
        raise RelayNotConfigured(
            "the relay is registered in this deployment, but the process holding the read side's lease has no "
            "destination for it (DOWNLOADS_RELAY_TO); it waits, losing nothing, until a process that has one runs "
            "the read side (downloads relay --forget removes it)"
        )


def relay_spec(sink: Sink | None, *, batch: int | None = None) -> ProjectionSpec:
    """The relay's spec: publishing to ``sink`` ``batch`` events at a time where the feed is one sequence
    (None: the runner's batch), or, with no sink, followed only if registered elsewhere."""
    if sink is not None:
        return ProjectionSpec.publishing(RELAY, sink, batch=batch)
    return replace(ProjectionSpec.publishing(RELAY, _NoDestination(), batch=batch), register=False)
