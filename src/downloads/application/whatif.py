"""What-if: an account's recorded commands re-decided, in order, under another policy, in memory.

The commands come from two records: every accepted command's events carry its
name (each event) and its arguments (its first event), and every refused one is
in the denial log. They are merged by decision time and re-decided one by one
on an account built in memory from nothing, by the same handlers the service
runs, at the time each was first decided and against the catalog as it stood
then. Nothing is written. A license keeps the id it had, so later commands that
name it find it (unless the other policy never issued it).

Events recorded before commands recorded their arguments cannot be re-decided:
they are applied as they were and reported as ``not_redecidable``, never
guessed. Commands past ``to`` are left out; commands before ``from`` are
applied as they were, so the re-decision starts from the state they made.

One request's work is bounded (:class:`WhatIfLimits`): at most so many commands
re-decided, at most so many bytes of decisions answered. Past either, it is
refused with ``WHAT_IF_TOO_LARGE`` and a ``to`` that fits, so the caller narrows
it with ``from`` and ``to``. The summary over every account keeps no decisions
and is not bounded by count; what it keeps (a summary, some titles' timelines)
does not grow with the number of accounts.

An erased member's commands are not re-decided: their arguments are gone with
their key. A request about such an account answers ``ACCOUNT_ERASED``; the
summary skips those accounts and says how many it skipped.
"""

from __future__ import annotations

import bisect
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from downloads.application.commands import AccountCommand
from downloads.application.handlers import HANDLERS, Context
from downloads.application.presenters import as_body, iso, present_account
from downloads.application.queries import account_not_found
from downloads.application.service import DownloadsService
from downloads.domain import Account, DomainError, Invalid, Policy, TitleInfo
from downloads.domain.events import LicenseIssued
from eskit import AggregateNotFound, EventMetadata, RecordedEvent

__all__ = [
    "COMMANDS",
    "MAX_ANSWER_BYTES",
    "MAX_COMMANDS",
    "TITLES_KEPT",
    "Decision",
    "RecordedCommand",
    "WhatIf",
    "WhatIfLimits",
    "WhatIfResult",
    "WhatIfSummary",
    "recorded_commands",
    "summarise",
]

#: command name -> its class
COMMANDS: dict[str, type[AccountCommand]] = {cls.name: cls for cls in HANDLERS}

#: the most commands one request re-decides (about a second of work on one core)
MAX_COMMANDS = 10_000
#: the most bytes of decisions, as JSON, one answer holds
MAX_ANSWER_BYTES = 1 << 20
#: titles whose states over time are kept at once (each is read again when it is needed again)
TITLES_KEPT = 4096


@dataclass(frozen=True)
class WhatIfLimits:
    """What one what-if request may cost: commands re-decided, and bytes of decisions in its answer."""

    commands: int = MAX_COMMANDS
    answer_bytes: int = MAX_ANSWER_BYTES


@dataclass
class RecordedCommand:
    """One command as recorded: when, what, how it was decided, and (if accepted) the events it wrote."""

    at: datetime
    name: str
    args: dict[str, Any] | None  # None: recorded before commands recorded their arguments
    code: str | None  # None: accepted
    events: list[RecordedEvent] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "accepted" if self.code is None else "denied"

    def command(self, account_id: str) -> AccountCommand | None:
        cls = COMMANDS.get(self.name)
        if cls is None or self.args is None:
            return None
        try:
            return cls.from_recorded(account_id, self.args)
        except TypeError:
            return None


@dataclass(frozen=True)
class Decision:
    """A command whose decision changes (or that could not be re-decided)."""

    at: datetime
    command: str
    args: dict[str, Any]
    was: tuple[str, str | None]  # (status, code)
    would_be: tuple[str, str | None]
    studio: str | None = None

    def as_body(self) -> dict[str, Any]:
        return {
            "at": iso(self.at),
            "command": self.command,
            "args": self.args,
            "was": {"status": self.was[0], "code": self.was[1]},
            "would_be": {"status": self.would_be[0], "code": self.would_be[1]},
        }


