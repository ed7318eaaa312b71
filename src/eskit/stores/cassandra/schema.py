"""The keyspace: created for development, checked on every connect, and the levels its replication asks for."""

from __future__ import annotations

import logging

from eskit.exceptions import (
    SchemaError,
)
from eskit.stores.cassandra.keys import KEYS_TABLE
from eskit.stores.cassandra.session import CassandraSession, translated

log = logging.getLogger(__name__)

__all__ = [
    "FEED_SHARDS",
    "check_paxos_variant",
    "check_schema",
    "choose_levels",
    "create_keyspace",
    "feed_shards",
    "first_dc",
]

#: how many partitions the feed's hints are spread over; recorded when the keyspace is created
FEED_SHARDS = 16
#: the tables every keyspace must have (``downloads store init`` adds the missing ones)
TABLES = {"events", "snapshots", "eskit_settings", "event_times", "feed_hints", "eskit_keys"}


def create_keyspace(session: CassandraSession) -> None:
    s, ks = session.settings, session.settings.keyspace
    existing = session.cluster.metadata.keyspaces.get(ks)
    if existing is not None and set(existing.tables) >= TABLES:
        return  # schema changes are not free of races between clients: skip them when not needed
    factors = s.replication_map(s.dc or first_dc(session))
    replication = ", ".join(f"'{dc}': {n}" for dc, n in factors.items())
    statements = [
        f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {{'class': 'NetworkTopologyStrategy', {replication}}}",
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
        # The feed (see eskit.stores.cassandra.feed): a hint per append, written before it is
        # proposed and deleted once followers applied the stream past it. A deleted hint that comes
        # back (a missed tombstone) only costs a follower one more look, so tombstones need not wait
        # for repair long.
        f"""CREATE TABLE IF NOT EXISTS {ks}.feed_hints (
            shard int, stream_id text, head bigint, writer uuid, at bigint,
            PRIMARY KEY ((shard), stream_id, head, writer)
        ) WITH gc_grace_seconds = 3600""",
        # Streams' keys, wrapped by the master key, or their tombstones (see eskit.stores.cassandra.keys).
        KEYS_TABLE.format(ks=ks),
    ]
    with translated("cannot create the Cassandra schema"):
        for statement in statements:
            session.session.execute(statement, timeout=60)
        session.cluster.control_connection.wait_for_schema_agreement(wait_time=60)
        session.session.execute(
            f"INSERT INTO {ks}.eskit_settings (name, value) VALUES ('bucket_size', %s) IF NOT EXISTS",
            (str(s.bucket_size),),
            timeout=60,
        )
        session.session.execute(
            f"INSERT INTO {ks}.eskit_settings (name, value) VALUES ('feed_shards', %s) IF NOT EXISTS",
            (str(FEED_SHARDS),),
            timeout=60,
        )


def first_dc(session: CassandraSession) -> str:
    hosts = session.cluster.metadata.all_hosts()
    dcs = sorted({h.datacenter for h in hosts if h.datacenter})
    if not dcs:
        raise SchemaError("cannot tell the cluster's data centre: set ?dc= in the store URL")
    return str(dcs[0])


def check_schema(session: CassandraSession) -> None:
    ks = session.settings.keyspace
    if ks not in session.cluster.metadata.keyspaces:
        raise SchemaError(
            f"keyspace {ks!r} does not exist: run `downloads store init --store <url>` first "
            "(or add create_schema=true to the URL in development)"
        )
    with translated("cannot read the keyspace settings"):
        row = session.session.execute(
            f"SELECT value FROM {ks}.eskit_settings WHERE name = 'bucket_size'", timeout=30
        ).one()
    if row is None:
        raise SchemaError(f"keyspace {ks!r} has no recorded bucket_size: run `downloads store init`")
    if int(row.value) != session.settings.bucket_size:
        raise SchemaError(
            f"keyspace {ks!r} was created with bucket_size={row.value}, the URL asks for "
            f"{session.settings.bucket_size}: the bucket size of a keyspace can never change"
        )
    missing = sorted(TABLES - set(session.cluster.metadata.keyspaces[ks].tables))
    if missing:
        raise SchemaError(f"keyspace {ks!r} has no {', '.join(missing)} table: run `downloads store init` to add it")


def feed_shards(session: CassandraSession) -> int:
    """The number of hint partitions recorded for the keyspace."""
    ks = session.settings.keyspace
    with translated("cannot read the keyspace settings"):
        row = session.session.execute(
            f"SELECT value FROM {ks}.eskit_settings WHERE name = 'feed_shards'", timeout=30
        ).one()
    if row is None:
        raise SchemaError(f"keyspace {ks!r} has no recorded feed_shards: run `downloads store init` to add the feed")
    return int(row.value)


def check_paxos_variant(session: CassandraSession) -> None:
    """Refuse a cluster whose nodes do not all run Paxos v2 (unknown outcomes are resolved assuming it)."""
    query = "SELECT value FROM system_views.settings WHERE name = 'paxos_variant'"
    for host in session.cluster.metadata.all_hosts():
        if host.is_up is False:
            continue  # down now: checked by the next process that starts while it is up
        try:
            row = session.session.execute(query, host=host, timeout=30).one()
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


def choose_levels(session: CassandraSession) -> None:
    """Pick the Paxos and commit levels from the keyspace's data centres; refuse unsafe choices."""
    from cassandra import ConsistencyLevel

    s, ks = session.settings, session.settings.keyspace
    strategy = session.cluster.metadata.keyspaces[ks].replication_strategy
    factors = getattr(strategy, "dc_replication_factors", None) or {}
    session.data_centres = sorted(dc for dc, n in factors.items() if int(n) > 0)
    regions = len(session.data_centres) > 1
    serial = s.serial_consistency or ("SERIAL" if regions else "LOCAL_SERIAL")
    if regions and serial == "LOCAL_SERIAL" and not s.single_writer_region:
        raise SchemaError(
            f"keyspace {ks!r} is replicated to {', '.join(session.data_centres)}: serial_consistency="
            "LOCAL_SERIAL lets two regions both win the same append. Use SERIAL (the default), or add "
            "single_writer_region=true if only one region ever accepts commands"
        )
    write = s.write_consistency or ("QUORUM" if regions and not s.single_writer_region else s.consistency)
    session.serial_cl = getattr(ConsistencyLevel, serial)
    session.write_cl = getattr(ConsistencyLevel, write)
    # Paxos v2 makes an append durable once a quorum of the electorate accepted it, so its commit
    # needs to wait only for the local replicas (docs/cassandra.md, "What it costs").
    session.commit_cl = getattr(ConsistencyLevel, s.commit_consistency or s.consistency)
    # A hint at write_cl crosses regions; when it would, a local hint goes first (it survives the
    # writer's crash) and the durable one alongside the Paxos round (docs/read-side.md).
    local = s.consistency if s.consistency.startswith("LOCAL_") else "LOCAL_QUORUM"
    session.local_hint_cl = getattr(ConsistencyLevel, local) if write != local else None
