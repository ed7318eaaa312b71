"""A follower whose effect is not a table: accepted events published somewhere outside the store.

A :class:`Sink` is where a relay sends the feed (a Kafka topic, in the service).
Registered with :meth:`ProjectionSpec.publishing <eskit.readmodel.ProjectionSpec.publishing>`,
it is run by the same :class:`~eskit.readmodel.ProjectionRunner` as the
projections (the lease, the registry, the status, the backoff), and its
checkpoints are kept by the same :class:`~eskit.readmodel.ReadModelStore`
(:meth:`~eskit.readmodel.ReadModelStore.sink_target`). Only the effect differs:
"the destination acknowledged it" instead of "the rows stand".

What a sink target guarantees, on every backend: a checkpoint moves only after
:meth:`Sink.publish` returned, that is after every event up to it was
acknowledged. So a relay killed (or failing) after publishing and before its
checkpoint moved publishes those events again: a destination may receive an
event twice, never miss one, and receives each stream's events in order within
every attempt. Consumers remove the duplicates by event id (or by stream and
position). Nothing is ever skipped: an event that cannot be published stops its
stream (its whole feed, where the feed is one sequence) and is retried, with
backoff, until it can.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from eskit.events import StoredEvent

__all__ = ["Sink"]


class Sink(abc.ABC):
    """Port: a destination outside the store that acknowledges what it received."""

    @abc.abstractmethod
    def publish(self, events: Sequence[StoredEvent]) -> None:
        """Send ``events`` in the order given; return only once the destination acknowledged every one.

        Raises when any one was not acknowledged (the destination is down, refused it, or did not
        answer in time): then none counts as sent, and the caller sends them all again later, so
        the destination may hold some twice. Must not return before every acknowledgement.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (after waiting, bounded, for what is in flight)."""