def _groups(history: list[RecordedEvent]) -> Iterator[RecordedCommand]:
    """The account's accepted commands: its events grouped by the command (request id) that wrote them."""
    current: RecordedCommand | None = None
    current_id: str | None = None
    for recorded in history:
        meta = recorded.metadata
        starts = bool(meta.extra and "args" in meta.extra)  # a command's first event holds its arguments
        if current is not None and not starts and meta.request_id is not None and meta.request_id == current_id:
            current.events.append(recorded)
            continue
        if current is not None:
            yield current
        args = meta.extra.get("args") if meta.extra else None
        current = RecordedCommand(meta.recorded_at, meta.command or "", args, None, [recorded])
        current_id = meta.request_id
    if current is not None:
        yield current


def recorded_commands(service: DownloadsService, account_id: str) -> list[RecordedCommand]:
    """The account's commands, accepted and refused, in the order they were decided (``ACCOUNT_ERASED`` for an
    erased member's, whose arguments are gone)."""
    service.require_not_erased(account_id)
    history = service.accounts.history(account_id)
    if not history:
        raise account_not_found(account_id)
    accepted = list(_groups(history))
    denied: list[tuple[int | None, RecordedCommand]] = []
    if service.denials is not None:
        after = None
        while True:
            found, after = service.denials.page(account_id, after=after, limit=1000)
            denied.extend((d.version, RecordedCommand(d.at, d.command, d.args, d.code)) for d in found)
            if after is None:
                break
    denied.reverse()  # oldest first
    if all(version is not None for version, _ in denied):
        # A refusal decided on version v came after the command that wrote v and before the next one:
        # placed by version, it is in the right place even when clocks made equal times.
        keyed = [((c.events[0].position - 1, 1), n, c) for n, c in enumerate(accepted)]
        keyed += [((version or 0, 0), n, c) for n, (version, c) in enumerate(denied)]
        return [c for *_, c in sorted(keyed, key=lambda item: item[:2])]
    # Denials recorded before they kept a version: by time (at equal times the accepted command first).
    timed = [(c.at, 0, n, c) for n, c in enumerate(accepted)] + [(c.at, 1, n, c) for n, (_, c) in enumerate(denied)]
    return [c for *_, c in sorted(timed, key=lambda item: item[:3])]


def _apply_as_it_was(account: Account, recorded: RecordedEvent) -> None:
    """Apply a recorded event to a re-decided account, unless what it names never came to be there."""
    try:
        account.replay(recorded.event, recorded.metadata)
    except KeyError:
        account.version += 1  # e.g. the release of a license the other policy never issued


