"""Where the relay publishes: ``kafka://host:port[,host:port...]/topic``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from downloads.adapters.relay.errors import BadRelayUrl

__all__ = ["KafkaDestination", "parse_destination"]

#: Kafka's own rule for topic names: these characters, at most 249 of them
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_HOST = re.compile(r"^[A-Za-z0-9.-]{1,253}$|^\[[0-9A-Fa-f:]{2,39}\]$")


@dataclass(frozen=True)
class KafkaDestination:
    """A topic and the brokers to reach it through."""

    bootstrap: str
    topic: str

    def __str__(self) -> str:
        return f"kafka://{self.bootstrap}/{self.topic}"


def parse_destination(url: str) -> KafkaDestination:
    """Parse ``kafka://host:port[,host:port...]/topic``; raises :class:`BadRelayUrl` for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "kafka":
        raise BadRelayUrl(f"the relay publishes to kafka://host:port/topic, not {url!r}")
    if parts.query or parts.fragment or "@" in parts.netloc:
        raise BadRelayUrl(f"a relay URL has brokers and a topic only (no options, no credentials): {url!r}")
    brokers = [b for b in parts.netloc.split(",") if b]
    if not brokers:
        raise BadRelayUrl(f"no broker in {url!r}: kafka://host:port/topic")
    for broker in brokers:
        host, colon, port = broker.rpartition(":")
        if not colon or not _HOST.match(host) or not port.isdigit() or not 0 < int(port) < 65536:
            raise BadRelayUrl(f"{broker!r} in {url!r} is not host:port")
    topic = parts.path.removeprefix("/")
    if not _TOPIC.match(topic) or topic in (".", ".."):
        raise BadRelayUrl(f"{topic!r} is not a Kafka topic name (letters, digits, '.', '_', '-'; at most 249)")
    return KafkaDestination(",".join(brokers), topic)
