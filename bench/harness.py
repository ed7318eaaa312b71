"""The benchmark harness: find ``bench_<name>`` modules, run them, write the report.

A benchmark module exposes ``NAME`` (a short identifier, used on the command
line and as the key in ``docs/benchmarks.json``), ``TITLE`` and
``run(quick: bool) -> dict``. The dict is either a result::

    {"title": str, "method": str, "rows": [{column: value, ...}, ...],
     "goals": [{"goal": str, "value": float, "target": float, "holds": bool}, ...]}

or ``{"skipped": "reason"}`` when a prerequisite is missing. The harness adds
when it ran and whether ``--quick`` was on, merges it into the JSON file (so a
run of one benchmark keeps the others' results) and regenerates the Markdown
report from the whole JSON file. See ``bench/README.md``.

The helpers below (:func:`median`, :func:`interleaved`, :func:`goal_at_least`,
:func:`goal_at_most`, :func:`scratch_dir`) are for benchmark modules.
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = [
    "BENCH_PACKAGE",
    "discover",
    "goal_at_least",
    "goal_at_most",
    "interleaved",
    "machine_info",
    "median",
    "render_markdown",
    "run_benchmarks",
    "scratch_dir",
]

BENCH_PACKAGE = "bench"
ROOT = Path(__file__).resolve().parent.parent
JSON_PATH = ROOT / "docs" / "benchmarks.json"
MD_PATH = ROOT / "docs" / "benchmarks.md"

Result = dict[str, Any]


# -- helpers for benchmark modules ---------------------------------------------


def median(values: Sequence[float]) -> float:
    """The median of a non-empty sequence."""
    return float(statistics.median(values))


def interleaved(contenders: Sequence[str], rounds: int) -> Iterator[tuple[int, str]]:
    """Yield ``(round, contender)`` for ``rounds`` rounds, rotating who goes first.

    On a noisy machine, running contenders one after the other in alternating
    order spreads slow periods over all of them instead of one.
    """
    n = len(contenders)
    for r in range(rounds):
        for i in range(n):
            yield r, contenders[(r + i) % n]


def goal_at_least(goal: str, value: float, target: float) -> dict[str, Any]:
    """A goal that holds when ``value >= target``."""
    return {"goal": goal, "value": round(value, 3), "target": target, "holds": value >= target}


def goal_at_most(goal: str, value: float, target: float) -> dict[str, Any]:
    """A goal that holds when ``value <= target``."""
    return {"goal": goal, "value": round(value, 3), "target": target, "holds": value <= target}


@contextmanager
def scratch_dir(prefix: str = "eskit-bench-") -> Iterator[Path]:
    """A fresh temporary folder (under ``$TMPDIR``, default ``/tmp``), removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def progress(message: str) -> None:
    """Print a progress line to stderr (stdout stays free for the caller)."""
    print(f"  {message}", file=sys.stderr, flush=True)


# -- discovery and running -------------------------------------------------------


def discover() -> dict[str, ModuleType]:
    """Import every ``bench/bench_*.py`` module; return them by ``NAME``, sorted by file name."""
    found: dict[str, ModuleType] = {}
    package = importlib.import_module(BENCH_PACKAGE)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if not info.name.startswith("bench_"):
            continue
        module = importlib.import_module(f"{BENCH_PACKAGE}.{info.name}")
        for attr in ("NAME", "TITLE", "run"):
            if not hasattr(module, attr):
                raise RuntimeError(f"{module.__name__} has no {attr}")
        name = module.NAME
        if name in found:
            raise RuntimeError(f"benchmark name {name!r} is used by two modules")
        found[name] = module
    return found


def machine_info() -> dict[str, Any]:
    """CPU model, core count, RAM, Python and SQLite versions, and the date."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram_gib: float | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "os": platform.platform(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def run_one(module: ModuleType, *, quick: bool) -> Result:
    """Run one benchmark module; an exception becomes an ``error`` result."""
    started = time.perf_counter()
    try:
        result: Result = dict(module.run(quick))
    except Exception as exc:
        traceback.print_exc(file=sys.stderr)
        result = {"title": module.TITLE, "error": f"{type(exc).__name__}: {exc}"}
    result.setdefault("title", module.TITLE)
    result["quick"] = quick
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["measured_at"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return result


def run_benchmarks(
    names: Sequence[str],
    *,
    quick: bool,
    json_path: Path = JSON_PATH,
    md_path: Path = MD_PATH,
    log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
) -> bool:
    """Run the named benchmarks (all when empty), update the JSON and Markdown reports.

    Returns whether every benchmark ran and every goal held (skips count as fine).
    Raises ``KeyError`` for an unknown name, before running anything.
    """
    modules = discover()
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise KeyError(f"unknown benchmark {', '.join(unknown)} (known: {', '.join(modules)})")
    selected = list(names) or list(modules)
    data = load_json(json_path)
    data["machine"] = machine_info()
    ok = True
    for name in selected:
        log(f"bench {name}{' (quick)' if quick else ''} ...")
        result = run_one(modules[name], quick=quick)
        data["benchmarks"][name] = result
        if "error" in result:
            ok = False
            log(f"bench {name}: error: {result['error']}")
        elif "skipped" in result:
            log(f"bench {name}: skipped: {result['skipped']}")
        else:
            for goal in result.get("goals", []):
                ok = ok and bool(goal["holds"])
                mark = "ok  " if goal["holds"] else "MISS"
                log(f"  {mark} {goal['goal']}: {goal['value']:g} (target {goal['target']:g})")
            log(f"bench {name}: done in {result['seconds']} s")
        # Write after each benchmark, so an interrupted run keeps what it measured.
        write_reports(data, list(modules), json_path=json_path, md_path=md_path)
    log(f"wrote {json_path} and {md_path}")
    return ok


def load_json(path: Path) -> dict[str, Any]:
    """The stored results, or an empty skeleton when the file is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"machine": {}, "benchmarks": {}}
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), dict):
        return {"machine": {}, "benchmarks": {}}
    data.setdefault("machine", {})
    return data


