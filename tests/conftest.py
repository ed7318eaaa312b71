from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DOWNLOADS_* setting leaks from the developer's shell into a test."""
    import os

    for name in list(os.environ):
        if name.startswith("DOWNLOADS_") or name == "PROMETHEUS_MULTIPROC_DIR":
            monkeypatch.delenv(name)
