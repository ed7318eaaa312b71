"""The service: runs account commands with retries and idempotency, and answers queries.

:meth:`DownloadsService.handle` is the whole pipeline of a command, top to
bottom: run it on the account's latest state (:class:`eskit.CommandRunner`
reloads and runs it again when another writer got there first), answer a
remembered key with its first answer, decide through the command's handler,
and save the events with metadata that records the key once.

:meth:`DownloadsService.erase` forgets a member (see docs/privacy.md): it
records ``AccountErased`` by the same conditional append as any command (so no
command is accepted after it), then destroys the member's key and removes
their snapshots and denials. Each step is idempotent: an erasure interrupted
part-way is finished by erasing again.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from downloads.application.catalog import TitleCache
from downloads.application.commands import AccountCommand, SetTitle
from downloads.application.handlers import HANDLERS, Context
from downloads.application.idempotency import command_metadata, original_body, remembered
from downloads.application.ports import Clock, Denial, DenialLog, ServiceObserver, system_clock
from downloads.application.presenters import as_body, jsonable, present_title
from downloads.application.queries import DownloadsQueries, account_not_found
from downloads.domain import Account, Denied, DomainError, NotFound, Policy, Title, TitleInfo
from eskit import AggregateNotFound, CommandRunner, EventMetadata, Repository
from eskit.budget import command_budget
from eskit.tracing import Span, tracer

__all__ = ["DownloadsService", "Reply"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reply:
    """A command's answer: the body, whether it created something, whether it is a replay."""

    body: dict[str, Any]
    created: bool = False
    replayed: bool = False
    at: datetime = field(default_factory=system_clock, compare=False)


