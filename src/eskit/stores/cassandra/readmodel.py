"""Read models in the cluster: per-stream checkpoints, effects idempotent in position, versions and a lease.

Cassandra has no transaction across partitions, and a read model's rows live
in many (by title, by studio, by device). So instead of committing a batch and
its checkpoint together, every effect of an event is made *idempotent in
position*: each cell a projection writes belongs to rows written by one stream
only, and is written ``USING TIMESTAMP`` the event's position in that stream.
Cassandra keeps, per cell, the write with the highest timestamp, so:

* applying an event again (a runner killed after its effects and before its
  checkpoint, or two runners at once) writes the same cells at the same
  timestamps: no further effect;
* applying an older event after a newer one (a runner paused and woken up)
  loses to the newer cells: it cannot undo anything.

Rows that many streams touch (an index of the titles reported in a month) hold
no values, only their key, so writing them twice is the same. The checkpoint of
stream ``s`` is a cell of its own, also written at its position, so it only
moves forward. Together: each event has exactly one effect, with no fencing
needed; the lease below only keeps runners from doing the same work twice.

Each projection version has its own tables (``rm_<name>_v<version>_...``). The
registry ``eskit_projections`` says which versions exist and which answers
reads: a rebuild registers a new version as ``building``, sweeps every stream
into it while the old one serves, marks it ``active`` and drops the old one.
Tables are created only by the process that registers a version (the runner
or a rebuild), never by readers, so two processes do not race a schema change.

A stream a version cannot apply (an event that does not decode, that the
projection cannot take, or that cannot be read back) is skipped, as on SQLite:
``eskit_projection_skips`` (one partition, at most
:data:`~eskit.projection.MAX_SKIPPED_STREAMS` rows per version) records from
which position, up to where and why, and the stream's checkpoint moves on. The
first position is written at a timestamp that falls as the position grows, so
the earliest skip wins whoever writes last; the position skipped up to, at its
own position, so the latest wins. Every runner reads the partition at the start
of each round, so a stream skipped by one runner is skipped by the next. An event
that fails part-way may leave the effects it wrote before failing (each
idempotent); a rebuild writes them again whole.
"""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eskit.events import StoredEvent
from eskit.projection import MAX_SKIPPED_STREAMS, SkippedStream, StreamTarget, TooManySkipped, cannot_apply
from eskit.stores.cassandra.session import CassandraSession, translated

__all__ = ["CassandraProjection", "CassandraReadModels", "Effects", "Version"]

log = logging.getLogger(__name__)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS {ks}.eskit_projections (name text, version int, state text, cursor text,"
    " updated_at bigint, error text, PRIMARY KEY (name, version))",
    "CREATE TABLE IF NOT EXISTS {ks}.eskit_projection_counts (name text, version int, applied counter,"
    " PRIMARY KEY (name, version))",
    "CREATE TABLE IF NOT EXISTS {ks}.eskit_leases (name text PRIMARY KEY, holder text, fence bigint,"
    " expires_at double)",
    "CREATE TABLE IF NOT EXISTS {ks}.eskit_projection_skips (bucket int, name text, version int, stream_id text,"
    " position bigint, upto bigint, error text, PRIMARY KEY ((bucket), name, version, stream_id))",
)
_TABLES = ("eskit_projections", "eskit_projection_counts", "eskit_leases", "eskit_projection_skips")
#: skips' first positions are written at ``FIRST_WINS - position`` (the earliest wins), and deleted above it
FIRST_WINS = 2**62
#: how much of an error's text a skip keeps
_ERROR_CHARS = 500


@dataclass(frozen=True)
class Version:
    """A projection version in the registry: ``building`` (being swept), ``active`` (answers reads).

    ``updated_at`` (microseconds) and ``error`` are what the runner last reported, for every process to read.
    """

    name: str
    version: int
    state: str
    cursor: str | None
    updated_at: int | None = None
    error: str | None = None


