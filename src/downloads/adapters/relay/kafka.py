"""The relay's Kafka side: an idempotent producer that returns only once the broker acknowledged every event.

:class:`KafkaSink` is eskit's :class:`~eskit.readmodel.Sink` for a Kafka topic. Each
:meth:`~KafkaSink.publish` sends the events in order (``acks=all``, idempotent, so the broker
writes each message of one attempt once and in order per partition), then waits for every
delivery report. Any failure (a report with an error, or not all reports within ``timeout``)
raises :class:`RelayUnavailable`, and the producer is dropped: the next attempt starts a new one
from the relay's checkpoint, so nothing is left queued to arrive out of turn later.

Before the first publish, and after any failure, the sink asks the broker for its topics (a
short, bounded question), so a broker that is down costs a runner round a few seconds, not the
whole delivery timeout: it fails fast with :class:`RelayUnavailable`, and a topic that does not
exist with :class:`TopicMissing` (or is created, when asked for).

The client is ``confluent-kafka`` (the ``kafka`` extra), imported when a sink is made.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from downloads.adapters.relay.envelope import DataOf, message
from downloads.adapters.relay.errors import RelayError, RelayUnavailable, TopicMissing
from downloads.adapters.relay.url import KafkaDestination
from eskit import StoredEvent
from eskit.readmodel import Sink
from eskit.tracing import Attribute, Tracer, tracer

__all__ = ["KafkaSink"]

log = logging.getLogger(__name__)

#: seconds the broker has to answer "which topics are there?" before it counts as down
PROBE_TIMEOUT = 3.0


def _client() -> Any:
    try:
        import confluent_kafka
    except ImportError as exc:  # pragma: no cover - the extra is part of every install of this repository
        raise RelayError("the relay needs the confluent-kafka package: pip install 'downloads[kafka]'") from exc
    return confluent_kafka


class KafkaSink(Sink):
    """Publishes accepted events to ``destination`` (see the module docstring).

    ``timeout`` bounds how long one publish waits for its acknowledgements (seconds);
    ``create_topic`` makes a missing topic with ``partitions`` partitions instead of refusing;
    ``data`` decides what of each event's data is published: no default, so whoever makes a sink
    says it (the service gives :func:`~downloads.adapters.relay.envelope.without_personal`, which
    leaves members' personal fields out).
    """

    def __init__(
        self,
        destination: KafkaDestination,
        *,
        data: DataOf,
        timeout: float = 10.0,
        create_topic: bool = False,
        partitions: int = 6,
    ) -> None:
        self.destination = destination
        self.timeout, self.create_topic, self.partitions, self.data = timeout, create_topic, partitions, data
        self._kafka = _client()
        self._producer: Any = None
        self._checked = False
        self._lock = threading.Lock()  # one publish at a time: stream followers call from several threads
        #: events acknowledged by the broker since this sink was made
        self.acknowledged = 0

    # -- the producer --------------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.destination.bootstrap,
            "enable.idempotence": True,  # implies acks=all and in-order retries within one producer
            "acks": "all",
            "allow.auto.create.topics": False,
            "linger.ms": 5,
            "message.timeout.ms": int(self.timeout * 1000),
            "socket.connection.setup.timeout.ms": int(PROBE_TIMEOUT * 1000),
            "reconnect.backoff.max.ms": 1000,
            "logger": log,  # the client's log lines go to logging, not to stderr
        }

    def _open(self) -> Any:
        if self._producer is None:
            self._producer = self._kafka.Producer(self._config())
        if not self._checked:
            self._check_topic(self._producer)
            self._checked = True
        return self._producer

    def _drop(self) -> None:
        """Forget the producer after a failure: nothing it still holds may be sent later, out of turn."""
        producer, self._producer, self._checked = self._producer, None, False
        if producer is not None:
            try:
                producer.purge(in_queue=True, in_flight=True)
                producer.flush(0)
            except Exception as exc:  # it is being dropped anyway
                log.debug("dropping the producer: %s", exc)

    def _check_topic(self, producer: Any) -> None:
        try:
            metadata = producer.list_topics(timeout=PROBE_TIMEOUT)
        except self._kafka.KafkaException as exc:
            raise RelayUnavailable(
                f"the broker at {self.destination.bootstrap} did not answer within {PROBE_TIMEOUT:.0f} s ({exc})"
            ) from exc
        found = metadata.topics.get(self.destination.topic)
        if found is not None and found.error is None:
            return
        if not self.create_topic:
            raise TopicMissing(
                f"topic {self.destination.topic!r} does not exist on {self.destination.bootstrap}: create it, or "
                "ask the relay to (DOWNLOADS_RELAY_CREATE_TOPIC=true, or downloads relay --create-topic)"
            )
        self._create_topic()

    def _create_topic(self) -> None:
        admin_module = self._kafka.admin
        admin = admin_module.AdminClient({"bootstrap.servers": self.destination.bootstrap, "logger": log})
        topic = admin_module.NewTopic(self.destination.topic, num_partitions=self.partitions, replication_factor=-1)
        future = admin.create_topics([topic], operation_timeout=self.timeout)[self.destination.topic]
        try:
            future.result(timeout=self.timeout + PROBE_TIMEOUT)
        except self._kafka.KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if getattr(error, "code", lambda: None)() != self._kafka.KafkaError.TOPIC_ALREADY_EXISTS:
                raise RelayUnavailable(f"cannot create topic {self.destination.topic!r}: {exc}") from exc
        log.warning("relay: created topic %s with %d partitions", self.destination, self.partitions)

    def check(self) -> None:
        """Reach the broker and find the topic now (creating it if asked for), as the first publish would.

        Raises :class:`TopicMissing` or :class:`RelayUnavailable`.
        """
        with self._lock:
            try:
                self._open()
            except Exception:
                self._drop()
                raise

    # -- publishing ----------------------------------------------------------------------------

    def publish(self, events: Sequence[StoredEvent]) -> None:
        if not events:
            return
        with self._lock:
            try:
                current = tracer()
                if current is None:
                    self._publish(events, [])
                else:
                    self._traced(current, events)
            except Exception:
                self._drop()  # whatever failed, the next attempt starts afresh from the checkpoint
                raise

    def _traced(self, current: Tracer, events: Sequence[StoredEvent]) -> None:
        """The batch in a ``relay batch`` span whose context each message carries (W3C ``traceparent``)."""
        from downloads.adapters.tracing import inject_headers

        attributes: dict[str, Attribute] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": self.destination.topic,
            "messaging.batch.message_count": len(events),
        }
        with current.span("relay batch", attributes, kind="producer") as span:
            try:
                self._publish(events, inject_headers())
            except Exception as exc:
                span.fail(exc)
                raise

    def _publish(self, events: Sequence[StoredEvent], trace_headers: list[tuple[str, bytes]]) -> None:
        producer = self._open()
        failures: list[str] = []
        delivered = [0]

        def report(error: Any, _message: Any) -> None:
            if error is None:
                delivered[0] += 1
            elif len(failures) < 3:
                failures.append(str(error))

        topic = self.destination.topic
        for stored in events:
            key, value, headers = message(stored, data=self.data)
            if trace_headers:
                headers = [*headers, *trace_headers]
            while True:
                try:
                    producer.produce(topic, value=value, key=key, headers=headers, on_delivery=report)
                    break
                except BufferError:  # the client's queue is full: let it send, then go on
                    producer.poll(0.05)
        left = producer.flush(self.timeout)
        if failures or left or delivered[0] != len(events):
            why = "; ".join(failures) or f"{left} event(s) not acknowledged within {self.timeout:.0f} s"
            raise RelayUnavailable(
                f"{self.destination}: {delivered[0]} of {len(events)} event(s) acknowledged ({why}); "
                "the batch is sent again from the relay's checkpoint"
            )
        self.acknowledged += len(events)

    def close(self) -> None:
        with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush(min(self.timeout, 5.0))
