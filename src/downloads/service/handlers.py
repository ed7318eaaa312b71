"""The service layer: one short handler per command, and the queries.

Each command handler loads the account through the repository's
retry-on-conflict helper, runs one domain method, and returns a :class:`Reply`
(a plain, JSON-ready body and whether something was created). Accepted
commands remember their reply under the request id, so a retry with the same
id gets the same reply and writes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson

from downloads.domain import AcceptedRequest, Account, DomainError, Invalid, NotFound, Policy, Title, TitleInfo
from downloads.domain.requests import reply_record
from downloads.service.views import account_view, device_view, iso, license_view, title_view
from eskit import AggregateNotFound, CommandRunner, EventMetadata, Repository

__all__ = ["Clock", "DownloadsService", "Reply", "ServiceObserver", "system_clock"]

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


class ServiceObserver(Protocol):
    """What the service reports for metrics."""

    def conflict(self, command: str, attempt: int) -> None: ...

    def outcome(self, command: str, code: str) -> None: ...


@dataclass(frozen=True)
class Reply:
    """A command's answer: the body, whether it created something, whether it is a replay."""

    body: dict[str, Any]
    created: bool = False
    replayed: bool = False
    at: datetime = field(default_factory=system_clock, compare=False)


Action = Callable[[Account, datetime], tuple[dict[str, Any], bool]]


