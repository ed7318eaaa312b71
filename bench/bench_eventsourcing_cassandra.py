"""An eventsourcing application on eskit's Cassandra store (1 node) against it on the library's own stores."""

from __future__ import annotations

import shutil
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.harness import progress, scratch_dir

NAME = "eventsourcing_cassandra"
TITLE = "The eventsourcing library's application on eskit's Cassandra store (1 node) and on its own SQLite and POPO"

OURS = "eskit Cassandra, 1 node"


def run(quick: bool) -> dict[str, Any]:
    try:
        version = metadata.version("eventsourcing")
        import cassandra  # noqa: F401
    except (metadata.PackageNotFoundError, ImportError):
        return {"skipped": "needs the eventsourcing library and the Cassandra driver (their extras)"}
    if shutil.which("mvn") is None and not Path(".cache/cassandra").exists():
        return {"skipped": "no Maven to fetch Cassandra with"}
    from bench._eventsourcing_stores import cpu_per_unit, measure, rows
    from tools.cassandra_cluster import LocalCassandraCluster

    n, m = (10, 5) if quick else (50, 10)
    rounds, passes = (2, 3) if quick else (3, 5)
    cluster = LocalCassandraCluster(1)
    progress("1-node cluster: starting")
    cluster.start()
    try:
        hosts = ",".join(cluster.contact_points)

        def keyspace(r: int) -> str:  # a fresh keyspace per round, as the SQLite contenders get fresh files
            return f"cassandra://{hosts}/es_bench_{r}_{uuid.uuid4().hex[:8]}?dc=dc1&replication=1&create_schema=true"

        with scratch_dir() as workdir:
            envs: dict[str, Any] = {
                OURS: lambda r: {"PERSISTENCE_MODULE": "eskit.interop.eventsourcing", "ESKIT_STORE_URL": keyspace(r)},
                "eventsourcing SQLite": lambda r: {
                    "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                    "SQLITE_DBNAME": f"{workdir}/es-{r}.db",
                },
                "eventsourcing POPO": lambda r: {"PERSISTENCE_MODULE": "eventsourcing.popo"},
            }
            result = measure(envs, n=n, m=m, passes=passes, rounds=rounds)
            progress("unpaired CPU pass")
            cpu = {name: cpu_per_unit(env(rounds), n=n, m=m) for name, env in envs.items()}
    finally:
        cluster.stop(wipe=True)
    table, _ = rows(result, cpu, ours=OURS, m=m)
    method = (
        f"The `eventsourcing_stores` measurement (the same `CounterApp` of eventsourcing {version}, paired unit by "
        f"unit, rotating who goes first) with eskit's SQLite file replaced by eskit's Cassandra store: a local "
        f"1-node cluster started by `tools.cassandra_cluster` (Cassandra 5.0, 512 MB heap, on this 2-core machine), "
        f"a fresh keyspace per round with replication factor 1, LOCAL_QUORUM and LOCAL_SERIAL, through "
        f"`eskit.interop.eventsourcing` (each save: the feed hint, then one conditional batch; each get: one "
        f"partition read). {n} aggregates, {m} commands each, {passes} gets of each, {rounds} rounds. "
        f"`{OURS} x this` is the median over paired units of (this contender's time / eskit's)."
    )
    notes = [
        "No goal: this row shows what a linearizable, multi-region-capable store costs an application that "
        "the library's single-file and in-memory stores cannot serve; the store's own limits are in `cassandra`."
    ]
    return {"title": TITLE, "method": method, "rows": table, "goals": [], "notes": notes}
