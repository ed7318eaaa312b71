"""Where the shipped monitoring files are, and the Prometheus tools the tests run them with."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

__all__ = ["DASHBOARD", "OPERATIONS", "RULES", "RULES_TEST", "tool"]

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "ops" / "prometheus" / "rules.yml"
RULES_TEST = ROOT / "ops" / "prometheus" / "rules_test.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "downloads.json"
OPERATIONS = ROOT / "docs" / "operations.md"


def tool(name: str) -> str:
    """The path of ``prometheus`` or ``promtool``; fails (never skips) when Debian's package is missing."""
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is needed for the monitoring tests: apt-get install prometheus (`make test` does)")
    return found
