"""The relay: every accepted event published to a Kafka topic, for analysis and other services.

The relay is a follower of the feed like the projections, run by the same
runner (:class:`eskit.readmodel.ProjectionRunner`: the lease, the registry, the
status, the backoff), whose effect is "published and acknowledged" instead of
rows: eskit offers the seam (:class:`eskit.readmodel.Sink`, with checkpoints
kept by the read-model store), and this package the Kafka side:

* :mod:`~downloads.adapters.relay.envelope`: the versioned JSON envelope, the
  key (the account id) and the headers; what of an event's data may leave the
  store (:func:`without_personal`: never a member's personal fields);
* :mod:`~downloads.adapters.relay.kafka`: :class:`KafkaSink`, an idempotent
  producer that returns only once the broker acknowledged every event;
* :mod:`~downloads.adapters.relay.url`: ``kafka://host:port[,host:port]/topic``.

Why here and not in eskit: the envelope, the key and what may be published are
the service's decisions, and eskit stays free of any broker client. Importing
this package imports no Kafka client; making a :class:`KafkaSink` does.
"""

from downloads.adapters.relay.envelope import (
    ENVELOPE_HEADER,
    ENVELOPE_VERSION,
    Published,
    account_of,
    message,
    stored_data,
    without_personal,
)
from downloads.adapters.relay.errors import BadRelayUrl, RelayError, RelayUnavailable, TopicMissing
from downloads.adapters.relay.kafka import KafkaSink
from downloads.adapters.relay.url import KafkaDestination, parse_destination

__all__ = [
    "ENVELOPE_HEADER",
    "ENVELOPE_VERSION",
    "BadRelayUrl",
    "KafkaDestination",
    "KafkaSink",
    "Published",
    "RelayError",
    "RelayUnavailable",
    "TopicMissing",
    "account_of",
    "message",
    "parse_destination",
    "stored_data",
    "without_personal",
]
