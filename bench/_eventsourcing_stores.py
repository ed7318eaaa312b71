"""The measuring core of the ``eventsourcing_stores`` and ``eventsourcing_cassandra`` benchmarks.

One application class of the library (``CounterApp``) runs on several persistence modules at
once; each contender is a function from the round number to the application's environment
(a fresh store per round). Imported only when one of those benchmarks runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench._eventsourcing_side import ApplicationSide
from bench.harness import median, progress

NOTE = "x" * 80  # the same payload string in every event, as in vs_eventsourcing

#: a contender: the environment of its application in round ``r``
Contender = Callable[[int], dict[str, str]]


def _unit(
    sides: dict[str, ApplicationSide], action: str, arg: int | None, k: int, times: dict[str, list[float]]
) -> None:
    """One unit of work on every side back to back; who goes first rotates with ``k``."""
    names = list(sides)
    for name in names[k % len(names) :] + names[: k % len(names)]:
        fn: Callable[..., Any] = getattr(sides[name], action)
        t0 = time.perf_counter()
        if arg is None:
            fn()
        else:
            fn(arg)
        times[name].append(time.perf_counter() - t0)


def measure(contenders: dict[str, Contender], *, n: int, m: int, passes: int, rounds: int) -> dict[str, Any]:
    """Per phase (``save``, ``get``) and contender: the unit times of every round, paired unit by unit."""
    times: dict[str, dict[str, list[float]]] = {phase: {name: [] for name in contenders} for phase in ("save", "get")}
    rates: dict[str, dict[str, list[float]]] = {phase: {name: [] for name in contenders} for phase in ("save", "get")}
    for r in range(rounds):
        sides = {name: ApplicationSide(env(r), NOTE) for name, env in contenders.items()}
        here: dict[str, dict[str, list[float]]] = {phase: {name: [] for name in contenders} for phase in times}
        try:
            k = r
            for i in range(n):
                _unit(sides, "create", None, k, here["save"])
                k += 1
                for _ in range(m):
                    _unit(sides, "command", i, k, here["save"])
                    k += 1
            for p in range(passes):
                for i in range(n):
                    _unit(sides, "load", i, k, here["get"])
                    k += 1
                if p == 0:
                    for name, side in sides.items():
                        if side.load(0) != m:
                            raise RuntimeError(f"{name} got total {side.load(0)}, expected {m}")
        finally:
            for side in sides.values():
                side.close()
        for phase, per in here.items():
            for name, values in per.items():
                times[phase][name] += values
                rates[phase][name].append(len(values) / sum(values))
        progress(f"round {r + 1}/{rounds} done")
    return {"times": times, "rates": rates}


def paired_ratio(times: dict[str, list[float]], ours: str, theirs: str) -> float:
    """The median over paired units of (their time / our time): above 1 when ours is faster."""
    return median([t / o for o, t in zip(times[ours], times[theirs], strict=True)])


def cpu_per_unit(env: dict[str, str], *, n: int, m: int) -> dict[str, float]:
    """CPU µs per save and per get of one contender run alone (what its code costs besides waiting)."""
    side = ApplicationSide(env, NOTE)
    try:
        c0 = time.process_time()
        for i in range(n):
            side.create()
            for _ in range(m):
                side.command(i)
        c1 = time.process_time()
        for i in range(n):
            side.load(i)
        c2 = time.process_time()
    finally:
        side.close()
    return {"save": (c1 - c0) / (n * (m + 1)) * 1e6, "get": (c2 - c1) / n * 1e6}


def rows(
    result: dict[str, Any], cpu: dict[str, dict[str, float]], *, ours: str, m: int
) -> tuple[list[dict[str, Any]], dict[str, dict[str, float]]]:
    """One table row per phase and contender, and the paired ratios of ``ours`` against each other contender."""
    table: list[dict[str, Any]] = []
    ratios: dict[str, dict[str, float]] = {}
    for phase, work in (("save", "save (one command, one commit)"), ("get", f"get (an aggregate of {m + 1} events)")):
        ratios[phase] = {}
        for name, values in result["rates"][phase].items():
            ratio = 1.0 if name == ours else paired_ratio(result["times"][phase], ours, name)
            ratios[phase][name] = ratio
            table.append(
                {
                    "work": work,
                    "store": name,
                    "ops/s": median(values),
                    f"{ours} x this": ratio,
                    "CPU µs/op": cpu[name][phase],
                }
            )
    return table, ratios
