"""A process that prepares its statements while one node of three is frozen (SIGSTOP: it accepts
connections and answers nothing, as a node in a long pause or behind a dead link does).

The driver prepares a statement on one node and, by default, waits for every other node to prepare it
too: a frozen node made each statement wait the driver's timeout there, or failed it outright when
the frozen node was the first one asked. Processes that started during a pause (a writer, a relay,
a projector restarted by its supervisor) exited instead of serving from the two nodes that answer.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from eskit import NewEvent
from eskit.stores.cassandra import (
    CassandraReadModels,
    CassandraSession,
    CassandraSettings,
    open_read_models,
    open_stores,
)
from eskit.stores.cassandra.statements import Statements
from tests.support.cassandra import ClusterPool, keyspace_url

pytestmark = [pytest.mark.cassandra, pytest.mark.slow, pytest.mark.cluster(nodes=3)]

#: far below the minutes a frozen node cost before (the driver's 10 s per statement it was asked first)
BOUND = 60.0


def test_statements_are_prepared_while_one_node_of_three_is_frozen(cluster_pool: ClusterPool) -> None:
    cluster = cluster_pool.get(3)
    with keyspace_url(cluster, "paused") as url:
        made = open_stores(url)  # the keyspace and the read side's registry, made while every node answers
        try:
            open_read_models(made).ensure()
        finally:
            made.close()
        session = CassandraSession(CassandraSettings.from_url(url))  # connected to all three
        try:
            cluster.pause_node(3)
            try:
                started = time.monotonic()
                session.statements = Statements(session)
                # The read side's statements, prepared on first use.
                assert CassandraReadModels(session).versions(["lookup"]) == {"lookup": []}
                elapsed = time.monotonic() - started
            finally:
                cluster.resume_node(3)
            assert elapsed < BOUND, f"preparing took {elapsed:.1f} s with one node frozen"
        finally:
            session.close()
        stores = open_stores(url)
        try:
            stores.events.append(
                "s-1", [NewEvent("test.Happened", 1, b"{}", b"{}", datetime.now(UTC))], expected_version=0
            )
            assert [e.position for e in stores.events.read("s-1")] == [1]
        finally:
            stores.close()
