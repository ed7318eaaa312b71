"""Title withdrawal: a process manager that revokes a withdrawn title's active licenses, on every store alike.

It is level-triggered. Its read model knows each title's state (withdrawn, and
until when it is available), each license's title and whether it is active,
and holds *marks*: a title is marked whenever the read model learns something
that may leave an active license on a withdrawn title (the title was
withdrawn; a license was issued or renewed on a title already withdrawn or
past its end). :class:`TitleWithdrawal` (the manager) revokes every active
license of each marked title, then removes the marks it read; once a second it
also revokes those of titles whose ``available_until`` has passed, once per
such end. Each revocation is an ordinary ``RevokeLicense`` command under a key
naming the title, the license and the withdrawal, so one sent twice (after a
crash) has one effect, and revoking a license that is no longer active does
nothing.

Why no license is missed, with no order between streams: a license's row is
written *before* its title's state is read (a barrier), and a title's state is
written *before* its mark. So either the license's event saw the withdrawal and
marked the title, or the withdrawal (and its mark) came after the license's row
stood, and the manager's scan of the title's licenses, which follows its
reading of the mark, finds the license. Marks read in a round are removed after
it; one written meanwhile stays for the next.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

from downloads.application import DownloadsService, RevokeLicense
from downloads.domain import Gone, NotFound
from downloads.domain.events import (
    AccountErased,
    LicenseExpired,
    LicenseIssued,
    LicenseReleased,
    LicenseRenewed,
    LicenseRevoked,
    TitleSet,
)
from downloads.readmodels.model import (
    BARRIER,
    SCRUB,
    TITLES_OF,
    Barrier,
    ReadModel,
    Scrub,
    Seen,
    licenses_of,
    remember_title,
    title_of,
)
from eskit.readmodel import Delete, ProcessManager, Put, Rows, Table, TableSet
from eskit.stores.timestamps import to_micros

__all__ = ["NAME", "REASON", "TitleWithdrawal", "decider", "marked", "read_model"]

log = logging.getLogger(__name__)

NAME = "title_withdrawal"
REASON = "title_withdrawn"

TITLES = Table(
    "titles",
    partition=("title_id",),
    values=("withdrawn", "available_until", "episode"),
    kinds={"withdrawn": "bool", "available_until": "int"},
)
#: every title with an end of availability (one partition: the manager looks at them once a second)
ENDS = Table(
    "ends",
    partition=("bucket",),
    clustering=("title_id",),
    values=("available_until",),
    kinds={"bucket": "int", "available_until": "int"},
)
LICENSES = Table(
    "licenses",
    partition=("title_id",),
    clustering=("account_id", "license_id"),
    values=("active",),
    kinds={"active": "bool"},
)
MARKS = Table(
    "marks",
    partition=("bucket",),
    clustering=("title_id", "stream_id", "position"),
    kinds={"bucket": "int", "position": "int"},
)
#: ends of availability already handled
DONE = Table("done", partition=("title_id",), clustering=("episode",))


def _mark(title_id: str, seen: Seen) -> Put:
    return Put(MARKS.name, (0, title_id, seen.stream_id, seen.position))


def decider(clock: Callable[[], datetime]) -> Callable[[Seen, Rows], Iterator[Put | Delete | Barrier | Scrub]]:
    """The decision, judging ends of availability by ``clock`` (the manager's, so both sides agree)."""

    def decide(seen: Seen, rows: Rows) -> Iterator[Put | Delete | Barrier | Scrub]:
        event, account_id = seen.event, seen.account_id
        if isinstance(event, TitleSet):
            ended = event.available_until is not None and event.available_until <= event.at
            withdrawn = not event.downloadable or ended
            until = to_micros(event.available_until) if event.available_until is not None else None
            episode = f"e{seen.position}" if withdrawn else None
            yield Put(
                TITLES.name, (event.title_id,), {"withdrawn": withdrawn, "available_until": until, "episode": episode}
            )
            yield Put(ENDS.name, (0, event.title_id), {"available_until": until})
            if withdrawn:
                yield BARRIER  # the withdrawal stands before its mark
                yield _mark(event.title_id, seen)
            return
        if account_id is None:
            return
        if isinstance(event, AccountErased):  # an erased member's licenses: nothing left to revoke
            for license_id, title_id in licenses_of(rows, seen):
                yield Delete(LICENSES.name, (title_id, account_id, license_id))
                yield Delete(TITLES_OF.name, (account_id, license_id))
            yield SCRUB
            return
        if seen.erased:
            return
        if isinstance(event, LicenseIssued):
            yield remember_title(seen, event.license_id, event.title_id)
            title_id, active = event.title_id, True
        elif isinstance(event, LicenseRenewed):
            title_id, active = title_of(rows, seen, event.license_id), True
        elif isinstance(event, LicenseReleased | LicenseRevoked | LicenseExpired):
            title_id, active = title_of(rows, seen, event.license_id), False
        else:
            return
        yield Put(LICENSES.name, (title_id, account_id, event.license_id), {"active": active})
        if not active:
            return
        yield BARRIER  # the active license stands before its title is read
        if _episode(rows.get(TITLES.name, (title_id,)), clock()) is not None:
            yield _mark(title_id, seen)

    return decide


def _episode(title: dict[str, Any] | None, now: datetime) -> str | None:
    """Why the title is withdrawn at ``now`` (its event, or the end of its availability), or None if it is not."""
    if title is None:
        return None
    if title["withdrawn"]:
        return str(title["episode"])
    until = title["available_until"]
    if until is not None and until <= to_micros(now):
        return f"t{until}"
    return None


def marked(rows: Rows, *, limit: int = 10_000) -> int:
    """Marks not handled yet (each may stand for many revocations)."""
    return len(rows.select(MARKS.name, (0,), limit=limit))


class TitleWithdrawal(ProcessManager):
    """Revokes the active licenses of marked titles and of titles past their end (see the module docstring)."""

    projection = NAME

    def __init__(
        self, service: DownloadsService, *, marks: int = 1000, workers: int = 8, ends_every: float = 1.0
    ) -> None:
        self.service, self.marks, self.workers, self.ends_every = service, marks, workers, ends_every
        self._ends_at = 0.0

    def act(self, tables: TableSet) -> int:
        """Send what is due; return how many revocations were sent. Raises the first command that failed,
        after the others; the marks of a title not fully handled stay."""
        if not tables.exists():
            return 0
        now = self.service.clock()
        sent, failure = 0, None
        if time.monotonic() >= self._ends_at:
            self._ends_at = time.monotonic() + self.ends_every
            for row in tables.select(ENDS.name, (0,)):
                until = row["available_until"]
                if until is None or until > to_micros(now):
                    continue
                episode = f"t{until}"
                if tables.get(DONE.name, (row["title_id"], episode)) is not None:
                    continue
                if _episode(tables.get(TITLES.name, (row["title_id"],)), now) != episode:
                    continue  # withdrawn by an event (its marks handle it), or available again
                try:
                    sent += self._revoke_all(tables, row["title_id"], episode)
                except Exception as exc:
                    failure = failure or exc
                    continue
                tables.put(DONE.name, (row["title_id"], episode))
        by_title: dict[str, list[dict[str, Any]]] = {}
        for mark in tables.select(MARKS.name, (0,), limit=self.marks):
            by_title.setdefault(mark["title_id"], []).append(mark)
        for title_id, seen in by_title.items():
            marked_episode = _episode(tables.get(TITLES.name, (title_id,)), now)
            if marked_episode is not None:
                try:
                    sent += self._revoke_all(tables, title_id, marked_episode)
                except Exception as exc:
                    failure = failure or exc
                    continue
            for mark in seen:  # only the marks read before the scan: a newer one stays for the next round
                tables.delete(MARKS.name, (0, mark["title_id"], mark["stream_id"], mark["position"]))
        if failure is not None:
            raise failure
        return sent

    def _revoke_all(self, tables: TableSet, title_id: str, episode: str) -> int:
        """Revoke every active license of the title, a few commands at once; raises the first failure."""
        active: list[tuple[str, str]] = []
        after = None
        while True:
            page = tables.select(LICENSES.name, (title_id,), after=after, limit=1000)
            active += [(r["account_id"], r["license_id"]) for r in page if r["active"]]
            if len(page) < 1000:
                break
            after = (page[-1]["account_id"], page[-1]["license_id"])

        def revoke(item: tuple[str, str]) -> int:
            account_id, license_id = item
            try:
                self.service.handle(
                    RevokeLicense(account_id, license_id, REASON),
                    idempotency_key=f"withdraw:{title_id}:{license_id}:{episode}",
                )
            except (NotFound, Gone):  # the account or license is gone, or its member erased: nothing to revoke
                return 0
            return 1

        if len(active) <= 1:
            return sum(map(revoke, active))
        with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="withdraw") as pool:
            return sum(pool.map(revoke, active))


def read_model(clock: Callable[[], datetime]) -> ReadModel:
    return ReadModel(NAME, (TITLES, ENDS, LICENSES, TITLES_OF, MARKS, DONE), decider(clock), layout=2)
