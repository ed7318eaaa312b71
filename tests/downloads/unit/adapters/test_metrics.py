"""Metric labels from closed sets: methods, routes and outcome codes the server knows, else ``other``."""

from __future__ import annotations

import re
from pathlib import Path

from downloads.adapters.metrics import OUTCOME_CODES, Metrics

SRC = Path(__file__).resolve().parents[4] / "src" / "downloads"


def _samples(metrics: Metrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_a_method_outside_the_standard_set_counts_as_other() -> None:
    metrics = Metrics()
    metrics.observe_request("BREW", "/healthz", 405, 0.001)
    metrics.observe_request("get", "/healthz", 405, 0.001)
    metrics.observe_request("GET", "/healthz", 200, 0.001)

    counted = _samples(metrics, "downloads_http_requests_total")

    assert counted == {
        (("method", "other"), ("route", "/healthz"), ("status", "405")): 2.0,
        (("method", "GET"), ("route", "/healthz"), ("status", "200")): 1.0,
    }


def test_an_outcome_code_outside_the_known_list_counts_as_other() -> None:
    metrics = Metrics()
    metrics.outcome("acquire_license", "DEVICE_LIMIT_REACHED")
    metrics.outcome("acquire_license", "X" * 2000)

    counted = _samples(metrics, "downloads_command_outcomes_total")

    assert set(counted) == {
        (("code", "DEVICE_LIMIT_REACHED"), ("command", "acquire_license")),
        (("code", "other"), ("command", "acquire_license")),
    }


def test_every_code_the_service_can_refuse_with_is_a_known_outcome_code() -> None:
    # A code added to the domain or the application must be added to the list, or it counts as "other".
    raised = set()
    for path in SRC.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        raised |= set(re.findall(r'(?:Denied|NotFound|Invalid|DomainError)\(\s*"([A-Z][A-Z_]+)"', text))
    assert len(raised) > 10
    assert raised <= OUTCOME_CODES, sorted(raised - OUTCOME_CODES)
    assert {"OK", "REPLAYED"} <= OUTCOME_CODES