class _Catalog:
    """Each title's states over time, to answer "what was this title at time t".

    The ``keep`` titles used last are kept: commands name titles without end (an unknown title
    is refused and recorded), so the summary over every account would otherwise keep them all.
    """

    def __init__(self, service: DownloadsService, *, keep: int) -> None:
        self.service = service
        self.keep = keep
        self._timelines: OrderedDict[str, tuple[list[datetime], list[TitleInfo]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._timelines)

    def _timeline(self, title_id: str) -> tuple[list[datetime], list[TitleInfo]]:
        found = self._timelines.get(title_id)
        if found is not None:
            self._timelines.move_to_end(title_id)
            return found
        times: list[datetime] = []
        infos: list[TitleInfo] = []
        title = self.service.titles.aggregate_cls(title_id)
        for recorded in self.service.titles.history(title_id):
            title.replay(recorded.event, recorded.metadata)
            if title.info is not None:
                times.append(recorded.metadata.recorded_at)
                infos.append(title.info)
        self._timelines[title_id] = (times, infos)
        if len(self._timelines) > self.keep:
            self._timelines.popitem(last=False)
        return times, infos

    def at(self, title_id: str, when: datetime) -> TitleInfo | None:
        times, infos = self._timeline(title_id)
        index = bisect.bisect_right(times, when) - 1
        if index >= 0:
            return infos[index]
        listed = self.service.policy.titles.get(title_id)
        return TitleInfo(title_id, listed.studio) if listed else None


@dataclass
class WhatIfResult:
    decisions: list[Decision]
    changed: int
    was: Account
    would_be: Account
    commands: int


class WhatIf:
    """Re-decides accounts' recorded commands under ``policy`` (see the module docstring)."""

    def __init__(
        self,
        service: DownloadsService,
        policy: Policy,
        *,
        limits: WhatIfLimits | None = None,
        titles_kept: int = TITLES_KEPT,
    ) -> None:
        self.service = service
        self.policy = policy
        self.limits = limits or WhatIfLimits()
        self.catalog = _Catalog(service, keep=titles_kept)

    def account(
        self,
        account_id: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        bounded: bool = True,
    ) -> WhatIfResult:
        """Re-decide the account's commands from ``since`` to ``until`` (both included, None: no end).

        Raises ``ACCOUNT_NOT_FOUND`` when the account did not exist by ``until``. When ``bounded``,
        raises :class:`~downloads.domain.Invalid` ``WHAT_IF_TOO_LARGE`` when more than
        ``limits.commands`` commands lie in the range (before any is re-decided), or when the
        decisions would take more than ``limits.answer_bytes`` bytes as JSON; its details give a
        ``to`` that fits (None when even the first instant does not).
        """
        commands = recorded_commands(self.service, account_id)
        if until is not None:
            commands = [c for c in commands if c.at <= until]
        if bounded:
            self._check_count(commands, since)
        was = Account(account_id)
        would_be = Account(account_id)
        decisions: list[Decision] = []
        size = 2  # the answer's decisions as JSON: "[", the items with a comma between, "]"
        changed = 0
        fresh = 0
        for recorded in commands:
            for event in recorded.events:
                was.replay(event.event, event.metadata)
            command = recorded.command(account_id)
            decision = None
            if (since is not None and recorded.at < since) or command is None:
                for event in recorded.events:  # as it was: applied, not decided again
                    _apply_as_it_was(would_be, event)
                if command is None and (since is None or recorded.at >= since):
                    decision = self._decision(recorded, ("not_redecidable", None))
            else:
                issued = [e.event.license_id for e in recorded.events if isinstance(e.event, LicenseIssued)]
                if not issued:
                    fresh += 1
                # A license the record never issued gets an id no request can name (" " and "#" are not id
                # characters), so no id a sync sent but did not keep could have named it.
                fresh_id = issued[0] if issued else f"what-if #{fresh}"
                outcome = self._decide(would_be, command, recorded.at, fresh_id)
                if outcome != (recorded.status, recorded.code):
                    changed += 1
                    decision = self._decision(recorded, outcome)
            if decision is None:
                continue
            if bounded:
                size += len(orjson.dumps(decision.as_body())) + (1 if decisions else 0)
                if size > self.limits.answer_bytes:
                    raise self._too_many_bytes(decisions, decision)
            decisions.append(decision)
        if not was.exists:  # nothing recorded by ``until``: the account did not exist yet
            raise account_not_found(account_id)
        return WhatIfResult(decisions, changed, was, would_be, len(commands))

    def _check_count(self, commands: list[RecordedCommand], since: datetime | None) -> None:
        in_range = sorted(c.at for c in commands if since is None or c.at >= since)
        limit = self.limits.commands
        if len(in_range) <= limit:
            return
        to = _last_time_within(in_range, limit)
        raise Invalid(
            "WHAT_IF_TOO_LARGE",
            f"this what-if would re-decide {len(in_range):,} commands, more than the {limit:,} one request may: "
            f'narrow it with "from" and "to"' + (f" (the first {limit:,} end at {iso(to)})" if to is not None else ""),
            {"commands": len(in_range), "limit": limit, "from": iso(since), "to": iso(to)},
        )

    def _too_many_bytes(self, fitting: list[Decision], first_over: Decision) -> Invalid:
        limit = self.limits.answer_bytes
        to = _last_time_within(sorted(d.at for d in [*fitting, first_over]), len(fitting))
        return Invalid(
            "WHAT_IF_TOO_LARGE",
            f"this what-if's decisions would take more than {limit:,} bytes: "
            f'narrow it with "from" and "to"' + (f" (those up to {iso(to)} fit)" if to is not None else ""),
            {"limit_bytes": limit, "to": iso(to)},
        )

    def _decide(
        self, account: Account, command: AccountCommand, at: datetime, license_id: str
    ) -> tuple[str, str | None]:
        if not command.creates_account and not account.exists:
            return "denied", "ACCOUNT_NOT_FOUND"  # as the service answers: the other policy never opened it
        last_at = account.last_at
        now = account.decision_time(at)
        ctx = Context(self.policy, now, lambda title_id: self.catalog.at(title_id, now), license_id=license_id)
        try:
            HANDLERS[type(command)](command, account, ctx)
            outcome: tuple[str, str | None] = ("accepted", None)
        except DomainError as exc:
            outcome = ("denied", exc.code)
        # A refusal can only have recorded due expirations, which the next command would record
        # the same (they carry the expiry time): keep them, but a refusal does not move time on.
        account.mark_saved(EventMetadata(recorded_at=now))
        if outcome[0] == "denied":
            account.last_at = last_at
        return outcome

    def _decision(self, recorded: RecordedCommand, would_be: tuple[str, str | None]) -> Decision:
        studio = None
        title_id = (recorded.args or {}).get("title_id")
        if isinstance(title_id, str):
            info = self.catalog.at(title_id, recorded.at)
            studio = info.studio if info else None
        return Decision(
            recorded.at, recorded.name, recorded.args or {}, (recorded.status, recorded.code), would_be, studio
        )

    def present(self, result: WhatIfResult) -> dict[str, Any]:
        """The answer of ``POST /v1/accounts/{a}/what-if``."""
        return {
            "decisions": [d.as_body() for d in result.decisions],
            "changed": result.changed,
            "account": {
                "was": as_body(present_account(result.was, self.service.policy)),
                # None: under the other policy the account would never have been opened
                "would_be": as_body(present_account(result.would_be, self.policy)) if result.would_be.exists else None,
            },
        }


@dataclass
class WhatIfSummary:
    """Over many accounts: how many decisions would change, by command, outcome and studio."""

    accounts: int = 0
    commands: int = 0
    changed: int = 0
    not_redecidable: int = 0
    #: accounts skipped because their member was erased
    erased: int = 0
    by_change: Counter[tuple[str, str, str, str]] = field(default_factory=Counter)  # command, was, would be, studio

    def add(self, result: WhatIfResult) -> None:
        self.accounts += 1
        self.commands += result.commands
        self.changed += result.changed
        for d in result.decisions:
            if d.would_be[0] == "not_redecidable":
                self.not_redecidable += 1
                continue
            was = d.was[1] or "accepted"
            would_be = d.would_be[1] or "accepted"
            self.by_change[(d.command, was, would_be, d.studio or "-")] += 1


def _last_time_within(times: Sequence[datetime], count: int) -> datetime | None:
    """The latest time ``t`` such that at most ``count`` of the sorted ``times`` are at or before ``t``."""
    if count <= 0:
        return None
    if len(times) <= count:
        return times[-1]
    # Items at the same instant as the first one past ``count`` cannot be split from it.
    index = bisect.bisect_left(times, times[count]) - 1
    return times[index] if index >= 0 else None


def summarise(
    what_if: WhatIf, account_ids: Iterator[str], *, advance: Callable[[int], None] = lambda _n: None
) -> WhatIfSummary:
    """Re-decide every account of ``account_ids`` and add up the changes.

    Not bounded per account as a request is (an account's decisions are counted, then dropped).
    """
    summary = WhatIfSummary()
    for account_id in account_ids:
        try:
            summary.add(what_if.account(account_id, bounded=False))
        except DomainError as exc:
            if exc.code == "ACCOUNT_ERASED":
                summary.erased += 1
                advance(1)
            continue  # else a stream that is not an account after all
        except AggregateNotFound:
            continue
        advance(1)
    return summary
