"""The studios' reports: downloads and renewals per day (or month), studio and title.

One row per counted event, partitioned by title and month and ordered by day,
so the decision never adds to a total (an event applied twice writes the same
row) and a report sums the rows of the months and titles it covers. A title's
studio is the one its latest ``TitleSet`` names (else the policy's demo
catalog), taken when the report is read: no order between a title's stream and
the accounts' is needed.

An erased member's downloads keep counting: the counts hold no personal field
(a title, a day, the pseudonymous account id and the event's position), and
the events they come from are read in clear after the erasure too. Only the
license-to-title rows of the account go, on its ``AccountErased``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from downloads.domain.events import AccountErased, LicenseIssued, LicenseRenewed, TitleSet
from downloads.errors import DownloadsError
from downloads.readmodels.model import (
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
from eskit.readmodel import Delete, Put, Rows, Table

__all__ = ["COUNTS", "MONTHS", "STUDIOS", "TITLES", "ReportTooLarge", "decide", "read_model", "report"]

COUNTS = Table(
    "counts",
    partition=("title_id", "month"),
    clustering=("day", "account_id", "position"),
    values=("downloads", "renewals"),
    kinds={"position": "int", "downloads": "int", "renewals": "int"},
)
#: the months with counts (one partition: a few hundred rows in decades), and the titles counted in each
MONTHS = Table("months", partition=("bucket",), clustering=("month",), kinds={"bucket": "int"})
TITLES = Table("titles", partition=("month",), clustering=("title_id",))
STUDIOS = Table("studios", partition=("title_id",), values=("studio",))


class ReportTooLarge(DownloadsError):
    """A report would have more rows than one answer holds."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the report has more than {limit:,} rows")
        self.limit = limit


def _count(seen: Seen, title_id: str, at: datetime, *, renewal: bool) -> Iterator[Put]:
    assert seen.account_id is not None
    day = at.astimezone(UTC).date().isoformat()
    month = day[:7]
    counted = {"downloads": 0 if renewal else 1, "renewals": 1 if renewal else 0}
    yield Put(COUNTS.name, (title_id, month, day, seen.account_id, seen.position), counted)
    yield Put(MONTHS.name, (0, month))
    yield Put(TITLES.name, (month, title_id))


def decide(seen: Seen, rows: Rows) -> Iterator[Put | Delete | Barrier | Scrub]:
    """A download counts on its license's issue, a renewal on its renewal; a ``TitleSet`` names the studio."""
    event = seen.event
    if seen.account_id is not None and isinstance(event, AccountErased):
        for license_id, _title in licenses_of(rows, seen):
            yield Delete(TITLES_OF.name, (seen.account_id, license_id))
        yield SCRUB
    elif isinstance(event, TitleSet):
        yield Put(STUDIOS.name, (event.title_id,), {"studio": event.studio})
    elif seen.account_id is not None and isinstance(event, LicenseIssued):
        yield remember_title(seen, event.license_id, event.title_id)
        yield from _count(seen, event.title_id, event.issued_at, renewal=False)
    elif seen.account_id is not None and isinstance(event, LicenseRenewed):
        yield from _count(seen, title_of(rows, seen, event.license_id), event.at, renewal=True)


def report(
    rows: Rows,
    *,
    granularity: str,
    studio: str | None,
    title_id: str | None,
    start: str | None,
    end: str | None,
    demo_studio: Callable[[str], str],
    limit: int = 10_000,
) -> list[dict[str, Any]]:
    """Totals per period (``day``: 2026-12-01, ``month``: 2026-12), studio and title, dates inclusive.

    Raises :class:`ReportTooLarge` rather than answer a part of more than ``limit`` rows.
    """
    months = [
        str(r["month"])
        for r in rows.select(MONTHS.name, (0,))
        if (start is None or r["month"] >= start[:7]) and (end is None or r["month"] <= end[:7])
    ]
    studios: dict[str, str] = {}

    def studio_of(title: str) -> str:
        if title not in studios:
            row = rows.get(STUDIOS.name, (title,))
            studios[title] = str(row["studio"]) if row is not None and row["studio"] else demo_studio(title)
        return studios[title]

    totals: dict[tuple[str, str, str], list[int]] = {}
    for month in months:
        titles = (
            [title_id] if title_id is not None else [str(r["title_id"]) for r in rows.select(TITLES.name, (month,))]
        )
        for title in titles:
            owner = studio_of(title)
            if studio is not None and owner != studio:
                continue
            for row in rows.select(COUNTS.name, (title, month), low=start, high=end):
                period = row["day"] if granularity == "day" else row["day"][:7]
                total = totals.get((period, owner, title))
                if total is None:
                    if len(totals) >= limit:
                        raise ReportTooLarge(limit)
                    total = totals[(period, owner, title)] = [0, 0]
                total[0] += row["downloads"] or 0
                total[1] += row["renewals"] or 0
    return [
        {"period": p, "studio": s, "title_id": t, "downloads": d, "renewals": r}
        for (p, s, t), (d, r) in sorted(totals.items())
    ]


def read_model() -> ReadModel:
    return ReadModel("download_reports", (COUNTS, MONTHS, TITLES, STUDIOS, TITLES_OF), decide, layout=2)
