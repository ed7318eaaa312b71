"""Prometheus metrics: requests, latency, command outcomes, store appends, conflicts.

With several server processes, set ``PROMETHEUS_MULTIPROC_DIR`` (``serve`` does)
so ``/metrics`` aggregates every worker.

Every label value comes from a closed set the server owns, so no client can add series (each is
kept for the life of the process): methods outside :data:`METHODS` count as ``other``, routes are
templates (``unmatched`` when none matched), statuses are the ones the server answered, and
outcome codes outside :data:`OUTCOME_CODES` count as ``other``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from datetime import datetime

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as prom_multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from eskit import EskitError, EventStore, NewEvent, StoredEvent
from eskit.projection import ProjectionStatus

__all__ = ["CONTENT_TYPE_LATEST", "METHODS", "OUTCOME_CODES", "Metrics", "TimedEventStore", "projection_metrics"]

#: the HTTP methods counted by name
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})

#: the outcomes counted by code: a command's success or replay, and every code it can be refused with
#: (a unit test checks that every code raised in the source is here)
OUTCOME_CODES = frozenset(
    {
        "OK",
        "REPLAYED",
        "ACCOUNT_ERASED",
        "ACCOUNT_EXISTS",
        "ACCOUNT_NOT_ACTIVE",
        "ACCOUNT_NOT_FOUND",
        "DEVICE_DOWNLOAD_LIMIT_REACHED",
        "DEVICE_LIMIT_REACHED",
        "DEVICE_NOT_ACTIVE",
        "DEVICE_NOT_FOUND",
        "IDEMPOTENCY_KEY_REUSED",
        "INVALID_CURSOR",
        "LICENSE_NOT_ACTIVE",
        "LICENSE_NOT_FOUND",
        "TITLE_ALREADY_LICENSED",
        "TITLE_NOT_DOWNLOADABLE",
        "TITLE_NOT_FOUND",
        "TITLE_YEARLY_LIMIT_REACHED",
        "TOO_MANY_DEVICES",
        "TOO_MANY_LICENSE_IDS",
        "UNKNOWN_PLAN",
        "UNKNOWN_STUDIO",
        "WHAT_IF_TOO_LARGE",
    }
)


class Metrics:
    """The service's metrics in one registry (its own, so tests can build several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "downloads_http_requests", "HTTP requests by route and status", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "downloads_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.outcomes = Counter(
            "downloads_command_outcomes", "Command outcomes by command and code", ["command", "code"], registry=r
        )
        self.append_latency = Histogram(
            "downloads_store_append_seconds",
            "Event store append latency",
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
        )
        self.conflicts = Counter(
            "downloads_concurrency_conflicts",
            "Optimistic concurrency conflicts (each is retried)",
            ["command"],
            registry=r,
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count a request; ``route`` must be a route's template (or ``unmatched``), never the raw path."""
        method = method if method in METHODS else "other"
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def outcome(self, command: str, code: str) -> None:
        self.outcomes.labels(command, code if code in OUTCOME_CODES else "other").inc()

    def conflict(self, command: str, attempt: int) -> None:
        self.conflicts.labels(command).inc()

    def render(self) -> bytes:
        """The exposition text: every worker's when multiprocess mode is on, else this process's."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            prom_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


class TimedEventStore(EventStore):
    """An event store that times appends into :class:`Metrics` and delegates everything."""

    def __init__(self, inner: EventStore, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics

    def append(self, stream_id: str, events: Sequence[NewEvent], *, expected_version: int) -> int:
        started = time.perf_counter()
        try:
            return self.inner.append(stream_id, events, expected_version=expected_version)
        finally:
            self.metrics.append_latency.observe(time.perf_counter() - started)

    def read(
        self, stream_id: str, *, gt: int = 0, lte: int | None = None, limit: int | None = None, desc: bool = False
    ) -> list[StoredEvent]:
        return self.inner.read(stream_id, gt=gt, lte=lte, limit=limit, desc=desc)

    def append_many(self, appends: Sequence[tuple[str, Sequence[NewEvent], int]]) -> list[int | EskitError]:
        return self.inner.append_many(appends)

    def stream_ids(self, *, after: str | None = None, limit: int = 1000) -> list[str]:
        return self.inner.stream_ids(after=after, limit=limit)

    def version(self, stream_id: str) -> int:
        return self.inner.version(stream_id)

    def recorded_times(self, stream_id: str, positions: Sequence[int]) -> dict[int, datetime]:
        return self.inner.recorded_times(stream_id, positions)

    def version_at(self, stream_id: str, when: datetime) -> int:
        return self.inner.version_at(stream_id, when)

    def ping(self) -> None:
        self.inner.ping()

    def close(self) -> None:
        self.inner.close()


def projection_metrics(statuses: Sequence[ProjectionStatus]) -> bytes:
    """The read side's gauges (position, lag in events and seconds, failing, skipped events), as of this scrape.

    Built as metric families of a throw-away collector, not as ``Gauge`` objects: in multiprocess
    mode those would store their values in files shared by every worker.
    """
    families = {
        "position": GaugeMetricFamily("downloads_projection_position", "feed sequence applied", labels=["projection"]),
        "lag_events": GaugeMetricFamily(
            "downloads_projection_lag_events", "events in the feed not yet applied", labels=["projection"]
        ),
        "lag_seconds": GaugeMetricFamily(
            "downloads_projection_lag_seconds", "age of the oldest event not applied", labels=["projection"]
        ),
        "failing": GaugeMetricFamily(
            "downloads_projection_failing",
            "1 while the last attempt failed or a stream is skipped",
            labels=["projection"],
        ),
        "skipped": GaugeMetricFamily(
            "downloads_projection_skipped_events",
            "events of streams the projection cannot apply, skipped until a rebuild",
            labels=["projection"],
        ),
    }
    for status in statuses:
        families["position"].add_metric([status.name], status.position)
        families["lag_events"].add_metric([status.name], status.lag_events)
        families["lag_seconds"].add_metric([status.name], status.lag_seconds)
        families["failing"].add_metric([status.name], 1 if status.error else 0)
        families["skipped"].add_metric([status.name], status.skipped_events)

    class _Snapshot(Collector):
        def collect(self) -> Iterator[Metric]:
            yield from families.values()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot())
    return generate_latest(registry)