class DownloadsService:
    """Commands and queries of the license-accounting service."""

    def __init__(
        self,
        *,
        accounts: Repository[Account],
        titles: Repository[Title],
        policy: Policy,
        clock: Clock = system_clock,
        keep_requests: timedelta = timedelta(hours=24),
        observer: ServiceObserver | None = None,
        max_attempts: int = 20,
        cache_size: int = 0,
    ) -> None:
        self.accounts = accounts
        self.titles = titles
        self.account_commands = CommandRunner(accounts, cache_size=cache_size)
        self.title_commands = CommandRunner(titles)
        self.policy = policy
        self.clock = clock
        self.keep_requests = keep_requests
        self.observer = observer
        self.max_attempts = max_attempts

    # -- the command pipeline ----------------------------------------------------

    def _run(
        self,
        account_id: str,
        command: str,
        args: dict[str, Any],
        request_id: str | None,
        action: Action,
        *,
        create: bool = False,
    ) -> Reply:
        fingerprint = hashlib.sha256(orjson.dumps([command, account_id, args], option=orjson.OPT_SORT_KEYS)).hexdigest()

        def attempt(account: Account) -> Reply:
            now = account.decision_time(self.clock())
            if request_id is not None:
                prior = account.accepted(request_id, now)
                if prior is not None:
                    if prior.fingerprint != fingerprint:
                        raise Invalid(
                            "IDEMPOTENCY_KEY_REUSED",
                            "this Idempotency-Key was used for a different request",
                            {"idempotency_key": request_id},
                        )
                    return Reply(self._original_body(account_id, prior), prior.created, replayed=True)
            if not create and not account.exists:
                raise _account_not_found(account_id)
            body, created = action(account, now)
            return Reply(body, created, at=now)

        def metadata(account: Account, reply: Reply) -> list[EventMetadata]:
            each = EventMetadata(
                recorded_at=reply.at, request_id=request_id or f"auto-{uuid.uuid4().hex}", command=command
            )
            if request_id is None:
                return [each] * len(account.pending_events)
            # The key record is stored once per command, with its first event.
            record = {
                "fingerprint": fingerprint,
                "created": reply.created,
                "body": reply.body,
                "keep_seconds": self.keep_requests.total_seconds(),
            }
            first = dataclasses.replace(each, extra={"reply": record})
            return [first] + [each] * (len(account.pending_events) - 1)

        def on_conflict(n: int) -> None:
            if self.observer is not None:
                self.observer.conflict(command, n)

        try:
            reply = self.account_commands.run(
                account_id,
                attempt,
                metadata=metadata,
                create=True,
                max_attempts=self.max_attempts,
                on_conflict=on_conflict,
            )
        except DomainError as exc:
            self._outcome(command, exc.code)
            raise
        self._outcome(command, "REPLAYED" if reply.replayed else "OK")
        return reply

    def _original_body(self, account_id: str, prior: AcceptedRequest) -> dict[str, Any]:
        """The reply a remembered command gave, read from the event that holds its key record."""
        found = self.accounts.history(account_id, gt=prior.position - 1, lte=prior.position)
        record = reply_record(found[0].metadata.extra) if found else None
        if record is None:  # the index points at the record it was built from: this is a bug
            raise RuntimeError(f"no key record at position {prior.position} of account {account_id!r}")
        return dict(record.get("body") or {})

    def _outcome(self, command: str, code: str) -> None:
        if self.observer is not None:
            self.observer.outcome(command, code)

    # -- commands ------------------------------------------------------------------

    def open_account(self, account_id: str, plan: str, *, request_id: str | None = None) -> Reply:
        def action(account: Account, now: datetime) -> tuple[dict[str, Any], bool]:
            account.open(plan=plan, policy=self.policy, now=now)
            return account_view(account, self.policy), True

        return self._run(account_id, "open_account", {"plan": plan}, request_id, action, create=True)

    def change_plan(self, account_id: str, plan: str, *, request_id: str | None = None) -> Reply:
        def action(account: Account, now: datetime) -> tuple[dict[str, Any], bool]:
            account.change_plan(plan=plan, policy=self.policy, now=now)
            return account_view(account, self.policy), False

        return self._run(account_id, "change_plan", {"plan": plan}, request_id, action)

    def close_account(self, account_id: str, *, request_id: str | None = None) -> Reply:
        def action(account: Account, now: datetime) -> tuple[dict[str, Any], bool]:
            account.close(now=now)
            return account_view(account, self.policy), False

        return self._run(account_id, "close_account", {}, request_id, action)

    def register_device(self, account_id: str, device_id: str, model: str, *, request_id: str | None = None) -> Reply:
        def action(account: Account, now: datetime) -> tuple[dict[str, Any], bool]:
            device, created = account.register_device(device_id=device_id, model=model, policy=self.policy, now=now)
            return device_view(account, device), created

        args = {"device_id": device_id, "model": model}
        return self._run(account_id, "register_device", args, request_id, action)

    def deactivate_device(self, account_id: str, device_id: str, *, request_id: str | None = None) -> Reply:
        def action(account: Account, now: datetime) -> tuple[dict[str, Any], bool]:
            device, released = account.deactivate_device(device_id=device_id, now=now)
            return {"device": device_view(account, device), "released": released}, False

        return self._run(account_id, "deactivate_device", {"device_id": device_id}, request_id, action)

    def sync_device(
        self, account_id: str, device_id: str, license_ids: Iterable[str], *, request_id: str | None = None
    ) -> Reply:
        held = list(license_ids)

        def action(account: Account, now: datetime) -> tuple[dict[str, Any], bool]:
            return account.sync(device_id=device_id, held=held, now=now), False

        return self._run(account_id, "sync_device", {"device_id": device_id, "license_ids": held}, request_id, action)

    def acquire_license(
        self, account_id: str, device_id: str, title_id: str, *, request_id: str | None = None
    ) -> Reply:
        title = self.title_info(title_id)

        def action(account: Account, now: datetime) -> tuple[dict[str, Any], bool]:
            lic, created = account.acquire(
                device_id=device_id, title_id=title_id, title=title, policy=self.policy, now=now
            )
            return license_view(account, lic), created

        args = {"device_id": device_id, "title_id": title_id}
        return self._run(account_id, "acquire_license", args, request_id, action)

    def start_playback(self, account_id: str, license_id: str, *, request_id: str | None = None) -> Reply:
        def action(account: Account, now: datetime) -> tuple[dict[str, Any], bool]:
            title = self._license_title(account, license_id)
            lic = account.start_playback(license_id=license_id, title=title, policy=self.policy, now=now)
            return license_view(account, lic), False

        return self._run(account_id, "start_playback", {"license_id": license_id}, request_id, action)

    def renew_license(self, account_id: str, license_id: str, *, request_id: str | None = None) -> Reply:
        def action(account: Account, now: datetime) -> tuple[dict[str, Any], bool]:
            title = self._license_title(account, license_id)
            lic = account.renew(license_id=license_id, title=title, policy=self.policy, now=now)
            return license_view(account, lic), False

        return self._run(account_id, "renew_license", {"license_id": license_id}, request_id, action)

    def release_license(self, account_id: str, license_id: str, *, request_id: str | None = None) -> Reply:
        def action(account: Account, now: datetime) -> tuple[dict[str, Any], bool]:
            lic = account.release(license_id=license_id, now=now)
            return license_view(account, lic), False

        return self._run(account_id, "release_license", {"license_id": license_id}, request_id, action)

    def set_title(
        self, title_id: str, *, studio: str, downloadable: bool, available_until: datetime | None
    ) -> dict[str, Any]:
        def command(title: Title) -> TitleInfo:
            return title.set(
                studio=studio,
                downloadable=downloadable,
                available_until=available_until,
                policy=self.policy,
                now=self.clock(),
            )

        info = self.title_commands.run(
            title_id,
            command,
            metadata=lambda _t, _i: EventMetadata(recorded_at=self.clock(), command="set_title"),
            create=True,
            max_attempts=self.max_attempts,
        )
        return title_view(info)

    # -- queries -------------------------------------------------------------------

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
            raise NotFound("TITLE_NOT_FOUND", f"title {title_id!r} is not in the catalog", {"title_id": title_id})
        return title_view(info)

    def _license_title(self, account: Account, license_id: str) -> TitleInfo | None:
        lic = account.licenses.get(license_id)
        return self.title_info(lic.title_id) if lic else None

    def load_account(self, account_id: str, *, as_of: datetime | None = None, version: int | None = None) -> Account:
        """The account now (or at a point), with due licenses shown as expired (not saved)."""
        try:
            account = self.accounts.load(account_id, as_of=as_of, version=version)
        except AggregateNotFound as exc:
            raise _account_not_found(account_id) from exc
        if not account.exists:
            raise _account_not_found(account_id)
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
        return account_view(account, self.policy, stored=True)

    def list_licenses(
        self, account_id: str, *, status: str | None = None, device_id: str | None = None
    ) -> list[dict[str, Any]]:
        """Every license of the account that matches, in issue order."""
        return self.license_page(account_id, status=status, device_id=device_id, limit=None)[0]

    def license_page(
        self,
        account_id: str,
        *,
        status: str | None = None,
        device_id: str | None = None,
        after: str | None = None,
        limit: int | None = 1000,
    ) -> tuple[list[dict[str, Any]], str | None]:
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
        return [license_view(account, lic) for lic in page], following

    def get_license(self, account_id: str, license_id: str) -> dict[str, Any]:
        account = self.load_account(account_id)
        return license_view(account, account.license(license_id))

    def title_downloads(self, account_id: str, title_id: str) -> dict[str, Any]:
        account = self.load_account(account_id)
        info = self.title_info(title_id)
        if info is None:
            raise NotFound("TITLE_NOT_FOUND", f"title {title_id!r} is not in the catalog", {"title_id": title_id})
        now = account.decision_time(self.clock())
        window = self.policy.window
        counted = account.counted_downloads(title_id, now, window)
        limit = self.policy.studio(info.studio).max_downloads_per_title
        next_at = counted[len(counted) - limit] + window if limit > 0 and len(counted) >= limit else None
        return {
            "title_id": title_id,
            "limit": limit,
            "used": len(counted),
            "window_days": window / timedelta(days=1),
            "next_available_at": iso(next_at),
        }

    def history(self, account_id: str, *, after: int = 0, limit: int = 100) -> dict[str, Any]:
        """A page of the account's events, oldest first, with the next cursor."""
        if self.accounts.events.version(self.accounts.stream_id(account_id)) == 0:
            raise _account_not_found(account_id)
        page = self.accounts.history(account_id, gt=after, limit=limit + 1)
        events = [
            {
                "seq": r.position,
                "type": r.type_name,
                "recorded_at": iso(r.metadata.recorded_at),
                "data": _jsonable(r.event.to_dict()),
                "metadata": {
                    k: v
                    for k, v in {"request_id": r.metadata.request_id, "command": r.metadata.command}.items()
                    if v is not None
                },
            }
            for r in page[:limit]
        ]
        more = len(page) > limit
        return {"events": events, "next": events[-1]["seq"] if more and events else None}


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: iso(v) if isinstance(v, datetime) else v for k, v in data.items()}


def _account_not_found(account_id: str) -> NotFound:
    return NotFound("ACCOUNT_NOT_FOUND", f"account {account_id!r} does not exist", {"account_id": account_id})
