"""Traces of a real ``downloads serve`` received by a real OTLP receiver (Jaeger, started once per session).

One acquire sent with a W3C ``traceparent`` arrives as one trace: the caller's span is the parent of
the request's server span, the command's span is its child and every store round trip a child of the
command, each with the attributes the runbook names and none of the request's data. The read side's
batches arrive as spans of their own.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest

from tests.support.jaeger import parent_of, tags_of, wait_for_spans
from tests.support.server import Server, running_server, unique_id
from tools.jaeger import LocalJaeger

pytestmark = pytest.mark.slow


def _traced_server(tmp_path: Path, jaeger: LocalJaeger, **env: str) -> Any:
    settings = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": f"downloads-{secrets.token_hex(4)}",
        "DOWNLOADS_LOG_FORMAT": "json",
        **env,
    }
    return running_server(tmp_path, env=settings)


def _acquire(server: Server, trace_id: str, parent_id: str, request_id: str) -> tuple[str, str, str]:
    account, device = unique_id(), unique_id("device")
    with server.client() as http:
        assert http.post("/v1/accounts", json={"account_id": account, "plan": "basic"}).status_code == 201
        assert http.post(f"/v1/accounts/{account}/devices", json={"device_id": device, "model": "m"}).status_code == 201
        answer = http.post(
            f"/v1/accounts/{account}/licenses",
            json={"device_id": device, "title_id": "demo-title-1"},
            headers={"traceparent": f"00-{trace_id}-{parent_id}-01", "X-Request-Id": request_id},
        )
        assert answer.status_code == 201, answer.text
    return account, device, answer.json()["license_id"]


def test_one_acquire_arrives_as_one_trace_under_the_callers_span(tmp_path: Path, jaeger: LocalJaeger) -> None:
    trace_id, parent_id, request_id = secrets.token_hex(16), secrets.token_hex(8), f"req-{unique_id()}"
    with _traced_server(tmp_path, jaeger) as server:
        account, device, license_id = _acquire(server, trace_id, parent_id, request_id)

        def complete(spans: list[dict[str, Any]]) -> bool:
            names = [s["operationName"] for s in spans]
            return "command acquire_license" in names and any(n.startswith("POST ") for n in names)

        spans = wait_for_spans(lambda: jaeger.trace(trace_id), complete)
    assert complete(spans), (spans, jaeger.log_tail())
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span["operationName"], []).append(span)

    [request] = by_name["POST /v1/accounts/{account_id}/licenses"]
    assert parent_of(request) == parent_id  # the caller's traceparent is the parent
    tags = tags_of(request)
    assert tags["span.kind"] == "server"
    assert tags["downloads.request_id"] == request_id
    assert tags["downloads.account_id"] == account
    assert tags["http.route"] == "/v1/accounts/{account_id}/licenses"
    assert tags.get("http.status_code", tags.get("http.response.status_code")) == 201

    [command] = by_name["command acquire_license"]
    assert parent_of(command) == request["spanID"]
    tags = tags_of(command)
    assert tags["downloads.command"] == "acquire_license"
    assert tags["downloads.account_id"] == account
    assert tags["downloads.outcome"] == "OK"
    assert tags["downloads.attempts"] == 1 and tags["downloads.conflicts"] == 0

    stores = [s for s in spans if s["operationName"].startswith("sqlite ")]
    assert stores, [s["operationName"] for s in spans]
    operations = set()
    for span in stores:
        tags = tags_of(span)
        assert parent_of(span) == command["spanID"], span["operationName"]
        assert tags["db.system"] == "sqlite" and tags["span.kind"] == "client"
        operations.add(tags["db.operation.name"])
    assert "append" in operations, operations

    # never the request's data: no device, title or license id in any attribute, nor the raw path
    for span in spans:
        text = json.dumps(tags_of(span))
        for secret in (device, license_id, "demo-title-1", f"/v1/accounts/{account}/"):
            assert secret not in text, (span["operationName"], secret)


def test_a_request_without_traceparent_starts_a_trace_its_log_lines_name(tmp_path: Path, jaeger: LocalJaeger) -> None:
    with _traced_server(tmp_path, jaeger) as server:
        request_id = f"req-{unique_id()}"
        for path in tmp_path.glob("downloads.db*"):
            path.unlink()  # the store is gone: the command answers 503 and logs why
        with server.client() as http:
            answer = http.post(
                "/v1/accounts", json={"account_id": unique_id(), "plan": "basic"}, headers={"X-Request-Id": request_id}
            )
        assert answer.status_code == 503
    assert server.log_path is not None
    lines = [json.loads(line) for line in server.log_path.read_text().splitlines() if line.strip()]
    [logged] = [line for line in lines if line.get("request_id") == request_id]
    trace_id, span_id = logged["trace_id"], logged["span_id"]
    spans = wait_for_spans(lambda: jaeger.trace(trace_id), lambda found: any(s["spanID"] == span_id for s in found))
    names = {s["spanID"]: s["operationName"] for s in spans}
    assert span_id in names, (names, jaeger.log_tail())
    root = [s for s in spans if parent_of(s) is None]
    assert [s["operationName"] for s in root] == ["POST /v1/accounts"]
    assert tags_of(root[0])["downloads.request_id"] == request_id


def test_the_read_side_sends_a_span_per_projection_batch(tmp_path: Path, jaeger: LocalJaeger) -> None:
    with _traced_server(tmp_path, jaeger) as server:
        service = server.env["OTEL_SERVICE_NAME"]
        with server.client() as http:
            assert http.post("/v1/accounts", json={"account_id": unique_id(), "plan": "basic"}).status_code == 201
        spans = wait_for_spans(lambda: jaeger.find(service, "projection batch"), bool)
    assert spans, jaeger.log_tail()
    tags = [tags_of(span) for span in spans]
    assert all(t["eskit.count"] >= 1 and isinstance(t["eskit.projection"], str) for t in tags), tags
    assert all(parent_of(span) is None for span in spans)  # background work: a trace of its own
