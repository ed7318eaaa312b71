"""Log lines of a real ``downloads serve``: one JSON object per line with ``DOWNLOADS_LOG_FORMAT=json``,
plain text by default, and the request's id on every line written while handling it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support.server import Server, expect_error, running_server, unique_id

JSON_KEYS = {"time", "level", "logger", "message"}


def _lines(server: Server) -> list[str]:
    assert server.log_path is not None
    return [line for line in server.log_path.read_text().splitlines() if line.strip()]


def _break_the_store(server: Server, tmp_path: Path) -> None:
    """Remove the SQLite file while serving: commands then answer 503 and /readyz 503, and both log why."""
    for path in tmp_path.glob("downloads.db*"):
        path.unlink()


def _requests_that_log(server: Server, tmp_path: Path) -> tuple[str, str]:
    """A command and a readiness probe that each write a warning; returns their request ids."""
    with server.client() as http:
        created = http.post(
            "/v1/accounts", json={"account_id": unique_id(), "plan": "basic"}, headers={"X-Request-Id": "open-1"}
        )
        assert created.status_code == 201, created.text
        assert created.headers["x-request-id"] == "open-1"
        _break_the_store(server, tmp_path)
        command_id, probe_id = f"cmd-{unique_id()}", f"probe-{unique_id()}"
        refused = http.post(
            "/v1/accounts", json={"account_id": unique_id(), "plan": "basic"}, headers={"X-Request-Id": command_id}
        )
        expect_error(refused, 503, "STORE_UNAVAILABLE")
        assert refused.headers["x-request-id"] == command_id
        probe = http.get("/readyz", headers={"X-Request-Id": probe_id})
        assert probe.status_code == 503
    return command_id, probe_id


def test_json_logs_are_one_object_per_line_and_carry_the_request_id(tmp_path: Path) -> None:
    with running_server(tmp_path, workers=2, env={"DOWNLOADS_LOG_FORMAT": "json"}) as server:
        command_id, probe_id = _requests_that_log(server, tmp_path)
    lines = _lines(server)
    parsed: list[dict[str, Any]] = []
    for line in lines:
        record = json.loads(line)  # every line, the server's own and its workers', is one JSON object
        assert isinstance(record, dict), line
        assert set(record) >= JSON_KEYS, line
        assert record["time"].endswith("Z"), line
        parsed.append(record)
    assert any(r["logger"] == "downloads.serve" and "serving on" in r["message"] for r in parsed), lines
    by_id = {r.get("request_id"): r for r in parsed if r.get("request_id")}
    assert command_id in by_id, lines
    assert by_id[command_id]["level"] == "WARNING" and "store" in by_id[command_id]["message"]
    assert probe_id in by_id, lines
    assert by_id[probe_id]["logger"].endswith("health") and "not ready" in by_id[probe_id]["message"]
    # tracing is off: no trace ids are made up
    assert not any("trace_id" in r for r in parsed)


def test_text_logs_stay_the_default_and_name_the_request_id(tmp_path: Path) -> None:
    with running_server(tmp_path) as server:
        command_id, probe_id = _requests_that_log(server, tmp_path)
    lines = _lines(server)
    assert not any(line.lstrip().startswith("{") for line in lines), lines
    assert any(f"request_id={command_id}" in line and "WARNING" in line for line in lines), lines
    assert any(f"request_id={probe_id}" in line and "not ready" in line for line in lines), lines


def test_a_request_without_a_valid_id_gets_a_new_one(tmp_path: Path) -> None:
    with running_server(tmp_path) as server, server.client(role=None) as http:
        made = {http.get("/healthz").headers["x-request-id"] for _ in range(3)}
        bad = http.get("/healthz", headers={"X-Request-Id": "has space"}).headers["x-request-id"]
    assert len(made) == 3 and all(made), made
    assert bad != "has space" and bad
