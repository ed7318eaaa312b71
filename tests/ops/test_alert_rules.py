"""The shipped alerting rules: valid for Prometheus, each alert unit-tested firing and quiet, each with a runbook."""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.ops.support import OPERATIONS, RULES, RULES_TEST, tool


def _alerts() -> list[dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_accepts_the_rules() -> None:
    done = subprocess.run(
        [tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_passes_its_promtool_unit_tests() -> None:
    done = subprocess.run(
        [tool("promtool"), "test", "rules", str(RULES_TEST)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=RULES_TEST.parent,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_case_where_it_fires_and_one_where_it_does_not() -> None:
    cases = yaml.safe_load(RULES_TEST.read_text(encoding="utf-8"))["tests"]
    fires, quiet = set(), set()
    for case in cases:
        for check in case.get("alert_rule_test", []):
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {str(alert["alert"]) for alert in _alerts()}
    assert len(names) >= 10
    assert names - fires == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested quiet"


def test_every_alert_points_to_its_runbook_entry_in_the_operations_guide() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in text.splitlines()
        if line.startswith("#")
    }
    for alert in _alerts():
        annotations = alert["annotations"]
        assert isinstance(annotations, dict)
        page, _, anchor = str(annotations["runbook"]).partition("#")
        assert page == "docs/operations.md", alert["alert"]
        assert anchor == str(alert["alert"]).lower(), alert["alert"]
        assert anchor in anchors, f"no heading for {alert['alert']} in docs/operations.md"
        assert alert["labels"]["severity"] in ("page", "ticket"), alert["alert"]  # type: ignore[index]
