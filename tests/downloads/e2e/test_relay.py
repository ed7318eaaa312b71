"""The relay in ``serve``'s background runner: its status in ``GET /v1/projections`` and ``/metrics``, its topic."""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson

from tests.downloads.e2e.test_read_side import eventually, member
from tests.support.kafka import consume, create_topic, fresh_topic
from tests.support.server import running_server
from tools.kafka_broker import LocalKafkaBroker


def test_a_server_with_a_relay_publishes_every_event_and_reports_the_relay_beside_the_projections(
    tmp_path: Path, kafka: LocalKafkaBroker
) -> None:
    topic = fresh_topic()
    create_topic(kafka.bootstrap, topic)
    env = {"DOWNLOADS_RELAY_TO": f"kafka://{kafka.bootstrap}/{topic}"}
    with (
        running_server(tmp_path, env=env) as server,
        server.client("service") as http,
        server.client("support") as support,
    ):
        accounts = [member(http, devices=2) for _ in range(3)]  # three events each
        relay = eventually(
            lambda: next(
                (
                    p
                    for p in support.get("/v1/projections").json()["projections"]
                    if p["name"] == "relay" and p["status"] == "caught_up" and p["position"] >= 9
                ),
                None,
            ),
            "the relay caught up",
        )
        scraped = httpx.get(server.url + "/metrics").text

    assert (relay["lag_events"], relay["lag_seconds"], relay["error"]) == (0, 0.0, None)
    assert 'downloads_projection_lag_events{projection="relay"} 0.0' in scraped
    assert 'downloads_projection_failing{projection="relay"} 0.0' in scraped
    received = consume(kafka.bootstrap, topic, until=relay["position"])
    assert len(received) == relay["position"]
    keys = {m.key for m in received}
    assert {account.encode() for account in accounts} <= keys
    types = [orjson.loads(m.value)["type"] for m in received if m.key == accounts[0].encode()]
    assert types == ["AccountOpened", "DeviceRegistered", "DeviceRegistered"]


def test_a_server_without_a_relay_lists_only_its_projections(tmp_path: Path) -> None:
    with running_server(tmp_path) as server, server.client("support") as support:
        names = {p["name"] for p in support.get("/v1/projections").json()["projections"]}
    assert "relay" not in names and "lookup" in names
