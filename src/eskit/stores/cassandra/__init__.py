"""The Apache Cassandra stores: linearizable appends with lightweight transactions, at scale.

``cassandra://host1,host2[:port]/keyspace?dc=...`` names the cluster and keyspace;
:class:`CassandraSettings` lists every option with its default, and
:mod:`eskit.stores.cassandra.events` explains the design. Needs the
``cassandra-driver`` package (the ``cassandra`` extra).
"""

from __future__ import annotations

from typing import Any

from eskit.stores.cassandra.events import CassandraEventStore
from eskit.stores.cassandra.feed import CassandraStreamFeed
from eskit.stores.cassandra.keys import CassandraKeyStore
from eskit.stores.cassandra.readmodel import CassandraReadModels
from eskit.stores.cassandra.schema import (
    check_paxos_variant,
    check_schema,
    choose_levels,
    create_keyspace,
    feed_shards,
)
from eskit.stores.cassandra.session import CassandraSession
from eskit.stores.cassandra.settings import CassandraSettings
from eskit.stores.cassandra.snapshots import CassandraSnapshotStore
from eskit.stores.cassandra.statements import Statements
from eskit.stores.registry import Stores

__all__ = [
    "CassandraEventStore",
    "CassandraKeyStore",
    "CassandraReadModels",
    "CassandraSession",
    "CassandraSettings",
    "CassandraSnapshotStore",
    "CassandraStreamFeed",
    "open_read_models",
    "open_stores",
]


def open_stores(url: str, *, create_schema: bool | None = None, **_: Any) -> Stores:
    """Connect to the cluster a ``cassandra://`` URL names, check its keyspace, and return the stores.

    ``create_schema=None`` keeps what the URL says (default: do not create).
    Raises :class:`~eskit.exceptions.SchemaError` for a keyspace that is
    missing, was made with other settings, or runs on an unsafe cluster.
    """
    settings = CassandraSettings.from_url(url, create_schema=create_schema)
    session = CassandraSession(settings)
    try:
        if settings.create_schema:
            create_keyspace(session)
        check_schema(session)
        check_paxos_variant(session)
        choose_levels(session)
        session.statements = Statements(session)
        feed = CassandraStreamFeed(session, feed_shards(session))
        events = CassandraEventStore(session, feed)
        keys = CassandraKeyStore(session, events.gate)  # cut off from a quorum: key writes refused at once too
    except BaseException:
        session.close()
        raise
    return Stores(url, events, CassandraSnapshotStore(session), stream_feed=feed, keys=keys)


def open_read_models(stores: Stores, **_: Any) -> CassandraReadModels:
    """The read models of a Cassandra store, in its keyspace (their tables are made by the runner)."""
    events = stores.events
    if not isinstance(events, CassandraEventStore):
        raise TypeError("not a Cassandra store")
    return CassandraReadModels(events.db)
