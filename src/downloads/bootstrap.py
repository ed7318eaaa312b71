"""The composition root: settings in, a wired service out. Nothing is built at import time."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from downloads.adapters.denials import CassandraDenialLog, InMemoryDenialLog, SQLiteDenialLog, denial_log_path
from downloads.adapters.policy_file import load_policy
from downloads.application import Clock, DownloadsService, ServiceObserver, system_clock
from downloads.application.ports import DenialLog
from downloads.domain import ACCOUNT_EVENTS, TITLE_EVENTS, Account, Policy, Title
from downloads.readmodels.ports import ReadModels
from downloads.settings import Settings
from eskit import EventCodec, EventStore, Repository, SnapshotPolicy, SnapshotStore, Stores, open_stores
from eskit.readmodel import RunnerSettings, Sink
from eskit.stores.sqlite import sqlite_path

__all__ = ["Runtime", "bootstrap", "make_codec", "open_denial_log", "open_read_side", "open_relay"]


log = logging.getLogger(__name__)


def make_codec() -> EventCodec:
    """The codec with every event class of the service (and, later, their upcasters)."""
    return EventCodec([*ACCOUNT_EVENTS, *TITLE_EVENTS])


@dataclass
class Runtime:
    """Everything one process runs on: the service, its stores and its policy, wired from settings."""

    settings: Settings
    policy: Policy
    stores: Stores
    service: DownloadsService

    def close(self) -> None:
        self.service.catalog.close()
        for repository in (self.service.accounts, self.service.titles):
            repository.flush_snapshots(timeout=5)
        if self.service.denials is not None:
            self.service.denials.close()
        self.stores.close()


def bootstrap(
    settings: Settings,
    *,
    clock: Clock = system_clock,
    policy: Policy | None = None,
    observer: ServiceObserver | None = None,
    wrap_events: Callable[[EventStore], EventStore] | None = None,
    codec: EventCodec | None = None,
    wrap_stores: Callable[[Stores], tuple[EventStore, SnapshotStore]] | None = None,
) -> Runtime:
    """Open the stores, load the policy and wire the service (``codec`` replaces :func:`make_codec`'s).

    ``wrap_stores`` gives the event and snapshot stores the repositories use (timed, traced: see
    :func:`downloads.adapters.observed.observed_stores`); ``wrap_events`` then wraps the event store.

    Raises :class:`~downloads.adapters.policy_file.PolicyError` for a bad policy file
    and eskit store errors for a bad or unreachable store.
    """
    policy = policy or load_policy(settings.policy)
    stores = open_stores(settings.store, create_schema=settings.create_schema)
    events: EventStore = stores.events
    snapshot_store: SnapshotStore = stores.snapshots
    if wrap_stores is not None:
        events, snapshot_store = wrap_stores(stores)
    if wrap_events is not None:
        events = wrap_events(events)
    codec = codec or make_codec()
    snapshots = SnapshotPolicy(every=settings.snapshot_every)
    accounts = Repository(
        Account,
        events,
        codec,
        snapshots=snapshot_store,
        snapshot_policy=snapshots,
        stream_prefix="account-",
    )
    titles = Repository(
        Title, events, codec, snapshots=snapshot_store, snapshot_policy=snapshots, stream_prefix="title-"
    )
    service = DownloadsService(
        denials=open_denial_log(stores, kept=settings.denials_kept),
        accounts=accounts,
        titles=titles,
        policy=policy,
        clock=clock,
        keep_requests=timedelta(hours=settings.idempotency_hours),
        observer=observer,
        cache_size=settings.cache_size,
        title_cache_seconds=settings.title_cache_seconds,
    )
    return Runtime(settings=settings, policy=policy, stores=stores, service=service)


def open_denial_log(stores: Stores, *, kept: int) -> DenialLog:
    """Where the store's deployment keeps denials: a file beside a SQLite store's, a table in a keyspace."""
    if stores.url.startswith("sqlite:"):
        return SQLiteDenialLog(denial_log_path(sqlite_path(stores.url)), kept=kept)
    if stores.url.startswith("cassandra:"):
        return CassandraDenialLog(stores.events.db, kept=kept)  # type: ignore[attr-defined]
    return InMemoryDenialLog(kept=kept)


def open_read_side(runtime: Runtime) -> ReadModels:
    """The read side of a wired runtime (not started), on the backend that goes with its store.

    The one place that chooses it: eskit opens read models beside a SQLite store's file, in a
    Cassandra store's keyspace, or in memory.
    """
    from downloads.readmodels.readside import ReadSide

    s = runtime.settings
    tuning = RunnerSettings(
        lease_ttl=s.read_side_lease, batch=s.read_side_batch, workers=s.read_side_workers, idle=s.read_side_idle
    )
    return ReadSide(
        runtime.stores,
        runtime.service.accounts.codec,
        runtime.policy,
        runtime.service,
        settings=tuning,
        relay=open_relay(s),
        relay_batch=s.relay_batch,
    )


def open_relay(settings: Settings) -> Sink | None:
    """The relay's destination when ``relay_to`` is set (nothing is contacted until it publishes), else None.

    Raises :class:`~downloads.adapters.relay.BadRelayUrl` for a destination that is not a Kafka URL.
    """
    if not settings.relay_to:
        return None
    from downloads.adapters.relay import KafkaSink, parse_destination

    return KafkaSink(
        parse_destination(settings.relay_to),
        timeout=settings.relay_timeout,
        create_topic=settings.relay_create_topic,
        partitions=settings.relay_partitions,
    )
