"""An eventsourcing application on eskit's SQLite store against the same application on the library's stores."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

from bench.harness import goal_at_least, progress, scratch_dir

NAME = "eventsourcing_stores"
TITLE = "The eventsourcing library's application on eskit's SQLite store and on its own SQLite and POPO stores"

OURS = "eskit SQLite"
#: the least share of the library's own SQLite speed the module must keep (it adds a translation layer)
TARGET = 0.8


def contenders(workdir: Path) -> dict[str, Any]:
    """Each contender's application environment in round ``r``: a fresh file (or memory) per round."""
    return {
        OURS: lambda r: {
            "PERSISTENCE_MODULE": "eskit.interop.eventsourcing",
            "ESKIT_STORE_URL": f"sqlite:///{workdir}/eskit-{r}.db",
        },
        "eventsourcing SQLite": lambda r: {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": f"{workdir}/es-{r}.db",
        },
        "eventsourcing POPO": lambda r: {"PERSISTENCE_MODULE": "eventsourcing.popo"},
    }


def run(quick: bool) -> dict[str, Any]:
    try:
        version = metadata.version("eventsourcing")
    except metadata.PackageNotFoundError:
        return {"skipped": "the eventsourcing library is not installed (pip install -e '.[eventsourcing]')"}
    from bench._eventsourcing_stores import cpu_per_unit, measure, rows

    n, m = (20, 5) if quick else (100, 10)
    rounds, passes = (2, 3) if quick else (3, 5)
    with scratch_dir() as workdir:
        envs = contenders(workdir)
        result = measure(envs, n=n, m=m, passes=passes, rounds=rounds)
        progress("unpaired CPU pass")
        cpu = {name: cpu_per_unit(env(rounds), n=n, m=m) for name, env in envs.items()}
    table, ratios = rows(result, cpu, ours=OURS, m=m)
    goals = [
        goal_at_least(
            f"save on eskit SQLite ≥ {TARGET}x the library's SQLite", ratios["save"]["eventsourcing SQLite"], TARGET
        ),
        goal_at_least(
            f"get on eskit SQLite ≥ {TARGET}x the library's SQLite", ratios["get"]["eventsourcing SQLite"], TARGET
        ),
    ]
    method = (
        f"One application class of eventsourcing {version} (`CounterApp`, no snapshots, no aggregate cache; the "
        f"`ESCounter` aggregate of `vs_eventsourcing`, every event carrying the same 80-character note) runs on "
        f"three persistence modules at once: `eskit.interop.eventsourcing` on a fresh eskit SQLite file, the "
        f"library's `eventsourcing.sqlite` on a fresh file, and its in-memory `eventsourcing.popo`. Each creates "
        f"{n} aggregates and runs {m} increment commands on each (`app.save` after every create and command: one "
        f"insert, one commit), then gets every aggregate {passes} times (`app.repository.get`). The contenders take "
        f"turns unit by unit (one save, or one get), rotating who goes first; {rounds} rounds on fresh stores. "
        f"`{OURS} x this` is the median over paired units of (this contender's time / eskit's): above 1 where "
        f"eskit is faster. ops/s are medians over rounds; CPU µs/op come from a separate unpaired pass. Both SQLite "
        f"stores fsync every commit (WAL; see `vs_eventsourcing` for the check); POPO keeps nothing."
    )
    notes = [
        "POPO is the floor of the library's own work (no I/O): the distance to it is the store's cost, fsync included."
    ]
    return {"title": TITLE, "method": method, "rows": table, "goals": goals, "notes": notes}
