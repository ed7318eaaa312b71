"""The composition root: settings in, a wired service out. Nothing is built at import time."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from downloads.adapters.denials import (
    CassandraDenialLog,
    InMemoryDenialLog,
    KeySealer,
    SQLiteDenialLog,
    denial_log_path,
)
from downloads.adapters.master_keys import MasterKeySource, master_keys
from downloads.adapters.policy_file import load_policy
from downloads.application import Clock, DownloadsService, ServiceObserver, system_clock
from downloads.application.ports import DenialLog, Sealer
from downloads.domain import ACCOUNT_EVENTS, TITLE_EVENTS, Account, Policy, Title
from downloads.domain.events import AccountErased
from downloads.readmodels.ports import ReadModels
from downloads.settings import Settings
from eskit import EventCodec, EventStore, Repository, SnapshotPolicy, SnapshotStore, Stores, open_stores
from eskit.events import StoredEvent
from eskit.privacy import ERASED_KEY, DataKey, Encryption, KeyCache, KeyRecord, KeyRing, StreamKey
from eskit.readmodel import RunnerSettings, Sink
from eskit.stores.sqlite import sqlite_path
from eskit.transfer import Decode

__all__ = [
    "ENCRYPTION",
    "Runtime",
    "archive_decoder",
    "bootstrap",
    "complete_erasures",
    "make_codec",
    "open_denial_log",
    "open_read_side",
    "open_relay",
]

#: what of an account's stream is sealed with its member's key (docs/privacy.md): the personal fields each
#: event class names, and the request id and extra (the command's arguments and kept reply) of every event
ENCRYPTION = Encryption(streams=("account-",), metadata=("request_id", "causation_id", "extra"))


log = logging.getLogger(__name__)


def make_codec(*, sealed: bool = True) -> EventCodec:
    """The codec with every event class of the service; unless not ``sealed``, accounts' personal fields
    are sealed with each member's key (a codec that seals nothing writes as the service did before)."""
    return EventCodec([*ACCOUNT_EVENTS, *TITLE_EVENTS], encryption=ENCRYPTION if sealed else None)


@dataclass
class Runtime:
    """Everything one process runs on: the service, its stores and its policy, wired from settings."""

    settings: Settings
    policy: Policy
    stores: Stores
    service: DownloadsService
    #: the master keys and where they came from
    masters: MasterKeySource | None = None

    def close(self) -> None:
        self.service.catalog.close()
        for repository in (self.service.accounts, self.service.titles):
            repository.flush_snapshots(timeout=5)
        if self.service.denials is not None:
            self.service.denials.close()
        self.stores.close()


def _masters(settings: Settings) -> MasterKeySource:
    return master_keys(
        key=settings.master_key,
        previous_key=settings.master_previous_key,
        production=settings.production,
        why="DOWNLOADS_MODE=production" if settings.mode == "production" else "a Cassandra store",
        store=settings.store,
    )


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

    Raises :class:`~downloads.adapters.master_keys.NoMasterKey` in production mode without a master key
    (before any store is opened), :class:`~downloads.adapters.policy_file.PolicyError` for a bad
    policy file and eskit store errors for a bad or unreachable store.
    """
    masters = _masters(settings)
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
    ring = KeyRing(stores.keys, masters.keys, clock=clock) if stores.keys is not None else None
    accounts = Repository(
        Account,
        events,
        codec,
        snapshots=snapshot_store,
        snapshot_policy=snapshots,
        stream_prefix="account-",
        keys=ring,
    )
    titles = Repository(
        Title, events, codec, snapshots=snapshot_store, snapshot_policy=snapshots, stream_prefix="title-"
    )
    sealer = KeySealer(KeyCache(ring, size=max(settings.cache_size, 100))) if ring and codec.encryption else None
    service = DownloadsService(
        denials=open_denial_log(stores, kept=settings.denials_kept, sealer=sealer),
        accounts=accounts,
        titles=titles,
        policy=policy,
        clock=clock,
        keep_requests=timedelta(hours=settings.idempotency_hours),
        observer=observer,
        cache_size=settings.cache_size,
        title_cache_seconds=settings.title_cache_seconds,
    )
    return Runtime(settings=settings, policy=policy, stores=stores, service=service, masters=masters)


def open_denial_log(stores: Stores, *, kept: int, sealer: Sealer | None = None) -> DenialLog:
    """Where the store's deployment keeps denials: a file beside a SQLite store's, a table in a keyspace;
    sealed with each member's key when a ``sealer`` is given."""
    if stores.url.startswith("sqlite:"):
        return SQLiteDenialLog(denial_log_path(sqlite_path(stores.url)), kept=kept, sealer=sealer)
    if stores.url.startswith("cassandra:"):
        return CassandraDenialLog(stores.events.db, kept=kept, sealer=sealer)  # type: ignore[attr-defined]
    return InMemoryDenialLog(kept=kept, sealer=sealer)


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
        relay=open_relay(s, runtime.service.accounts.codec),
        relay_batch=s.relay_batch,
    )


def archive_decoder(settings: Settings) -> Decode:
    """How ``store import --decode`` reads an archive's event: the service's codec, with the stream's key
    record from the archive unwrapped by the master keys ``settings`` name."""
    codec = make_codec()
    masters = _masters(settings).keys

    def decode(stored: StoredEvent, record: KeyRecord | None) -> object:
        key: StreamKey = None
        if record is not None:
            key = ERASED_KEY if record.erased else DataKey(record.subject, masters.unwrap(record))
        return codec.decode(stored, key=key)

    return decode


def complete_erasures(settings: Settings) -> int:
    """Finish the erasure of every account whose key is erased in the store but whose stream does not say
    so (an archive, written before the erasure, imported with the erasure carried): records
    ``AccountErased`` and removes what the erasure removes. Returns how many were finished."""
    runtime = bootstrap(settings)
    finished = 0
    try:
        keys = runtime.stores.keys
        if keys is None:
            return 0
        service, prefix = runtime.service, runtime.service.accounts.stream_prefix
        after: str | None = None
        while page := keys.scan(after=after, limit=1000):
            for record in page:
                if not (record.erased and record.subject.startswith(prefix)):
                    continue
                stream = record.subject
                last = service.accounts.events.read(stream, desc=True, limit=1)
                if last and last[0].type_name != AccountErased.type_name:
                    service.erase(stream[len(prefix) :], by="store import", request_id=None)
                    finished += 1
            after = page[-1].subject
    finally:
        runtime.close()
    return finished


def open_relay(settings: Settings, codec: EventCodec) -> Sink | None:
    """The relay's destination when ``relay_to`` is set (nothing is contacted until it publishes), else None.

    It publishes each event's data without what ``codec`` calls personal (docs/privacy.md).

    Raises :class:`~downloads.adapters.relay.BadRelayUrl` for a destination that is not a Kafka URL.
    """
    if not settings.relay_to:
        return None
    from downloads.adapters.relay import KafkaSink, parse_destination, without_personal

    return KafkaSink(
        parse_destination(settings.relay_to),
        data=without_personal(codec),
        timeout=settings.relay_timeout,
        create_topic=settings.relay_create_topic,
        partitions=settings.relay_partitions,
    )