class CassandraReadModels:
    """The registry of projection versions and the runner lease, in the store's keyspace."""

    def __init__(self, db: CassandraSession) -> None:
        self.db = db
        self.ks = db.settings.keyspace
        self._prepared: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._ready = False
        #: (name, version) -> stream -> first position skipped, as of the last :meth:`load_skips` and this runner's own
        self._skips: dict[tuple[str, int], dict[str, int]] = {}

    def prepare(self, cql: str) -> Any:
        """A prepared statement for ``cql`` (``{ks}`` is the keyspace), prepared once per process."""
        with self._lock:
            found = self._prepared.get(cql)
        if found is None:
            with translated("cannot prepare a read-model statement"):
                found = self.db.session.prepare(cql.format(ks=self.ks))
            with self._lock:
                self._prepared[cql] = found
        return found

    def run(self, cql: str, params: Sequence[Any] = (), *, serial: bool = False) -> Any:
        statement = self.prepare(cql).bind(params)
        if " IF " in cql:  # a conditional write: Paxos at the store's serial level
            statement.serial_consistency_level = self.db.serial_cl
        if not serial:
            # Reads too: what a runner writes at the commit level (QUORUM when several regions write)
            # must be what the next runner reads, wherever it runs.
            statement.consistency_level = self.db.write_cl
        return self.db.query(statement, serial=serial, idempotent=" IF " not in cql)

    def has_table(self, table: str) -> bool:
        keyspace = self.db.cluster.metadata.keyspaces.get(self.ks)
        return keyspace is not None and table in keyspace.tables

    def create(self, statements: Sequence[str]) -> None:
        """Run schema statements (``{ks}`` for the keyspace) and wait until every node agrees on them."""
        with translated("cannot create read-model tables"):
            # All at once: each is answered after the driver waited for the nodes to agree on it, and
            # they touch different tables (one process creates them: see the module docstring).
            futures = [self.db.session.execute_async(s.format(ks=self.ks), timeout=60) for s in statements]
            for future in futures:
                future.result()
            if not self.db.cluster.control_connection.wait_for_schema_agreement(wait_time=60):
                # A node that is down or paused learns the tables when it is back; until then a
                # statement it coordinates is refused, and the runner tries that stream again.
                log.warning("read-model tables created, but not every node agrees on the schema yet")

    def ensure(self) -> None:
        """Create the registry and lease tables (by a runner or a rebuild, not by readers)."""
        if not self._ready:
            if not all(self.has_table(t) for t in _TABLES):  # a keyspace from before a table: added
                self.create(_SCHEMA)
            self._ready = True

    # -- the registry ---------------------------------------------------------------

    def versions(self, name: str) -> list[Version]:
        if not self.has_table("eskit_projections"):
            return []
        rows = self.run(
            "SELECT version, state, cursor, updated_at, error FROM {ks}.eskit_projections WHERE name = ?", (name,)
        )
        return [Version(name, r.version, r.state, r.cursor, r.updated_at, r.error) for r in rows]

    def versions_of(self, names: Sequence[str]) -> dict[str, list[Version]]:
        """The registered versions of several projections (one request), each list in version order."""
        found: dict[str, list[Version]] = {name: [] for name in names}
        if not self.has_table("eskit_projections"):
            return found
        rows = self.run(
            "SELECT name, version, state, cursor, updated_at, error FROM {ks}.eskit_projections WHERE name IN ?",
            (list(names),),
        )
        for r in rows:
            found.setdefault(r.name, []).append(Version(r.name, r.version, r.state, r.cursor, r.updated_at, r.error))
        return {name: sorted(versions, key=lambda v: v.version) for name, versions in found.items()}

    def report(self, progress: Sequence[tuple[str, int, int, int | None, str | None]]) -> None:
        """Record a runner's progress, ``(name, version, events applied since, updated_at, error)`` each, at once."""
        statements: list[tuple[str, tuple[object, ...]]] = []
        for name, version, applied, updated_at, error in progress:
            if applied:
                statements.append(
                    (
                        "UPDATE {ks}.eskit_projection_counts SET applied = applied + ? WHERE name = ? AND version = ?",
                        (applied, name, version),
                    )
                )
            statements.append(
                (
                    "UPDATE {ks}.eskit_projections SET updated_at = ?, error = ? WHERE name = ? AND version = ?",
                    (updated_at, error, name, version),
                )
            )
        futures = []
        for cql, params in statements:
            bound = self.prepare(cql).bind(params)
            bound.consistency_level = self.db.write_cl
            futures.append(self.db.session.execute_async(bound))
        for future in futures:
            future.result()

    def applied(self, name: str, version: int) -> int:
        """Events applied to a version by every runner so far (an event applied twice counts twice)."""
        if not self.has_table("eskit_projection_counts"):
            return 0
        row = self.run(
            "SELECT applied FROM {ks}.eskit_projection_counts WHERE name = ? AND version = ?", (name, version)
        ).one()
        return int(row.applied) if row is not None and row.applied is not None else 0

    def register(self, name: str, version: int, state: str, cursor: str | None = None) -> None:
        self.run(
            "INSERT INTO {ks}.eskit_projections (name, version, state, cursor) VALUES (?, ?, ?, ?)",
            (name, version, state, cursor),
        )

    def set_cursor(self, name: str, version: int, cursor: str | None) -> None:
        self.run("UPDATE {ks}.eskit_projections SET cursor = ? WHERE name = ? AND version = ?", (cursor, name, version))

    def forget(self, name: str, version: int) -> None:
        self.run("DELETE FROM {ks}.eskit_projections WHERE name = ? AND version = ?", (name, version))
        self.run("DELETE FROM {ks}.eskit_projection_counts WHERE name = ? AND version = ?", (name, version))
        if self.has_table("eskit_projection_skips"):
            self.run(
                "DELETE FROM {ks}.eskit_projection_skips USING TIMESTAMP ? WHERE bucket = 0 AND name = ?"
                " AND version = ?",
                (FIRST_WINS, name, version),
            )

    # -- skipped streams (see the module docstring) -------------------------------------

    def read_skips(self) -> dict[tuple[str, int], list[SkippedStream]]:
        """Every version's skipped streams (one partition read), and the cache :meth:`skipped_from` answers from."""
        if not self.has_table("eskit_projection_skips"):
            return {}
        found: dict[tuple[str, int], list[SkippedStream]] = {}
        rows = self.run(
            "SELECT name, version, stream_id, position, upto, error FROM {ks}.eskit_projection_skips WHERE bucket = 0"
        )
        for r in rows:
            upto = r.upto if r.upto is not None else r.position
            found.setdefault((r.name, r.version), []).append(
                SkippedStream(r.stream_id, int(r.position), max(1, int(upto) - int(r.position) + 1), str(r.error))
            )
        with self._lock:
            self._skips = {key: {s.stream_id: s.position for s in skipped} for key, skipped in found.items()}
        return found

    def skipped_from(self, name: str, version: int, stream_id: str) -> int | None:
        """The first position of the stream that version skips, if it skips it (as last read, or skipped here)."""
        with self._lock:
            return self._skips.get((name, version), {}).get(stream_id)

    def skip(self, name: str, version: int, stream_id: str, position: int, upto: int, error: str) -> None:
        """Record that the version skips the stream from ``position``, up to ``upto`` so far, because of ``error``.

        Raises :class:`~eskit.projection.TooManySkipped` once the version skips
        :data:`~eskit.projection.MAX_SKIPPED_STREAMS` streams.
        """
        with self._lock:
            held = self._skips.setdefault((name, version), {})
            known = stream_id in held
            if not known and len(held) >= MAX_SKIPPED_STREAMS:
                raise TooManySkipped(
                    f"{name}@{version}: more than {MAX_SKIPPED_STREAMS} streams cannot be applied (the last, "
                    f"{stream_id}@{position}: {error}): this looks like a fault of the projection's code, not damage; "
                    "fix it, then rebuild"
                )
            held[stream_id] = min(position, held.get(stream_id, position))
        if not known:
            log.warning(
                "projection %s@%d skips stream %s from position %d: %s", name, version, stream_id, position, error
            )
            self.run(
                "INSERT INTO {ks}.eskit_projection_skips (bucket, name, version, stream_id, position, error)"
                " VALUES (0, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
                (name, version, stream_id, position, error[:_ERROR_CHARS], FIRST_WINS - position),
            )
        self.extend_skip(name, version, stream_id, upto)

    def extend_skip(self, name: str, version: int, stream_id: str, upto: int) -> None:
        """The version skipped the stream up to ``upto`` now (the highest such write wins)."""
        self.run(
            "UPDATE {ks}.eskit_projection_skips USING TIMESTAMP ? SET upto = ? WHERE bucket = 0 AND name = ?"
            " AND version = ? AND stream_id = ?",
            (upto, upto, name, version, stream_id),
        )

    # -- the lease (conditional writes only: no plain write ever touches its partition) ----

    def acquire_lease(self, name: str, holder: str, *, ttl: float) -> int | None:
        """Take or renew lease ``name`` for ``holder``; its token, or None while another holds it."""
        self.ensure()
        now = time.time()
        row = self.run(
            "SELECT holder, fence, expires_at FROM {ks}.eskit_leases WHERE name = ?", (name,), serial=True
        ).one()
        if row is None:
            result = self.run(
                "INSERT INTO {ks}.eskit_leases (name, holder, fence, expires_at) VALUES (?, ?, 1, ?) IF NOT EXISTS",
                (name, holder, now + ttl),
            )
            return 1 if result.was_applied else None
        if row.holder != holder and row.expires_at > now:
            return None
        token = row.fence if row.holder == holder else row.fence + 1
        result = self.run(
            "UPDATE {ks}.eskit_leases SET holder = ?, fence = ?, expires_at = ? WHERE name = ? IF fence = ?",
            (holder, token, now + ttl, name, row.fence),
        )
        return token if result.was_applied else None

    def release_lease(self, name: str, holder: str) -> None:
        if self.has_table("eskit_leases"):
            self.run("UPDATE {ks}.eskit_leases SET expires_at = 0 WHERE name = ? IF holder = ?", (name, holder))

    def close(self) -> None:  # the session belongs to the stores
        pass


