"""The queries: accounts (now or at a point in time), licenses, per-title counts, history, titles.

Queries load the aggregates and present them; licenses past their expiry are
shown as expired without saving anything. Each answer is the JSON-ready form
of a presenter's model. Nothing about an erased account is answered (410
``ACCOUNT_ERASED``), not even its state as it was before the erasure.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from downloads.application.ports import Clock, DenialLog, InvalidCursor
from downloads.application.presenters import (
    DownloadsOut,
    EventOut,
    EventsOut,
    LicensesOut,
    as_body,
    iso,
    present_account,
    present_denials,
    present_license,
    present_title,
)
from downloads.domain import Account, DomainError, Invalid, NotFound, Policy, Title, TitleInfo
from downloads.domain.account import account_erased
from downloads.domain.events import AccountErased
from eskit import AggregateNotFound, RecordedEvent, Repository
from eskit.privacy import ErasedKey

__all__ = ["DownloadsQueries", "account_not_found", "title_not_found"]


def account_not_found(account_id: str) -> NotFound:
    return NotFound("ACCOUNT_NOT_FOUND", f"account {account_id!r} does not exist", {"account_id": account_id})


def title_not_found(title_id: str) -> NotFound:
    return NotFound("TITLE_NOT_FOUND", f"title {title_id!r} is not in the catalog", {"title_id": title_id})


class DownloadsQueries:
    """Read-only answers over the account and title repositories."""

    def __init__(
        self,
        *,
        accounts: Repository[Account],
        titles: Repository[Title],
        policy: Policy,
        clock: Clock,
        denials: DenialLog | None = None,
    ):
        self.accounts = accounts
        self.titles = titles
        self.policy = policy
        self.clock = clock
        self.denials = denials

    def list_denials(self, account_id: str, *, after: str | None = None, limit: int = 100) -> dict[str, Any]:
        """A page of the account's recorded denials, newest first (``ACCOUNT_NOT_FOUND`` for no account,
        ``INVALID_CURSOR`` for an ``after`` the log never gives); a page is also bounded in bytes."""
        self.require_not_erased(account_id)
        if self.denials is None:
            return as_body(present_denials([], None))
        try:
            found, following = self.denials.page(account_id, after=after, limit=limit)
        except InvalidCursor as exc:
            raise Invalid("INVALID_CURSOR", str(exc), {"after": after}) from None
        return as_body(present_denials(found, following))

    def require_not_erased(self, account_id: str) -> None:
        """Raise ``ACCOUNT_NOT_FOUND`` for an account with no events and ``ACCOUNT_ERASED`` for an erased one.

        Erased: its last event is ``AccountErased`` (written first by an erasure), or its key was
        erased (an erasure restored into a store that holds the account's events but not that event).
        Two reads of the store (the stream's last event, the key), whatever the history's length.
        """
        stream = self.accounts.stream_id(account_id)
        last = self.accounts.events.read(stream, desc=True, limit=1)
        if not last:
            raise account_not_found(account_id)
        if last[0].type_name == AccountErased.type_name:
            event = self.accounts.decode(last[0]).event
            raise account_erased(account_id, event.at if isinstance(event, AccountErased) else None)
        if isinstance(self.accounts.stream_key(stream), ErasedKey):
            raise account_erased(account_id, None)

    def erased_at(self, account_id: str) -> datetime | None:
        """When the account was erased (its first erasure), None if it was not; ``ACCOUNT_NOT_FOUND`` for none."""
        try:
            self.require_not_erased(account_id)
        except DomainError as exc:
            if exc.code != "ACCOUNT_ERASED":
                raise
            at = exc.details.get("erased_at")
            return datetime.fromisoformat(at) if at else self.clock()
        return None

    def title_info(self, title_id: str) -> TitleInfo | None:
        """The title from the catalog, or from the policy's demo catalog, or None."""
        try:
            title = self.titles.load(title_id)
        except AggregateNotFound:
            listed = self.policy.titles.get(title_id)
            return TitleInfo(title_id, listed.studio) if listed else None
        return title.info

    def get_title(self, title_id: str) -> dict[str, Any]:
        info = self.title_info(title_id)
        if info is None:
            raise title_not_found(title_id)
        return as_body(present_title(info))

    def load_account(self, account_id: str, *, as_of: datetime | None = None, version: int | None = None) -> Account:
        """The account now (or at a point), with due licenses shown as expired (not saved).

        ``ACCOUNT_ERASED`` for an erased account, also for a point before its erasure.
        """
        if as_of is not None or version is not None:
            self.require_not_erased(account_id)  # the state before the erasure does not say it
        try:
            account = self.accounts.load(account_id, as_of=as_of, version=version)
        except AggregateNotFound as exc:
            raise account_not_found(account_id) from exc
        account.require_not_erased()
        if not account.exists:
            raise account_not_found(account_id)
        if account.status == "active":
            account.expire_due(as_of or self._time_of(account_id, version) or account.decision_time(self.clock()))
        return account

    def _time_of(self, account_id: str, version: int | None) -> datetime | None:
        """When the account's event ``version`` was recorded (a past state is judged at its own time)."""
        if version is None:
            return None
        found = self.accounts.history(account_id, gt=version - 1, lte=version)
        return found[0].metadata.recorded_at if found else None

    def get_account(
        self, account_id: str, *, as_of: datetime | None = None, version: int | None = None
    ) -> dict[str, Any]:
        account = self.load_account(account_id, as_of=as_of, version=version)
        return as_body(present_account(account, self.policy, stored=True))

    def list_licenses(
        self, account_id: str, *, status: str | None = None, device_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Every license of the account that matches, in issue order."""
        return list(self.license_page(account_id, status=status, device_id=device_id, limit=None)["licenses"])

    def license_page(
        self,
        account_id: str,
        *,
        status: str | None = None,
        device_id: str | None = None,
        after: str | None = None,
        limit: int | None = 1000,
    ) -> dict[str, Any]:
        """A page of the account's licenses in issue order, after license ``after``, and the next cursor."""
        account = self.load_account(account_id)
        ordered = list(account.licenses.values())
        if after is not None:
            ids = [lic.license_id for lic in ordered]
            if after not in account.licenses:
                raise Invalid("INVALID_CURSOR", f"no license {after!r} to continue after", {"after": after})
            ordered = ordered[ids.index(after) + 1 :]
        matching = [
            lic
            for lic in ordered
            if (status is None or lic.status == status) and (device_id is None or lic.device_id == device_id)
        ]
        page = matching if limit is None else matching[:limit]
        following = page[-1].license_id if page and len(matching) > len(page) else None
        return as_body(LicensesOut(licenses=[present_license(account, lic) for lic in page], next=following))

    def get_license(self, account_id: str, license_id: str) -> dict[str, Any]:
        account = self.load_account(account_id)
        return as_body(present_license(account, account.license(license_id)))

    def title_downloads(self, account_id: str, title_id: str) -> dict[str, Any]:
        account = self.load_account(account_id)
        info = self.title_info(title_id)
        if info is None:
            raise title_not_found(title_id)
        quota = account.title_quota(info, self.policy, account.decision_time(self.clock()))
        return as_body(
            DownloadsOut(
                title_id=title_id,
                limit=quota.limit,
                used=quota.used,
                window_days=self.policy.window / timedelta(days=1),
                next_available_at=iso(quota.frees_at),
            )
        )

    #: the most events one history page reads while looking for ones that pass its filters
    HISTORY_SCAN = 10_000

    def history(
        self,
        account_id: str,
        *,
        after: int = 0,
        limit: int = 100,
        types: frozenset[str] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> dict[str, Any]:
        """A page of the account's events, oldest first, with the next cursor.

        ``types``, ``since`` and ``until`` keep only events of those types recorded in that time
        range. A page reads at most :attr:`HISTORY_SCAN` events: a filter that matches little may
        answer fewer than ``limit`` events with a ``next`` to continue from.
        """
        stream = self.accounts.stream_id(account_id)
        self.require_not_erased(account_id)
        if since is not None:  # recorded times never go backwards in an account: skip to the first at or after
            after = max(after, self.accounts.events.version_at(stream, since - timedelta(microseconds=1)))
        kept: list[RecordedEvent] = []
        position, scanned, ended = after, 0, False
        filtered = types is not None or until is not None
        while len(kept) <= limit and scanned < self.HISTORY_SCAN:
            size = min(1000, self.HISTORY_SCAN - scanned) if filtered else limit + 1
            page = self.accounts.history(account_id, gt=position, limit=size)
            for r in page:
                if until is not None and r.metadata.recorded_at > until:
                    ended = True
                    break
                scanned, position = scanned + 1, r.position
                if types is None or r.type_name in types:
                    kept.append(r)
                    if len(kept) > limit:
                        break
            if ended or len(page) < size:
                ended = True
                break
        if len(kept) > limit:
            following: int | None = kept[limit - 1].position
        else:
            following = None if ended else position  # the scan budget ran out: continue from here
        events = [_present_event(r) for r in kept[:limit]]
        return as_body(EventsOut(events=events, next=following))


def _present_event(r: RecordedEvent) -> EventOut:
    meta = {
        "request_id": r.metadata.request_id,
        "command": r.metadata.command,
        "args": r.metadata.extra.get("args") if r.metadata.extra else None,
        "schema_version": r.schema_version or None,
    }
    return EventOut(
        seq=r.position,
        type=r.type_name,
        recorded_at=iso(r.metadata.recorded_at) or "",
        data=_jsonable(r.event.to_dict()),
        metadata={k: v for k, v in meta.items() if v is not None},
    )


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: iso(v) if isinstance(v, datetime) else v for k, v in data.items()}
