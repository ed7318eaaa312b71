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
from collections.abc import Iterator, Sequence
from typing import Any

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

from eskit.projection import ProjectionStatus

__all__ = [
    "CONTENT_TYPE_LATEST",
    "METHODS",
    "OUTCOMES",
    "OUTCOME_CODES",
    "Metrics",
    "outcome_class",
    "projection_metrics",
]

#: the HTTP methods counted by name
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"})

#: the outcomes counted by code: a command's success or replay, and every code it can be refused with
#: (a unit test checks that every code raised in the source is here)
OUTCOME_CODES = frozenset(
    {
        "OK",
        "REPLAYED",
        "ACCOUNT_ERASED",
        "FAILED",  # not a rule's refusal: the store or the code failed (the client saw a 5xx or a 409 conflict)
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


#: label sets whose resolved series a Metrics keeps (a bound: an odd method name is one more key)
_SERIES_KEPT = 4096

#: the outcome classes a command's latency is kept by: accepted, answered again for a repeated key,
#: refused by a rule (any other code), or failed (``FAILED``)
OUTCOMES = ("ok", "replayed", "refused", "failed")

#: latency buckets of commands and requests, seconds: a cached command takes about a millisecond, a
#: far region's quorum write tens of milliseconds
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: buckets of one store operation and of one SQLite commit (an fsync): tenths of a millisecond up
STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 2.5)


def outcome_class(code: str) -> str:
    """The class of :data:`OUTCOMES` an outcome code belongs to."""
    if code == "OK":
        return "ok"
    if code == "REPLAYED":
        return "replayed"
    if code == "FAILED":
        return "failed"
    return "refused"


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
        self.command_latency = Histogram(
            "downloads_command_seconds",
            "Account command latency (load, decide, save, retries included) by command and outcome class",
            ["command", "outcome"],
            registry=r,
            buckets=LATENCY_BUCKETS,
        )
        self.store_latency = Histogram(
            "downloads_store_operation_seconds",
            "Event and snapshot store operation latency by operation",
            ["operation"],
            registry=r,
            buckets=STORE_BUCKETS,
        )
        self.sqlite_commit = Histogram(
            "downloads_sqlite_commit_seconds",
            "SQLite event store commit time (the write-ahead log's fsync), per commit of a group",
            registry=r,
            buckets=STORE_BUCKETS,
        )
        self.conflicts = Counter(
            "downloads_concurrency_conflicts",
            "Optimistic concurrency conflicts (each is retried)",
            ["command"],
            registry=r,
        )
        self._request_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._outcome_series: dict[tuple[str, str], tuple[Any, Any]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count a request; ``route`` must be a route's template (or ``unmatched``), never the raw path."""
        key = (method, route, status)
        series = self._request_series.get(key)
        if series is None:
            # Resolving labels takes a lock and a lookup per metric: done once per label set. The sets are
            # bounded (methods, the app's route templates, statuses), and so is this map.
            label = method if method in METHODS else "other"
            series = (self.requests.labels(label, route, str(status)), self.latency.labels(label, route))
            if len(self._request_series) >= _SERIES_KEPT:
                self._request_series.clear()
            self._request_series[key] = series
        series[0].inc()
        series[1].observe(seconds)

    def outcome(self, command: str, code: str, seconds: float | None = None) -> None:
        """Count a command's outcome code and, when given, time it under its outcome class."""
        key = (command, code)
        series = self._outcome_series.get(key)
        if series is None:
            # As for requests: the counter's and the histogram's series resolved once per label set.
            label = code if code in OUTCOME_CODES else "other"
            series = (self.outcomes.labels(command, label), self.command_latency.labels(command, outcome_class(code)))
            if len(self._outcome_series) >= _SERIES_KEPT:
                self._outcome_series.clear()
            self._outcome_series[key] = series
        series[0].inc()
        if seconds is not None:
            series[1].observe(seconds)

    def conflict(self, command: str, attempt: int) -> None:
        self.conflicts.labels(command).inc()

    def render(self) -> bytes:
        """The exposition text: every worker's when multiprocess mode is on, else this process's."""
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            prom_multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)


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
