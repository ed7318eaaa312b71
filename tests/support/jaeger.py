"""The OTLP receiver of the trace tests: one Jaeger per test session, started on first use, always stopped."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tools.jaeger import LocalJaeger

__all__ = ["ARRIVAL_SECONDS", "jaeger", "parent_of", "tags_of", "wait_for_spans"]

#: how long spans may take to arrive (servers under test export every 100 ms)
ARRIVAL_SECONDS = 30.0


@pytest.fixture(scope="session")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalJaeger]:
    """Jaeger with memory storage on free loopback ports (built first if the cache has none)."""
    receiver = LocalJaeger(tmp_path_factory.mktemp("jaeger"))
    try:
        receiver.start(timeout=60)
        yield receiver
    finally:
        receiver.stop()


def tags_of(span: dict[str, Any]) -> dict[str, Any]:
    """A span's attributes (Jaeger's tags, the span kind among them) as a dict."""
    return {tag["key"]: tag["value"] for tag in span.get("tags", [])}


def parent_of(span: dict[str, Any]) -> str | None:
    """The id of the span's parent (hex), None for a root."""
    refs = [ref["spanID"] for ref in span.get("references", []) if ref.get("refType") == "CHILD_OF"]
    return refs[0] if refs else None


def wait_for_spans(
    fetch: Callable[[], list[dict[str, Any]]], done: Callable[[list[dict[str, Any]]], bool]
) -> list[Any]:
    """``fetch()`` again until ``done`` says its spans are all there, or ``ARRIVAL_SECONDS`` passed."""
    deadline = time.monotonic() + ARRIVAL_SECONDS
    spans = fetch()
    while not done(spans) and time.monotonic() < deadline:
        time.sleep(0.2)
        spans = fetch()
    return spans