def write_reports(data: dict[str, Any], order: Sequence[str], *, json_path: Path, md_path: Path) -> None:
    """Write the JSON results and the Markdown report made from them (atomically each)."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(json_path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    _write_atomic(md_path, render_markdown(data, order))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


# -- Markdown ----------------------------------------------------------------------


def render_markdown(data: dict[str, Any], order: Sequence[str] = ()) -> str:
    """The report: machine info, then each benchmark's title, method, table and goals."""
    machine = data.get("machine", {})
    lines = [
        "# Benchmarks",
        "",
        "Generated by `python -m bench` (`make bench`) from `docs/benchmarks.json`; do not edit by hand.",
        "Speeds are compared as ratios measured side by side in one run, never across runs.",
        "",
        "## Machine (latest run)",
        "",
        f"- CPU: {machine.get('cpu', '?')} ({machine.get('cores', '?')} cores)",
        f"- RAM: {machine.get('ram_gib', '?')} GiB",
        f"- Python {machine.get('python', '?')}, SQLite {machine.get('sqlite', '?')}",
        f"- OS: {machine.get('os', '?')}",
        f"- Date: {machine.get('date', '?')}",
        "",
    ]
    benchmarks: dict[str, Result] = data.get("benchmarks", {})
    names = [n for n in order if n in benchmarks] + sorted(n for n in benchmarks if n not in order)
    if names:
        lines += ["## Summary", "", "| Benchmark | Goal | Value | Target | Holds |", "|---|---|---|---|---|"]
        for name in names:
            result = benchmarks[name]
            if "skipped" in result or "error" in result:
                state = "skipped" if "skipped" in result else "error"
                lines.append(f"| `{name}` | {state} | | | |")
            for goal in result.get("goals", []):
                mark = "✅" if goal["holds"] else "❌"
                lines.append(f"| `{name}` | {goal['goal']} | {_fmt(goal['value'])} | {_fmt(goal['target'])} | {mark} |")
        lines.append("")
    for name in names:
        lines += _render_result(name, benchmarks[name])
    return "\n".join(lines).rstrip() + "\n"


def _render_result(name: str, result: Result) -> list[str]:
    when = result.get("measured_at", "?")
    quick = ", `--quick`" if result.get("quick") else ""
    lines = [
        f"## {result.get('title', name)}",
        "",
        f"`{name}`, measured {when}{quick}, took {result.get('seconds', '?')} s.",
        "",
    ]
    if "error" in result:
        return [*lines, f"**Error:** `{result['error']}`", ""]
    if "skipped" in result:
        return [*lines, f"_Skipped: {result['skipped']}_", ""]
    if result.get("method"):
        lines += [f"**Method.** {result['method']}", ""]
    rows: list[dict[str, Any]] = result.get("rows", [])
    if rows:
        columns: list[str] = []
        for row in rows:
            columns += [c for c in row if c not in columns]
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "|".join("---" for _ in columns) + "|")
        for row in rows:
            lines.append("| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |")
        lines.append("")
    goals = result.get("goals", [])
    if goals:
        lines += ["Goals:", ""]
        for goal in goals:
            mark = "✅" if goal["holds"] else "❌"
            lines.append(f"- {mark} {goal['goal']}: **{_fmt(goal['value'])}** (target {_fmt(goal['target'])})")
        lines.append("")
    for note in result.get("notes", []):
        lines += [f"> {note}", ""]
    return lines


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        magnitude = abs(value)
        if magnitude >= 1000:
            return f"{value:,.0f}"
        if magnitude >= 100:
            return f"{value:.0f}"
        if magnitude >= 10:
            return f"{value:.1f}"
        if magnitude >= 0.1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    return str(value).replace("|", "\\|")
