"""Every benchmark module imports against today's code, so a move cannot break ``make bench`` unseen."""

from __future__ import annotations

import importlib
import pkgutil

import bench
from bench.harness import discover


def test_every_bench_module_imports_and_has_a_name_a_title_and_a_run() -> None:
    files = sorted(info.name for info in pkgutil.iter_modules(bench.__path__) if info.name.startswith("bench_"))

    found = discover()

    assert sorted(module.__name__.removeprefix("bench.") for module in found.values()) == files
    assert all(callable(module.run) and module.TITLE for module in found.values())


def test_the_library_contenders_import_when_the_bench_extra_is_installed() -> None:
    for name in ("bench._eventsourcing_side", "bench._eventsourcing_stores", "bench._service_es_side"):
        assert importlib.import_module(name).__name__ == name
