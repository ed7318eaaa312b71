"""Apache Cassandra stores: linearizable appends with lightweight transactions.

Layout (see ``docs/cassandra.md``)::

    events    PRIMARY KEY ((stream_id, bucket), position)   static column head
    snapshots PRIMARY KEY (stream_id, version)  newest first
    eskit_settings                                          bucket_size, recorded once

A stream's events are spread over partitions (*buckets*) of ``bucket_size``
positions so no partition grows without bound. An append of positions
``E+1 .. E+k`` (``E`` the expected version) goes, whole, into bucket
``E // bucket_size`` (so a long append may spill past the bucket's nominal end)
as one conditional batch on that partition: ``UPDATE ... SET head = E+k IF head
= E`` (``IF head = null`` for a bucket's first append) plus the event rows. The
Paxos round makes two appends at the same version exclude each other.

A bucket's first append also checks, at serial consistency, that the previous
bucket's head is ``E``: once the stream has moved into a new bucket, the old
one never changes again, so that check cannot go stale.

Unknown outcomes: when a conditional write times out, the same batch (same
event ids, same condition) is sent again. If it applies, the append happened
once; if not, the events at ``E+1..`` are read at serial consistency and
compared by event id, which tells our own earlier write from another writer's.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from eskit.events import NewEvent, Snapshot, StoredEvent
from eskit.exceptions import (
    ConcurrencyError,
    InterfaceError,
    OperationalError,
    SchemaError,
    StoreUnavailable,
    UnknownOutcome,
)
from eskit.store import TIME_STRIDE, EventStore, SnapshotStore
from eskit.timeutil import from_micros, to_micros
from eskit.validation import check_append, check_read

__all__ = ["CassandraEventStore", "CassandraSettings", "CassandraSnapshotStore", "open_cassandra_stores"]

log = logging.getLogger(__name__)

_CONSISTENCY_NAMES = ("ONE", "TWO", "THREE", "QUORUM", "ALL", "LOCAL_QUORUM", "EACH_QUORUM", "LOCAL_ONE")
_SERIAL_NAMES = ("SERIAL", "LOCAL_SERIAL")


def parse_replication(text: str) -> dict[str, int] | int:
    """``3`` (that many replicas in the local data centre) or ``dc1:3,dc2:3`` (per data centre)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    factors: dict[str, int] = {}
    for item in text.split(","):
        name, sep, count = item.strip().partition(":")
        if not sep or not name or not count.strip().isdigit() or not name.replace("_", "a").replace("-", "a").isalnum():
            raise InterfaceError(f"bad replication {text!r}: use a number or dc1:3,dc2:3")
        factors[name] = int(count)
    return factors


