"""Verifying a store of the service: eskit's checks plus the product's limits, account by account.

Every stream decodes, positions are contiguous and snapshots equal their folds
(:func:`eskit.verify.verify_store`); on top, every account's history is
re-decided event by event and any event that broke a limit is reported
(:func:`downloads.domain.audit.limit_breaches`). Titles' studios are today's.
An erased member's account is counted as erased (not checked against the
limits: its device ids are gone); one whose erasure is recorded but whose key
still stands is a problem (an erasure that did not finish: erase it again).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from downloads.application.service import DownloadsService
from downloads.domain import Account
from downloads.domain.audit import limit_breaches
from downloads.domain.events import AccountErased
from eskit import Aggregate, EventStore, RecordedEvent, SnapshotStore
from eskit.privacy import DataKey
from eskit.verify import VerifyReport, verify_store

__all__ = ["verify_service_store"]


def verify_service_store(
    service: DownloadsService,
    events: EventStore,
    snapshots: SnapshotStore | None,
    *,
    report: VerifyReport | None = None,
    advance: Callable[[int], None] = lambda _n: None,
) -> VerifyReport:
    """Check every stream of the store ``service`` runs on; the report says what was found."""

    @functools.lru_cache(maxsize=10_000)
    def studio_of(title_id: str) -> str:
        info = service.title_info(title_id)
        return info.studio if info else "default"

    def inspect(aggregate: Aggregate, recorded: RecordedEvent) -> list[str]:
        if not isinstance(aggregate, Account):
            return []
        if isinstance(recorded.event, AccountErased) and isinstance(aggregate.stream_key, DataKey):
            return ["the member was erased but their key is still in the store: run `downloads erase` again"]
        return limit_breaches(aggregate, recorded.event, service.policy, studio_of)

    return verify_store(
        events,
        service.accounts.codec,
        [service.accounts, service.titles],
        snapshots=snapshots,
        inspect=inspect,
        report=report,
        advance=advance,
    )