class Effects:
    """The writes of one batch, sent at once and awaited together (:meth:`flush`)."""

    def __init__(self, models: CassandraReadModels) -> None:
        self.models = models
        self._futures: list[Any] = []

    def write(self, cql: str, params: Sequence[Any]) -> None:
        """A write; its CQL says ``USING TIMESTAMP ?`` with the event's position (see the module docstring)."""
        statement = self.models.prepare(cql).bind(params)
        statement.consistency_level = self.models.db.write_cl
        self._futures.append((self.models.db.session.execute_async(statement), statement))

    def flush(self) -> None:
        """Wait for every write so far; one that failed is sent again (it is idempotent) with retries."""
        futures, self._futures = self._futures, []
        for future, statement in futures:
            try:
                future.result()
            except Exception:
                self.models.db.query(statement)


class CassandraProjection(StreamTarget):
    """A projection whose tables are in the cluster; subclasses give :meth:`tables` and :meth:`handle`."""

    name: str = ""

    def __init__(self, models: CassandraReadModels, *, version: int) -> None:
        self.models, self.version = models, version

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def prefix(self) -> str:
        """``{ks}.rm_<name>_v<version>_``: put before a table name in CQL."""
        return "{ks}." + self.table_prefix

    @property
    def table_prefix(self) -> str:
        return f"rm_{self.name}_v{self.version}_"

    @abc.abstractmethod
    def tables(self) -> Sequence[str]:
        """The DDL of the projection's tables (``{p}`` for :attr:`prefix`), besides its checkpoints."""

    @abc.abstractmethod
    def handle(self, stream_id: str, events: Sequence[StoredEvent], effects: Effects) -> None:
        """Write the effects of the stream's ``events`` (each at its own position) through ``effects``."""

    def ddl(self) -> list[str]:
        """Every statement that creates this version's tables, its checkpoints' too (``{ks}`` left to fill)."""
        ddl = [
            *self.tables(),
            "CREATE TABLE IF NOT EXISTS {p}checkpoints (stream_id text PRIMARY KEY, position bigint)",
        ]
        return [d.replace("{p}", self.prefix) for d in ddl]

    def create_tables(self) -> None:
        self.models.create(self.ddl())

    def exists(self) -> bool:
        return self.models.has_table(self.table_prefix + "checkpoints")

    def query(self, cql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of a read on this version's tables (``{p}`` for the prefix); ``[]`` before they exist."""
        if not self.exists():
            return []
        return list(self.models.run(cql.replace("{p}", self.prefix), params))

    def checkpoints(self, stream_ids: Sequence[str]) -> dict[str, int]:
        cql = "SELECT position FROM {p}checkpoints WHERE stream_id = ?".replace("{p}", self.prefix)
        statement = self.models.prepare(cql)
        statement.consistency_level = self.models.db.write_cl  # see CassandraReadModels.run
        results = self.models.db.query_all([(statement, (s,)) for s in stream_ids])
        found = {}
        for stream_id, rows in zip(stream_ids, results, strict=True):
            row = rows.one()
            found[stream_id] = int(row.position) if row is not None and row.position is not None else 0
        return found

    def apply(self, stream_id: str, events: Sequence[StoredEvent]) -> None:
        if not events:
            return
        last = events[-1].position
        if self.models.skipped_from(self.name, self.version, stream_id) is not None:
            self.models.extend_skip(self.name, self.version, stream_id, last)
        else:
            effects = Effects(self.models)
            try:
                self.handle(stream_id, events, effects)
            except Exception as exc:
                effects.flush()
                if not cannot_apply(exc):
                    raise
                self._one_by_one(stream_id, events)
            else:
                effects.flush()  # every effect stands before the checkpoint moves past them
        self._move(stream_id, last)

    def _one_by_one(self, stream_id: str, events: Sequence[StoredEvent]) -> None:
        """Apply ``events`` one at a time; record a skip from the first that cannot be applied."""
        for event in events:
            effects = Effects(self.models)
            try:
                self.handle(stream_id, [event], effects)
            except Exception as exc:
                effects.flush()
                if not cannot_apply(exc):
                    raise
                error = f"{type(exc).__name__}: {exc}"
                self.models.skip(self.name, self.version, stream_id, event.position, events[-1].position, error)
                return
            effects.flush()  # the next event may read what this one wrote

    def _move(self, stream_id: str, last: int) -> None:
        effects = Effects(self.models)
        effects.write(
            "INSERT INTO {p}checkpoints (stream_id, position) VALUES (?, ?) USING TIMESTAMP ?".replace(
                "{p}", self.prefix
            ),
            (stream_id, last, last),
        )
        effects.flush()

    def skip_unreadable(self, stream_id: str, position: int, reason: str, *, upto: int) -> None:
        if self.models.skipped_from(self.name, self.version, stream_id) is not None:
            self.models.extend_skip(self.name, self.version, stream_id, upto)
        else:
            self.models.skip(self.name, self.version, stream_id, position, upto, f"DamagedEvent: {reason}")
        self._move(stream_id, upto)

    def skipped(self) -> list[SkippedStream]:
        return self.models.read_skips().get((self.name, self.version), [])

    def drop(self) -> None:
        """Drop this version's tables (an old version, once a rebuilt one is active)."""
        keyspace = self.models.db.cluster.metadata.keyspaces.get(self.models.ks)
        names = [t for t in (keyspace.tables if keyspace else {}) if t.startswith(self.table_prefix)]
        self.models.create([f"DROP TABLE IF EXISTS {{ks}}.{table}" for table in names])