@dataclass(frozen=True)
class CassandraSettings:
    """Everything a ``cassandra://`` URL can say, with the defaults.

    ``cassandra://host1,host2[:port]/keyspace?dc=dc1&consistency=LOCAL_QUORUM
    &serial_consistency=SERIAL&write_consistency=QUORUM&single_writer_region=false
    &replication=dc1:3,dc2:3&bucket_size=10000&create_schema=false
    &connect_timeout=10&request_timeout=12&retries=5``

    Regions: when the keyspace is replicated to more than one data centre,
    conditional appends run their Paxos round at ``SERIAL`` (a global quorum) and
    commit at ``QUORUM``, so two regions can never both win the same version;
    ``LOCAL_SERIAL`` is refused there unless ``single_writer_region=true``
    declares that only one region ever accepts commands.
    """

    hosts: tuple[str, ...]
    keyspace: str
    port: int = 9042
    dc: str | None = None  # local data centre; None: the driver picks the first it sees
    consistency: str = "LOCAL_QUORUM"  # reads
    # The Paxos phase of conditional writes; None: SERIAL on a multi-DC keyspace, else LOCAL_SERIAL.
    serial_consistency: str | None = None
    # The commit of conditional writes; None: QUORUM on a multi-DC keyspace with several writing
    # regions, else the read consistency.
    write_consistency: str | None = None
    single_writer_region: bool = False  # only one region accepts commands (allows LOCAL_SERIAL on many DCs)
    # Used only when creating the keyspace: replicas in the local DC, or per DC ("dc1:3,dc2:3").
    replication: int | dict[str, int] = 3
    bucket_size: int = 10_000  # positions per partition; fixed for a keyspace once created
    create_schema: bool = False  # dev and tests only: create keyspace and tables if missing
    connect_timeout: float = 10.0
    request_timeout: float = 12.0
    retries: int = 5  # bounded retries (with backoff) on timeouts and unavailable replicas

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> CassandraSettings:
        """Parse a ``cassandra://`` URL; raise :class:`InterfaceError` naming what is wrong."""
        parts = urlsplit(url)
        if parts.scheme != "cassandra":
            raise InterfaceError(f"not a Cassandra URL: {url!r}")
        netloc = parts.netloc.rsplit("@", 1)[-1]
        port = 9042
        hosts: list[str] = []
        for item in netloc.split(","):
            host, _, host_port = item.partition(":")
            if host_port:
                if not host_port.isdigit():
                    raise InterfaceError(f"bad port {host_port!r} in {url!r}")
                port = int(host_port)
            if host:
                hosts.append(host)
        keyspace = parts.path.strip("/")
        if not hosts:
            raise InterfaceError(f"no hosts in {url!r}: use cassandra://host1,host2[:port]/keyspace")
        if not keyspace or not keyspace.replace("_", "a").isalnum() or len(keyspace) > 48:
            raise InterfaceError(f"bad keyspace {keyspace!r} in {url!r}: letters, digits and _ only")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        known = {
            "dc",
            "consistency",
            "serial_consistency",
            "write_consistency",
            "single_writer_region",
            "replication",
            "bucket_size",
            "create_schema",
            "connect_timeout",
            "request_timeout",
            "retries",
        }
        for key in query:
            if key not in known:
                raise InterfaceError(f"unknown option {key!r} in {url!r} (known: {', '.join(sorted(known))})")
        values: dict[str, Any] = {"hosts": tuple(hosts), "keyspace": keyspace, "port": port}
        try:
            if "dc" in query:
                values["dc"] = query["dc"]
            for key in ("consistency", "serial_consistency", "write_consistency"):
                if key in query:
                    values[key] = query[key].upper()
            if "replication" in query:
                values["replication"] = parse_replication(query["replication"])
            for key in ("bucket_size", "retries"):
                if key in query:
                    values[key] = int(query[key])
            for key in ("connect_timeout", "request_timeout"):
                if key in query:
                    values[key] = float(query[key])
            for key in ("create_schema", "single_writer_region"):
                if key in query:
                    values[key] = query[key].lower() in ("1", "true", "yes")
        except ValueError as exc:
            raise InterfaceError(f"bad option value in {url!r}: {exc}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        for name in ("consistency", "write_consistency"):
            value = getattr(settings, name)
            if value is not None and value not in _CONSISTENCY_NAMES:
                raise InterfaceError(f"{name} must be one of {', '.join(_CONSISTENCY_NAMES)}")
        if settings.serial_consistency is not None and settings.serial_consistency not in _SERIAL_NAMES:
            raise InterfaceError("serial_consistency must be SERIAL or LOCAL_SERIAL")
        if settings.bucket_size < 10:
            raise InterfaceError("bucket_size must be at least 10")
        factors = settings.replication.values() if isinstance(settings.replication, dict) else [settings.replication]
        if min(factors) < 1:
            raise InterfaceError("replication must be at least 1 in every data centre")
        return settings

    def replication_map(self, local_dc: str) -> dict[str, int]:
        """Replicas per data centre for a new keyspace."""
        if isinstance(self.replication, dict):
            return dict(self.replication)
        return {local_dc: self.replication}


class _Connection:
    """One driver cluster and session per process, with prepared statements."""

    def __init__(self, settings: CassandraSettings) -> None:
        from cassandra import ConsistencyLevel
        from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
        from cassandra.io.libevreactor import LibevConnection
        from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy

        self.settings = settings
        self.cl = getattr(ConsistencyLevel, settings.consistency)
        # Until the keyspace's data centres are known (see _choose_levels), the strictest levels.
        self.serial_cl = ConsistencyLevel.SERIAL
        self.write_cl = self.cl
        self.data_centres: list[str] = []
        profile = ExecutionProfile(
            load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=settings.dc)),
            consistency_level=self.cl,
            serial_consistency_level=self.serial_cl,
            request_timeout=settings.request_timeout,
        )
        self.cluster = Cluster(
            list(settings.hosts),
            port=settings.port,
            protocol_version=5,
            connection_class=LibevConnection,
            execution_profiles={EXEC_PROFILE_DEFAULT: profile},
            connect_timeout=settings.connect_timeout,
            control_connection_timeout=settings.connect_timeout,
        )
        with _translated(f"cannot connect to Cassandra at {','.join(settings.hosts)}:{settings.port}"):
            self.session = self.cluster.connect()
        try:
            if settings.create_schema:
                self._create_schema()
            self._check_schema()
            self._check_paxos_variant()
            self._choose_levels()
            self._prepare()
        except BaseException:
            self.cluster.shutdown()
            raise

    def _create_schema(self) -> None:
        s, ks = self.settings, self.settings.keyspace
        existing = self.cluster.metadata.keyspaces.get(ks)
        if existing is not None and {"events", "snapshots", "eskit_settings", "event_times"} <= set(existing.tables):
            return  # schema changes are not free of races between clients: skip them when not needed
        factors = s.replication_map(s.dc or self._first_dc())
        replication = ", ".join(f"'{dc}': {n}" for dc, n in factors.items())
        statements = [
            f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = "
            f"{{'class': 'NetworkTopologyStrategy', {replication}}}",
            f"""CREATE TABLE IF NOT EXISTS {ks}.events (
                stream_id text, bucket bigint, position bigint, head bigint static,
                event_id uuid, type_name text, schema_version int, data blob, metadata blob,
                recorded_at bigint,
                PRIMARY KEY ((stream_id, bucket), position)
            ) WITH CLUSTERING ORDER BY (position ASC)""",
            f"""CREATE TABLE IF NOT EXISTS {ks}.snapshots (
                stream_id text, version bigint, type_name text, schema_version int, state blob,
                recorded_at bigint,
                PRIMARY KEY (stream_id, version)
            ) WITH CLUSTERING ORDER BY (version DESC)""",
            f"CREATE TABLE IF NOT EXISTS {ks}.eskit_settings (name text PRIMARY KEY, value text)",
            # The time index: the recorded time of every position 1 + k * TIME_STRIDE, one
            # partition per stream, so time travel finds its region of a long stream in one read.
            f"""CREATE TABLE IF NOT EXISTS {ks}.event_times (
                stream_id text, position bigint, recorded_at bigint,
                PRIMARY KEY (stream_id, position)
            )""",
        ]
        with _translated("cannot create the Cassandra schema"):
            for statement in statements:
                self.session.execute(statement, timeout=60)
            self.cluster.control_connection.wait_for_schema_agreement(wait_time=60)
            self.session.execute(
                f"INSERT INTO {ks}.eskit_settings (name, value) VALUES ('bucket_size', %s) IF NOT EXISTS",
                (str(s.bucket_size),),
                timeout=60,
            )

    def _first_dc(self) -> str:
        hosts = self.cluster.metadata.all_hosts()
        dcs = sorted({h.datacenter for h in hosts if h.datacenter})
        if not dcs:
            raise SchemaError("cannot tell the cluster's data centre: set ?dc= in the store URL")
        return str(dcs[0])

    def _check_schema(self) -> None:
        ks = self.settings.keyspace
        if ks not in self.cluster.metadata.keyspaces:
            raise SchemaError(
                f"keyspace {ks!r} does not exist: run `downloads store init --store <url>` first "
                "(or add create_schema=true to the URL in development)"
            )
        with _translated("cannot read the keyspace settings"):
            row = self.session.execute(
                f"SELECT value FROM {ks}.eskit_settings WHERE name = 'bucket_size'", timeout=30
            ).one()
        if row is None:
            raise SchemaError(f"keyspace {ks!r} has no recorded bucket_size: run `downloads store init`")
        if int(row.value) != self.settings.bucket_size:
            raise SchemaError(
                f"keyspace {ks!r} was created with bucket_size={row.value}, the URL asks for "
                f"{self.settings.bucket_size}: the bucket size of a keyspace can never change"
            )
        if "event_times" not in self.cluster.metadata.keyspaces[ks].tables:
            raise SchemaError(f"keyspace {ks!r} has no event_times table: run `downloads store init` to add it")

    def _check_paxos_variant(self) -> None:
        """Refuse a cluster whose nodes do not all run Paxos v2 (unknown outcomes are resolved assuming it)."""
        query = "SELECT value FROM system_views.settings WHERE name = 'paxos_variant'"
        for host in self.cluster.metadata.all_hosts():
            if host.is_up is False:
                continue  # down now: checked by the next process that starts while it is up
            try:
                row = self.session.execute(query, host=host, timeout=30).one()
            except Exception as exc:  # no connection to it from here (e.g. a remote DC): not a verdict
                log.warning("cannot read paxos_variant from node %s: %s", host.address, exc)
                continue
            variant = None if row is None else str(row.value)
            if variant != "v2":
                raise SchemaError(
                    f"node {host.address} runs paxos_variant={variant or 'unknown'}: eskit needs "
                    "paxos_variant: v2 in every node's cassandra.yaml (its handling of timed-out appends "
                    "relies on Paxos v2)"
                )

    def _choose_levels(self) -> None:
        """Pick the Paxos and commit levels from the keyspace's data centres; refuse unsafe choices."""
        from cassandra import ConsistencyLevel

        s, ks = self.settings, self.settings.keyspace
        strategy = self.cluster.metadata.keyspaces[ks].replication_strategy
        factors = getattr(strategy, "dc_replication_factors", None) or {}
        self.data_centres = sorted(dc for dc, n in factors.items() if int(n) > 0)
        regions = len(self.data_centres) > 1
        serial = s.serial_consistency or ("SERIAL" if regions else "LOCAL_SERIAL")
        if regions and serial == "LOCAL_SERIAL" and not s.single_writer_region:
            raise SchemaError(
                f"keyspace {ks!r} is replicated to {', '.join(self.data_centres)}: serial_consistency="
                "LOCAL_SERIAL lets two regions both win the same append. Use SERIAL (the default), or add "
                "single_writer_region=true if only one region ever accepts commands"
            )
        write = s.write_consistency or ("QUORUM" if regions and not s.single_writer_region else s.consistency)
        self.serial_cl = getattr(ConsistencyLevel, serial)
        self.write_cl = getattr(ConsistencyLevel, write)

    def _prepare(self) -> None:
        ks = self.settings.keyspace
        p = self.session.prepare
        with _translated("cannot prepare statements"):
            self.insert_event = p(
                f"INSERT INTO {ks}.events (stream_id, bucket, position, event_id, type_name, schema_version,"
                " data, metadata, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            )
            self.set_head_if = p(f"UPDATE {ks}.events SET head = ? WHERE stream_id = ? AND bucket = ? IF head = ?")
            self.set_head_if_null = p(
                f"UPDATE {ks}.events SET head = ? WHERE stream_id = ? AND bucket = ? IF head = null"
            )
            self.select_head = p(f"SELECT head FROM {ks}.events WHERE stream_id = ? AND bucket = ? LIMIT 1")
            columns = "position, event_id, type_name, schema_version, data, metadata, recorded_at"
            self.select_range = p(
                f"SELECT {columns} FROM {ks}.events WHERE stream_id = ? AND bucket = ?"
                " AND position > ? AND position <= ? LIMIT ?"
            )
            self.select_range_desc = p(
                f"SELECT {columns} FROM {ks}.events WHERE stream_id = ? AND bucket = ?"
                " AND position > ? AND position <= ? ORDER BY position DESC LIMIT ?"
            )
            self.select_times = p(
                f"SELECT position, recorded_at FROM {ks}.events WHERE stream_id = ? AND bucket = ? AND position IN ?"
            )
            self.insert_time = p(f"INSERT INTO {ks}.event_times (stream_id, position, recorded_at) VALUES (?, ?, ?)")
            self.select_indexed_times = p(
                f"SELECT position, recorded_at FROM {ks}.event_times WHERE stream_id = ? AND position IN ?"
            )
            self.insert_snapshot = p(
                f"INSERT INTO {ks}.snapshots (stream_id, version, type_name, schema_version, state, recorded_at)"
                " VALUES (?, ?, ?, ?, ?, ?)"
            )
            self.select_snapshot = p(
                f"SELECT version, type_name, schema_version, state, recorded_at FROM {ks}.snapshots"
                " WHERE stream_id = ? AND version <= ? LIMIT 1"
            )

    def execute(
        self, statement: Any, params: Sequence[Any] = (), *, serial: bool = False, idempotent: bool = True
    ) -> Any:
        """Run a statement with bounded retries (backoff) on timeouts and unavailability.

        Only idempotent statements are retried here; conditional writes handle
        their own retries (see :meth:`CassandraEventStore.append`).
        """
        from cassandra import OperationTimedOut, ReadTimeout, Unavailable, WriteTimeout
        from cassandra.cluster import NoHostAvailable

        bound = statement.bind(params) if hasattr(statement, "bind") else statement
        if serial:
            bound.consistency_level = self.serial_cl
        attempts = self.settings.retries + 1 if idempotent else 1
        for attempt in range(1, attempts + 1):
            try:
                return self.session.execute(bound)
            except (ReadTimeout, WriteTimeout, Unavailable, OperationTimedOut, NoHostAvailable) as exc:
                if attempt == attempts:
                    raise _translate(exc, "Cassandra request failed") from exc
                _backoff(attempt)
            except Exception as exc:
                raise _translate(exc, "Cassandra request failed") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def execute_many(self, queries: Sequence[tuple[Any, Sequence[Any]]]) -> list[Any]:
        """Run idempotent reads concurrently; any that fails is run again through :meth:`execute`."""
        futures = [self.session.execute_async(statement.bind(params)) for statement, params in queries]
        results: list[Any] = []
        for future, (statement, params) in zip(futures, queries, strict=True):
            try:
                results.append(future.result())
            except Exception:  # retried with backoff (and translated) by execute
                results.append(self.execute(statement, params))
        return results

    def close(self) -> None:
        self.cluster.shutdown()


def _backoff(attempt: int) -> None:
    time.sleep(min(2.0, 0.05 * 2**attempt) * random.uniform(0.5, 1.0))


def _translate(exc: Exception, context: str) -> Exception:
    """Map a driver exception onto the eskit hierarchy."""
    from cassandra import OperationTimedOut, ReadTimeout, Unavailable, WriteTimeout
    from cassandra.cluster import NoHostAvailable
    from cassandra.protocol import ConfigurationException, InvalidRequest, SyntaxException

    if isinstance(exc, NoHostAvailable):
        return StoreUnavailable(f"{context}: no Cassandra node could be reached ({exc})")
    if isinstance(exc, ReadTimeout | WriteTimeout | Unavailable | OperationTimedOut):
        return OperationalError(f"{context}: {type(exc).__name__}: {exc}")
    if isinstance(exc, InvalidRequest | ConfigurationException | SyntaxException):
        return SchemaError(f"{context}: {exc}")
    return OperationalError(f"{context}: {type(exc).__name__}: {exc}")


@contextmanager
def _translated(context: str) -> Iterator[None]:
    """Driver exceptions raised inside become eskit exceptions."""
    from eskit.exceptions import EskitError

    try:
        yield
    except EskitError:
        raise
    except Exception as exc:
        raise _translate(exc, context) from exc


def _row_to_event(stream_id: str, row: Any) -> StoredEvent:
    return StoredEvent(
        stream_id=stream_id,
        position=row.position,
        type_name=row.type_name,
        schema_version=row.schema_version,
        data=bytes(row.data or b""),
        metadata=bytes(row.metadata or b""),
        recorded_at=from_micros(row.recorded_at),
        event_id=row.event_id,
    )


class CassandraEventStore(EventStore):
    """Event streams in Cassandra; see the module docstring for the design."""

    def __init__(self, connection: _Connection) -> None:
        self.db = connection
        self.bucket_size = connection.settings.bucket_size
        self._last_bucket: dict[str, int] = {}  # a hint only: buckets never disappear
        # Streams whose append was just refused: the next read is serial, so that it sees the
        # winning write even when that write was committed in another region.
        self._read_serially: set[str] = set()
        #: counts of unknown outcomes met and how they were resolved (for metrics and tests)
        self.outcomes = {"timed_out": 0, "resent_applied": 0, "found_ours": 0, "found_theirs": 0, "unresolved": 0}

    # -- buckets ---------------------------------------------------------------

    def _bucket_of_version(self, version: int) -> int:
        """The bucket an append after ``version`` goes to."""
        return version // self.bucket_size

    def _head(self, stream_id: str, bucket: int, *, serial: bool = False) -> int | None:
        row = self.db.execute(self.db.select_head, (stream_id, bucket), serial=serial).one()
        return None if row is None else row.head

    def version(self, stream_id: str) -> int:
        serial = stream_id in self._read_serially
        version = self._version(stream_id, serial=serial)
        self._read_serially.discard(stream_id)
        return version

    def _version(self, stream_id: str, *, serial: bool) -> int:
        bucket = self._last_bucket.get(stream_id, 0)
        version = 0
        while True:
            head = self._head(stream_id, bucket, serial=serial)
            if head is None:
                if bucket > 0 and version == 0:
                    # This read cannot see the hinted bucket: walk from the first one instead.
                    self._last_bucket.pop(stream_id, None)
                    return self._version_from_start(stream_id, serial=serial)
                return version
            version = head
            self._remember_bucket(stream_id, bucket)
            following = self._bucket_of_version(head)
            if following == bucket:
                return version
            bucket = following

    def _remember_bucket(self, stream_id: str, bucket: int) -> None:
        if bucket == 0:
            self._last_bucket.pop(stream_id, None)  # the default needs no entry
            return
        if len(self._last_bucket) >= 100_000:
            self._last_bucket.clear()  # a hint only: losing it costs a few reads
        self._last_bucket[stream_id] = bucket

    def _version_from_start(self, stream_id: str, *, serial: bool) -> int:
        version, bucket = 0, 0
        while (head := self._head(stream_id, bucket, serial=serial)) is not None:
            version = head
            following = self._bucket_of_version(head)
            if following == bucket:
                break
            bucket = following
        return version

    # -- append ----------------------------------------------------------------

    def append(self, stream_id: str, events: Sequence[NewEvent], *, expected_version: int) -> int:
        try:
            return self._append(stream_id, events, expected_version)
        except ConcurrencyError:
            if len(self._read_serially) >= 100_000:
                self._read_serially.clear()  # a hint only: a non-serial reload conflicts once more
            self._read_serially.add(stream_id)
            raise

    def _append(self, stream_id: str, events: Sequence[NewEvent], expected_version: int) -> int:
        check_append(stream_id, events, expected_version)
        if len(events) > self.bucket_size:
            raise InterfaceError(f"an append holds at most bucket_size={self.bucket_size} events")
        bucket = self._bucket_of_version(expected_version)
        # Guess whether this is the bucket's first append (true when the previous append ended
        # exactly on a bucket boundary, as single-event appends do); a wrong guess shows in the
        # refused condition's current head and costs one more round, a right one saves a read.
        first_in_bucket = expected_version % self.bucket_size == 0
        for _ in range(2):
            if first_in_bucket and bucket > 0:
                # The previous bucket must end exactly at the expected version. Once it does, no
                # later append can change it, so this check cannot go stale.
                previous = self._head(stream_id, bucket - 1, serial=True)
                if previous != expected_version:
                    raise ConcurrencyError(stream_id, expected_version, previous)
            batch = self._batch(stream_id, bucket, events, expected_version, first_in_bucket)
            applied, head = self._conditional(batch, stream_id, bucket, expected_version, events)
            if applied:
                self._remember_bucket(stream_id, bucket)
                self._index_times(
                    stream_id,
                    {
                        p: to_micros(e.recorded_at)
                        for p, e in enumerate(events, start=expected_version + 1)
                        if (p - 1) % TIME_STRIDE == 0
                    },
                )
                return expected_version + len(events)
            wrong_guess = (head is None) != first_in_bucket and (head is None or head == expected_version)
            if not wrong_guess:
                raise ConcurrencyError(stream_id, expected_version, head)
            first_in_bucket = head is None
        raise ConcurrencyError(stream_id, expected_version, None)

    def _batch(
        self, stream_id: str, bucket: int, events: Sequence[NewEvent], expected_version: int, first_in_bucket: bool
    ) -> Any:
        from cassandra.query import BatchStatement, BatchType

        batch = BatchStatement(
            batch_type=BatchType.UNLOGGED,
            consistency_level=self.db.write_cl,
            serial_consistency_level=self.db.serial_cl,
        )
        new_version = expected_version + len(events)
        if first_in_bucket:
            batch.add(self.db.set_head_if_null, (new_version, stream_id, bucket))
        else:
            batch.add(self.db.set_head_if, (new_version, stream_id, bucket, expected_version))
        for offset, event in enumerate(events, start=1):
            batch.add(
                self.db.insert_event,
                (
                    stream_id,
                    bucket,
                    expected_version + offset,
                    event.event_id,
                    event.type_name,
                    event.schema_version,
                    event.data,
                    event.metadata,
                    to_micros(event.recorded_at),
                ),
            )
        return batch

    def _conditional(
        self, batch: Any, stream_id: str, bucket: int, expected_version: int, events: Sequence[NewEvent]
    ) -> tuple[bool, int | None]:
        """Run the conditional batch, resolving unknown outcomes.

        Returns whether our events are stored and, when they are not, the
        bucket's current head as the refused condition reported it. Raises
        :class:`UnknownOutcome` when an attempt may have been applied and the
        cluster cannot tell whether it was.
        """
        from cassandra import InvalidRequest, Unavailable

        attempts = self.db.settings.retries + 1
        uncertain = False
        for attempt in range(1, attempts + 1):
            try:
                result = self.db.session.execute(batch)
            except Unavailable:
                # Refused by the coordinator before any Paxos round: this attempt wrote nothing.
                if attempt == attempts:
                    break
                _backoff(attempt)
                continue
            except InvalidRequest as exc:
                if uncertain:
                    break
                raise _translate(exc, f"cannot append to {stream_id!r}") from exc
            except Exception as exc:
                # A timeout, a failed coordinator, a dropped connection: the batch may have been
                # applied. Send the same batch again (same event ids, same condition).
                uncertain = True
                self.outcomes["timed_out"] += 1
                log.info("conditional append to %s failed (%s), resolving", stream_id, type(exc).__name__)
                if attempt == attempts:
                    break
                _backoff(attempt)
                continue
            if result.was_applied:
                if uncertain:
                    self.outcomes["resent_applied"] += 1
                return True, None
            head = getattr(result.one(), "head", None)
            if not uncertain:
                return False, head
            # Refused after an uncertain attempt: whatever stands at E+1 now is final.
            return self._resolve(stream_id, bucket, expected_version, events, final=True), head
        if not uncertain:
            raise StoreUnavailable(f"cannot append to {stream_id!r}: not enough replicas are available")
        return self._resolve(stream_id, bucket, expected_version, events, final=False), None

    def _resolve(
        self, stream_id: str, bucket: int, expected_version: int, events: Sequence[NewEvent], *, final: bool
    ) -> bool:
        """After an uncertain attempt: are our events at E+1 (True), another writer's (False)?

        When nothing stands there and no resend was refused (``final`` false), an
        attempt may still be in flight at a slow coordinator and apply later, so
        the answer is :class:`UnknownOutcome`, never a conflict.
        """
        try:
            row = self._row_after(stream_id, bucket, expected_version)
        except OperationalError as exc:
            self.outcomes["unresolved"] += 1
            raise UnknownOutcome(
                f"append to {stream_id!r} at version {expected_version} may or may not have happened; "
                "retry the command with the same request id"
            ) from exc
        if row is None and not final:
            self.outcomes["unresolved"] += 1
            raise UnknownOutcome(
                f"append to {stream_id!r} at version {expected_version} timed out and may still apply; "
                "retry the command with the same request id"
            )
        ours = row is not None and row.event_id == events[0].event_id
        self.outcomes["found_ours" if ours else "found_theirs"] += 1
        return ours

    def _row_after(self, stream_id: str, bucket: int, expected_version: int) -> Any:
        """The event row at position E+1 in ``bucket``, read at serial consistency (None if absent)."""
        return self.db.execute(
            self.db.select_range, (stream_id, bucket, expected_version, expected_version + 1, 1), serial=True
        ).one()

    def _ours(self, stream_id: str, bucket: int, expected_version: int, events: Sequence[NewEvent]) -> bool:
        """Whether the events standing after ``expected_version`` are ours (read serially)."""
        row = self._row_after(stream_id, bucket, expected_version)
        return row is not None and row.event_id == events[0].event_id

    # -- reads -----------------------------------------------------------------

    def read(
        self,
        stream_id: str,
        *,
        gt: int = 0,
        lte: int | None = None,
        limit: int | None = None,
        desc: bool = False,
    ) -> list[StoredEvent]:
        check_read(gt, lte, limit)
        if limit == 0:
            return []
        serial = stream_id in self._read_serially
        found = self._read(stream_id, gt, lte, limit, desc, serial=serial)
        if found is None and not serial:
            # Fewer rows than the head promised: a commit reached only some replicas. A serial read
            # finishes any Paxos round in flight, after which rows and head agree.
            found = self._read(stream_id, gt, lte, limit, desc, serial=True)
        if found is None:
            raise OperationalError(
                f"the replicas of stream {stream_id!r} disagree: its head is past the events they return; "
                "try again when every replica is reachable"
            )
        self._read_serially.discard(stream_id)
        return found

    def _read(
        self, stream_id: str, gt: int, lte: int | None, limit: int | None, desc: bool, *, serial: bool
    ) -> list[StoredEvent] | None:
        """The events in range, or None when fewer come back than the head says exist."""
        if lte is not None and lte > gt and (lte - 1) // self.bucket_size - gt // self.bucket_size <= 1:
            # A short bounded range (time travel, a cached aggregate catching up): when every
            # position comes back, the rows alone prove the read complete, no head needed.
            found = self._rows(stream_id, gt, lte, limit, desc, serial=serial)
            if len(found) == (lte - gt if limit is None else min(limit, lte - gt)):
                return found
        head = self._version(stream_id, serial=serial)
        # Never walk buckets past the stream's head: a huge ``lte`` would otherwise mean a query per bucket.
        upper = head if lte is None else min(lte, head)
        if upper <= gt:
            return []
        found = self._rows(stream_id, gt, upper, limit, desc, serial=serial)
        # Positions are contiguous: exactly this many events stand in (gt, upper].
        expected = upper - gt if limit is None else min(limit, upper - gt)
        return found if len(found) >= expected else None

    def _rows(
        self, stream_id: str, gt: int, upper: int, limit: int | None, desc: bool, *, serial: bool
    ) -> list[StoredEvent]:
        """The rows with ``gt < position <= upper`` bucket by bucket, stopping at ``limit``."""
        # The event at position p was appended after some version E in [p - bucket_size, p - 1]
        # and lives in bucket E // bucket_size: (p - 1) // size or the bucket before it.
        first = max(0, (gt + 1) // self.bucket_size - 1)
        last = (upper - 1) // self.bucket_size
        buckets = range(last, first - 1, -1) if desc else range(first, last + 1)
        statement = self.db.select_range_desc if desc else self.db.select_range
        # Every position in a bucket is below every position in the next, so buckets read in order
        # give events in order, and the read can stop as soon as it has ``limit`` of them.
        found: list[StoredEvent] = []
        if len(buckets) <= 3 and not serial:
            # A short range: its few bucket queries go out at once, one round trip in all.
            wanted = 2**31 - 1 if limit is None else limit
            queries = [(statement, (stream_id, bucket, gt, upper, wanted)) for bucket in buckets]
            for rows in self.db.execute_many(queries):
                found.extend(_row_to_event(stream_id, row) for row in rows)
            return found if limit is None else found[:limit]
        for bucket in buckets:
            wanted = 2**31 - 1 if limit is None else limit - len(found)
            rows = self.db.execute(statement, (stream_id, bucket, gt, upper, wanted), serial=serial)
            found.extend(_row_to_event(stream_id, row) for row in rows)
            if limit is not None and len(found) >= limit:
                break
        return found

    def _index_times(self, stream_id: str, times: dict[int, int]) -> None:
        """Record stride positions' times in the time index; a failure costs only speed (it is repaired on read)."""
        for position, micros in times.items():
            try:
                # One attempt: a missed entry is written again by the next read that lacks it.
                self.db.execute(self.db.insert_time, (stream_id, position, micros), idempotent=False)
            except OperationalError as exc:
                log.warning("time index of %s at %d not written: %s", stream_id, position, exc)

    def recorded_times(self, stream_id: str, positions: Sequence[int]) -> dict[int, datetime]:
        """Stride positions from the time index (one partition); the rest, and any the index lacks,
        from the events: one query per bucket, all in flight at once (then the bucket before, for
        positions written by an append that spilled past its bucket's end)."""
        found: dict[int, datetime] = {}
        strided = [p for p in positions if (p - 1) % TIME_STRIDE == 0]
        if len(strided) > 1:
            for row in self.db.execute(self.db.select_indexed_times, (stream_id, strided)):
                found[row.position] = from_micros(row.recorded_at)
        wanted = [p for p in positions if p not in found]
        unindexed = [p for p in strided if p not in found] if len(strided) > 1 else []
        found.update(self._times_from_events(stream_id, wanted))
        # Repair the index where it lacked a position (an append whose index write failed, or older data).
        self._index_times(stream_id, {p: to_micros(found[p]) for p in unindexed if p in found})
        return found

    def _times_from_events(self, stream_id: str, positions: Sequence[int]) -> dict[int, datetime]:
        found: dict[int, datetime] = {}
        wanted = list(positions)
        for shift in (0, 1):
            by_bucket: dict[int, list[int]] = {}
            for position in wanted:
                bucket = (position - 1) // self.bucket_size - shift
                if bucket >= 0:
                    by_bucket.setdefault(bucket, []).append(position)
            queries = [(self.db.select_times, (stream_id, b, ps)) for b, ps in by_bucket.items()]
            for rows in self.db.execute_many(queries):
                for row in rows:
                    found[row.position] = from_micros(row.recorded_at)
            wanted = [p for p in wanted if p not in found]
            if not wanted:
                break
        return found

    def ping(self) -> None:
        self.db.execute("SELECT release_version FROM system.local")

    def close(self) -> None:
        self.db.close()


class CassandraSnapshotStore(SnapshotStore):
    """Snapshots in Cassandra, newest first in each stream's partition."""

    def __init__(self, connection: _Connection) -> None:
        self.db = connection

    def save(self, snapshot: Snapshot) -> None:
        self.db.execute(
            self.db.insert_snapshot,
            (
                snapshot.stream_id,
                snapshot.version,
                snapshot.type_name,
                snapshot.schema_version,
                snapshot.state,
                to_micros(snapshot.recorded_at),
            ),
        )

    def load(self, stream_id: str, *, lte: int | None = None) -> Snapshot | None:
        row = self.db.execute(self.db.select_snapshot, (stream_id, lte if lte is not None else 2**62)).one()
        if row is None:
            return None
        return Snapshot(
            stream_id, row.version, row.type_name, row.schema_version, bytes(row.state), from_micros(row.recorded_at)
        )

    def close(self) -> None:
        """The connection is shared with the event store, which closes it."""


def open_cassandra_stores(
    url: str, *, create_schema: bool | None = None, **_: Any
) -> tuple[CassandraEventStore, CassandraSnapshotStore]:
    """Connect to the cluster a ``cassandra://`` URL names and return both stores.

    ``create_schema=None`` keeps what the URL says (default: do not create).
    """
    settings = CassandraSettings.from_url(url, create_schema=create_schema)
    connection = _Connection(settings)
    return CassandraEventStore(connection), CassandraSnapshotStore(connection)
