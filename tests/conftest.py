"""Session-wide test setup: a clean environment, the Cassandra cluster pool, the Kafka broker, the OTLP receiver,
the order of tests."""

from __future__ import annotations

import os

import pytest

from tests.support.cassandra import KINDS, cluster_pool
from tests.support.jaeger import jaeger
from tests.support.kafka import kafka, kafka_pool

__all__ = ["cluster_pool", "jaeger", "kafka", "kafka_pool"]  # session fixtures for every test folder


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DOWNLOADS_* (or OTEL_*) setting leaks from the developer's shell into a test."""
    for name in list(os.environ):
        if name.startswith(("DOWNLOADS_", "OTEL_")) or name == "PROMETHEUS_MULTIPROC_DIR":
            monkeypatch.delenv(name)


def _cluster_kind(item: pytest.Item) -> int:
    """Where an item's cluster kind stands in KINDS; tests without a cluster come first (-1)."""
    marker = item.get_closest_marker("cluster")
    if marker is None:
        return -1
    kind = (marker.kwargs.get("nodes", 3), marker.kwargs.get("dcs", 1), marker.kwargs.get("paxos_variant", "v2"))
    if kind not in KINDS:
        raise pytest.UsageError(f"{item.nodeid}: no cluster kind {kind} in tests/support/cassandra.py KINDS")
    return KINDS.index(kind)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run tests grouped by the cluster they need, so each kind of local cluster starts once.

    Within a kind, the slow fault-injection tests (killed, paused or cut nodes) run last, so
    the others meet a healthy cluster. The sort is stable: otherwise the order pytest chose
    (which keeps module-scoped fixtures together) stays.
    """
    items.sort(key=lambda item: (_cluster_kind(item), item.get_closest_marker("slow") is not None))
