"""Metric labels from closed sets: methods, routes and outcome codes the server knows, else ``other``."""

from __future__ import annotations

import contextlib
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


def _count(metrics: Metrics, name: str, **labels: str) -> float:
    wanted = tuple(sorted(labels.items()))
    return sum(value for key, value in _samples(metrics, name).items() if set(wanted) <= set(key))


def test_commands_are_timed_per_command_and_outcome_class(tmp_path: Path) -> None:
    from downloads.adapters.observed import observed_stores
    from downloads.application import AcquireLicense, OpenAccount, RegisterDevice
    from downloads.bootstrap import bootstrap
    from downloads.domain import DomainError, Policy
    from downloads.settings import Settings

    metrics = Metrics()
    runtime = bootstrap(
        Settings(store=f"sqlite:///{tmp_path / 'downloads.db'}"),
        policy=Policy(),
        observer=metrics,
        wrap_stores=observed_stores(metrics),
    )
    try:
        service = runtime.service
        service.handle(OpenAccount("acct-1", "standard"))
        with contextlib.suppress(DomainError):
            service.handle(OpenAccount("acct-1", "standard"), idempotency_key="k1")
        service.handle(RegisterDevice("acct-1", "phone", "p"), idempotency_key="k2")
        service.handle(RegisterDevice("acct-1", "phone", "p"), idempotency_key="k2")
        with contextlib.suppress(DomainError):
            service.handle(AcquireLicense("acct-1", "tablet", "demo-title-1"))
    finally:
        runtime.close()

    timed = "downloads_command_seconds_count"
    assert _count(metrics, timed, command="register_device", outcome="ok") == 1
    assert _count(metrics, timed, command="register_device", outcome="replayed") == 1
    assert _count(metrics, timed, command="acquire_license", outcome="refused") == 1
    assert _count(metrics, timed, command="open_account", outcome="refused") == 1  # ACCOUNT_EXISTS
    # every store operation is timed by name, snapshots and the SQLite commit (its fsync) too
    store = "downloads_store_operation_seconds_count"
    assert _count(metrics, store, operation="append") == 2  # opened, registered
    assert _count(metrics, store, operation="read") >= 1
    assert _count(metrics, store, operation="snapshot_load") >= 1
    assert _count(metrics, "downloads_sqlite_commit_seconds_count") >= 2


def test_a_command_that_fails_outside_the_rules_is_timed_and_counted_as_failed() -> None:
    metrics = Metrics()
    metrics.outcome("acquire_license", "FAILED", 0.5)

    assert _count(metrics, "downloads_command_seconds_count", command="acquire_license", outcome="failed") == 1
    assert _count(metrics, "downloads_command_outcomes_total", command="acquire_license", code="FAILED") == 1