class DownloadsService(DownloadsQueries):
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
        denials: DenialLog | None = None,
        title_cache_seconds: float = 0.0,
    ) -> None:
        super().__init__(accounts=accounts, titles=titles, policy=policy, clock=clock, denials=denials)
        #: titles for commands, from memory (see downloads.application.catalog)
        self.catalog = TitleCache(self.title_info, ttl=title_cache_seconds)
        self.account_commands = CommandRunner(accounts, cache_size=cache_size)
        self.title_commands = CommandRunner(titles)
        self.keep_requests = keep_requests
        self.observer = observer
        self.max_attempts = max_attempts

    def handle(self, command: AccountCommand, *, idempotency_key: str | None = None) -> Reply:
        """Run an account command; raise :class:`~downloads.domain.DomainError` when a rule refuses it.

        A refusal of a command on an account that exists is recorded in the denial log (when
        there is one), apart from the account's events. Arguments past a bound of the policy
        (:meth:`AccountCommand.validate`) are refused before anything is loaded or recorded.
        The observer learns the outcome and the time taken; when a tracer is installed the command
        runs in a span ``command <name>`` with its account id (pseudonymous), attempts, conflicts
        and outcome code.
        """
        started = time.perf_counter()
        current = tracer()
        if current is None:
            return self._handle(command, idempotency_key, started, None)
        attributes = {"downloads.command": command.name, "downloads.account_id": command.account_id}
        with current.span(f"command {command.name}", dict(attributes)) as span:
            return self._handle(command, idempotency_key, started, span)

    def _handle(self, command: AccountCommand, key: str | None, started: float, span: Span | None) -> Reply:
        # One budget for the command and, for one answered again, the durable hint written after it.
        with command_budget(self.accounts.events.command_budget):
            return self._run(command, key, started, span)

    def _run(self, command: AccountCommand, key: str | None, started: float, span: Span | None) -> Reply:
        seen: dict[str, Any] = {"attempts": 0, "conflicts": 0}
        try:
            command.validate(self.policy)
            reply = self.account_commands.run(
                command.account_id,
                lambda account: self._decide(command, account, key, seen),
                metadata=lambda account, reply: command_metadata(
                    command,
                    arguments=seen["args"],
                    key=key,
                    at=reply.at,
                    events=len(account.pending_events),
                    body=reply.body,
                    created=reply.created,
                    keep=self.keep_requests,
                ),
                create=True,  # existence is checked after the key, so a retry of an open is a replay
                new=command.creates_account,  # an open expects no stream: its append, not a read, checks
                max_attempts=self.max_attempts,
                on_conflict=lambda attempt: self._conflict(command, attempt, seen, span),
            )
        except DomainError as exc:
            self._outcome(command, exc.code, started, seen, span)
            if seen.get("exists") and isinstance(exc, Denied | NotFound) and self.denials is not None:
                self._record_denial(command, exc, seen, key)
            raise
        except Exception as exc:
            self._outcome(command, "FAILED", started, seen, span)
            if span is not None:
                span.fail(exc)
            raise
        if reply.replayed:
            # Answered again: first make sure the feed's record of it is durable (EventStore.announce).
            self.accounts.events.announce(self.accounts.stream_id(command.account_id), seen["version"])
        self._outcome(command, "REPLAYED" if reply.replayed else "OK", started, seen, span)
        return reply

    def _record_denial(self, command: AccountCommand, exc: DomainError, seen: dict[str, Any], key: str | None) -> None:
        """Keep the refusal, with the command's recorded arguments (the log caps each record's size)."""
        assert self.denials is not None
        denial = Denial(
            at=seen["now"],
            command=command.name,
            args=jsonable(seen["args"]),
            code=exc.code,
            message=exc.message,
            details=jsonable(exc.details),
            request_id=key,
            version=seen["version"],
        )
        try:
            self.denials.record(command.account_id, denial)
        except Exception:  # the answer stands whether or not its record could be kept
            log.exception("could not record the denial of %s on %s", command.name, command.account_id)

    def _decide(self, command: AccountCommand, account: Account, key: str | None, seen: dict[str, Any]) -> Reply:
        account.require_not_erased()  # before the key: an erased account remembers no key, answers nothing
        seen["attempts"] += 1
        now = account.decision_time(self.clock())
        seen["now"], seen["exists"], seen["version"] = now, account.exists, account.version
        seen["args"] = command.recorded_arguments(account)
        if key is not None:
            prior = remembered(account, key, command, now)
            if prior is not None:
                return Reply(original_body(self.accounts, command, prior), prior.created, replayed=True)
        if not command.creates_account and not account.exists:
            raise account_not_found(account.id)
        handler, cached = HANDLERS[type(command)], not command.fresh_catalog
        consulted: list[str] = []

        def title(title_id: str) -> TitleInfo | None:
            consulted.append(title_id)
            return self.catalog.get(title_id)

        try:
            decision = handler(command, account, Context(self.policy, now, title if cached else self.title_info))
        except DomainError:
            if not consulted:
                raise
            # A refusal is decided on the catalog as stored, never on what the cache holds.
            decision = handler(command, account, Context(self.policy, now, self.title_info))
        if key is not None and not account.pending_events:
            # The key must be remembered with the account's version, by the same conditional append as
            # any decision: an event that changes nothing carries its record.
            account.answered_unchanged(command=command.name, now=now)
        return Reply(as_body(decision.answer), decision.created, at=now)

    def erase(self, account_id: str, *, by: str, request_id: str | None = None) -> dict[str, Any]:
        """Forget the member of ``account_id``; answer ``{"account_id", "erased_at"}`` (the first erasure's time).

        In order, each step idempotent, so that erasing again finishes an erasure that was interrupted:
        record ``AccountErased`` (a conditional append: a command decided before it conflicts, is
        decided again and refused, so none is accepted after it); destroy the member's key in the
        key store; remove the account's snapshots and denials; drop it from this process's caches.
        Raises ``ACCOUNT_NOT_FOUND`` for an account that never existed.
        """
        started = time.perf_counter()
        request_id = request_id or f"erase-{uuid.uuid4().hex}"

        def record(account: Account) -> datetime:
            if not account.exists and not account.key_erased:
                raise account_not_found(account_id)
            return account.erase(by=by, request_id=request_id, now=account.decision_time(self.clock()))

        try:
            erased_at = self.account_commands.run(
                account_id,
                record,
                # Nothing personal: no request id or arguments in the metadata (the event says who and which).
                metadata=lambda _account, at: EventMetadata(recorded_at=at, command="erase_account"),
                max_attempts=self.max_attempts,
            )
        except AggregateNotFound:
            raise account_not_found(account_id) from None
        self.accounts.forget(account_id, at=erased_at)
        self.account_commands.evict(account_id)
        if self.denials is not None:
            self.denials.forget(account_id)
        self._outcome_named("erase_account", "OK", time.perf_counter() - started)
        return {"account_id": account_id, "erased_at": erased_at}

    def set_title(self, command: SetTitle) -> dict[str, Any]:
        """Put a title in the catalog or change it; raise :class:`~downloads.domain.Invalid` for bad values."""

        def change(title: Title) -> TitleInfo:
            return title.set(
                studio=command.studio,
                downloadable=command.downloadable,
                available_until=command.available_until,
                policy=self.policy,
                now=self.clock(),
            )

        info = self.title_commands.run(
            command.title_id,
            change,
            metadata=lambda _title, _info: EventMetadata(recorded_at=self.clock(), command=command.name),
            create=True,
            max_attempts=self.max_attempts,
        )
        self.catalog.put(command.title_id, info)  # this process's commands see its own change at once
        return as_body(present_title(info))

    def _conflict(self, command: AccountCommand, attempt: int, seen: dict[str, Any], span: Span | None) -> None:
        seen["conflicts"] += 1
        if span is not None:
            span.event("conflict", {"downloads.attempt": attempt})
        if self.observer is not None:
            self.observer.conflict(command.name, attempt)

    def _outcome(
        self, command: AccountCommand, code: str, started: float, seen: dict[str, Any], span: Span | None
    ) -> None:
        if span is not None:
            span.set("downloads.outcome", code)
            span.set("downloads.attempts", seen["attempts"])
            span.set("downloads.conflicts", seen["conflicts"])
        self._outcome_named(command.name, code, time.perf_counter() - started)

    def _outcome_named(self, name: str, code: str, seconds: float) -> None:
        if self.observer is not None:
            self.observer.outcome(name, code, seconds)
