"""``/metrics`` labels come from closed sets: nothing a client sends becomes a label value.

Before, the raw HTTP method was a label: 50 requests with invented 2,000-character methods, with no
token, grew ``/metrics`` from 3 KB to 1.9 MB, never freed.
"""

from __future__ import annotations

import re
import time

import httpx

from tests.support.server import Server, unique_id

#: requests with invented methods, and the most time they may take
REQUESTS, SECONDS = 1000, 120
#: what counters growing by 1,000 may add to the text (longer numbers), far below one label's 2,000 characters
MARGIN = 1024


def _metrics(server: Server) -> str:
    with server.client(role=None) as http:
        answer = http.get("/metrics")
    assert answer.status_code == 200
    return answer.text


def _invented(n: int) -> str:
    return f"M{n:04d}" + "X" * 1995


def test_invented_methods_and_paths_leave_metrics_the_same_size(shared_server: Server) -> None:
    with httpx.Client(base_url=shared_server.url, timeout=30) as http:  # no token: anyone can do this
        for n in range(2):  # the "other" series, and /metrics's own, exist from here on
            http.request(_invented(n), "/healthz")
            http.request(_invented(n), f"/nowhere-{unique_id()}")
        _metrics(shared_server)
        before = len(_metrics(shared_server))
        sent, deadline = 0, time.monotonic() + SECONDS
        while sent < REQUESTS and time.monotonic() < deadline:
            path = "/healthz" if sent % 2 else f"/nowhere-{unique_id()}-" + "p" * 500
            answer = http.request(_invented(sent + 2), path)
            assert answer.status_code in (404, 405), answer.status_code
            sent += 1
    assert sent == REQUESTS, f"only {sent} requests in {SECONDS} s"

    text = _metrics(shared_server)

    assert len(text) - before < MARGIN, len(text) - before
    assert "XXXX" not in text and "pppp" not in text and "nowhere" not in text
    counted = re.search(r'downloads_http_requests_total\{method="other",route="/healthz",status="405"\} (\S+)', text)
    assert counted is not None and float(counted.group(1)) >= REQUESTS // 2


def test_every_label_value_is_a_known_method_a_route_template_or_a_status(shared_server: Server) -> None:
    account = unique_id()
    with shared_server.client() as http:
        http.post("/v1/accounts", json={"account_id": account, "plan": "basic"}).raise_for_status()
        http.get(f"/v1/accounts/{account}").raise_for_status()
        http.request("get", f"/v1/accounts/{account}")  # methods are case-sensitive: not GET
        http.request("PURGE", f"/v1/accounts/{account}")
        http.put(f"/v1/accounts/{account}/plan", json={"plan": "no-such-plan"})

    text = _metrics(shared_server)

    methods = set(re.findall(r'downloads_http_requests_total\{method="([^"]*)"', text))
    routes = set(re.findall(r'downloads_http_requests_total\{[^}]*route="([^"]*)"', text))
    codes = set(re.findall(r'downloads_command_outcomes_total\{[^}]*code="([^"]*)"', text))
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
    assert {"GET", "POST", "other"} <= methods
    assert "/v1/accounts/{account_id}" in routes and account not in text
    assert all(route == "unmatched" or route.startswith("/") for route in routes)
    assert {"OK", "UNKNOWN_PLAN"} <= codes
