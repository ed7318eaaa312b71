"""The read models of a Cassandra deployment, in its cluster, and the title-withdrawal manager there.

The same read models as :mod:`downloads.readmodels.projections` answer the
same routes, laid out for the cluster: partitioned by title, by looked-up key,
by title and month. Every cell is written by one stream's events ``USING
TIMESTAMP`` the event's position (see :mod:`eskit.stores.cassandra.readmodel`),
so applying an event twice has one effect, and nothing depends on the order in
which different streams are followed, since the feed gives no such order.

Title withdrawal here is level-triggered: the projection marks a title whenever
it learns something that may leave an active license on a withdrawn title (the
title was withdrawn; a license was issued or renewed on a title it already
knows withdrawn), and :meth:`ClusterTitleWithdrawal.manage` revokes every
active license of each marked title, then removes the marks it read. Why no
license is missed: an account's license row is written *before* the projection
reads its title's state, and a title's withdrawal is written *before* its mark.
So either the account's projection saw the withdrawal and marked the title, or
the withdrawal (and its mark) came after the license row, and the manager's
scan, which follows its reading of the mark, finds the license. Marks read in a
round are deleted after it; one written meanwhile stays for the next.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from downloads.application import DownloadsService, RevokeLicense
from downloads.domain import NotFound
from downloads.domain.events import (
    DeviceRegistered,
    LicenseExpired,
    LicenseIssued,
    LicenseReleased,
    LicenseRenewed,
    LicenseRevoked,
    PlaybackStarted,
    TitleSet,
)
from downloads.readmodels.projections import ACCOUNT_PREFIX, TITLE_PREFIX, ReportTooLarge, micros
from eskit import DomainEvent, EventCodec, EventMetadata, StoredEvent
from eskit.exceptions import OperationalError
from eskit.stores.cassandra.readmodel import CassandraProjection, CassandraReadModels, Effects
from eskit.stores.timestamps import from_micros

__all__ = [
    "ClusterDownloadReports",
    "ClusterLicensesByTitle",
    "ClusterLookup",
    "ClusterProjection",
    "ClusterTitleWithdrawal",
]


def _now() -> datetime:
    return datetime.now(UTC)


_STATUS = {LicenseReleased: "released", LicenseRevoked: "revoked", LicenseExpired: "expired"}


class ClusterProjection(CassandraProjection):
    """A projection that sees the decoded events of account and title streams, with their positions."""

    def __init__(self, models: CassandraReadModels, codec: EventCodec, *, version: int) -> None:
        super().__init__(models, version=version)
        self.codec = codec

    def handle(self, stream_id: str, events: Sequence[StoredEvent], effects: Effects) -> None:
        if not stream_id.startswith((ACCOUNT_PREFIX, TITLE_PREFIX)):
            return
        owner = stream_id.removeprefix(ACCOUNT_PREFIX) if stream_id.startswith(ACCOUNT_PREFIX) else None
        batch: dict[str, Any] = {}  # what this batch learned, for its later events (read-your-writes)
        for stored in events:
            event, meta = self.codec.decode(stored)
            self.on_event(effects, stream_id, owner, stored.position, event, meta, batch)

    def on_event(
        self,
        effects: Effects,
        stream_id: str,
        account_id: str | None,
        position: int,
        event: DomainEvent,
        meta: EventMetadata,
        batch: dict[str, Any],
    ) -> None:
        raise NotImplementedError

    def cql(self, text: str) -> str:
        return text.replace("{p}", self.prefix)

    def title_of(self, account_id: str, license_id: str, batch: dict[str, Any]) -> str | None:
        """The title of one of the account's licenses (from its ``LicenseIssued``, applied before)."""
        if license_id in batch:
            return str(batch[license_id])
        row = self.models.run(
            self.cql("SELECT title_id FROM {p}titles_of WHERE account_id = ? AND license_id = ?"),
            (account_id, license_id),
        ).one()
        if row is None:  # its LicenseIssued was applied (it comes first in the stream): not visible yet
            raise OperationalError(f"the title of license {license_id!r} of {account_id!r} is not readable yet")
        return str(row.title_id)

    def remember_title(
        self, effects: Effects, account_id: str, license_id: str, title_id: str, position: int, batch: dict[str, Any]
    ) -> None:
        batch[license_id] = title_id
        effects.write(
            self.cql("INSERT INTO {p}titles_of (account_id, license_id, title_id) VALUES (?, ?, ?) USING TIMESTAMP ?"),
            (account_id, license_id, title_id, position),
        )

    def token_pages(
        self, table: str, key: Sequence[str], clustering: Sequence[str], columns: str, after: Sequence[Any] | None
    ) -> Iterator[Any]:
        """Every row of ``table`` in token order, resuming after the row whose key and clustering are ``after``."""
        where_key = " AND ".join(f"{k} = ?" for k in key)
        if after is not None:
            key_values, clustering_values = list(after[: len(key)]), list(after[len(key) :])
            rest = f"({', '.join(clustering)}) > ({', '.join('?' * len(clustering))})"
            yield from self.query(
                f"SELECT {columns} FROM {{p}}{table} WHERE {where_key} AND {rest}", [*key_values, *clustering_values]
            )
            token = f"token({', '.join(key)}) > token({', '.join('?' * len(key))})"
            yield from self.query(f"SELECT {columns} FROM {{p}}{table} WHERE {token}", key_values)
        else:
            yield from self.query(f"SELECT {columns} FROM {{p}}{table}")


def _cut(rows: Iterator[Any], limit: int) -> list[Any]:
    found = []
    for row in rows:
        found.append(row)
        if len(found) >= limit:
            break
    return found


class ClusterLicensesByTitle(ClusterProjection):
    """Every license with its title and status, partitioned by title."""

    name = "licenses_by_title"
    #: rows a page may read past (released, revoked, expired) before it answers with what it found
    SCAN = 20_000

    def tables(self) -> Sequence[str]:
        return [
            "CREATE TABLE IF NOT EXISTS {p}licenses (title_id text, account_id text, license_id text, device_id text,"
            " status text, issued_at bigint, expires_at bigint, PRIMARY KEY ((title_id), account_id, license_id))",
            "CREATE TABLE IF NOT EXISTS {p}titles_of (account_id text, license_id text, title_id text,"
            " PRIMARY KEY ((account_id), license_id))",
        ]

    def on_event(
        self,
        effects: Effects,
        stream_id: str,
        account_id: str | None,
        position: int,
        event: DomainEvent,
        meta: EventMetadata,
        batch: dict[str, Any],
    ) -> None:
        if account_id is None:
            return
        if isinstance(event, LicenseIssued):
            self.remember_title(effects, account_id, event.license_id, event.title_id, position, batch)
            effects.write(
                self.cql(
                    "INSERT INTO {p}licenses (title_id, account_id, license_id, device_id, status, issued_at,"
                    " expires_at) VALUES (?, ?, ?, ?, 'active', ?, ?) USING TIMESTAMP ?"
                ),
                (
                    event.title_id,
                    account_id,
                    event.license_id,
                    event.device_id,
                    micros(event.issued_at),
                    micros(event.expires_at),
                    position,
                ),
            )
            return
        if not isinstance(event, PlaybackStarted | LicenseRenewed | LicenseReleased | LicenseRevoked | LicenseExpired):
            return
        title_id = self.title_of(account_id, event.license_id, batch)
        if title_id is None:
            return
        key = (title_id, account_id, event.license_id)
        if isinstance(event, PlaybackStarted):
            sets, values = "expires_at = ?", list[object]([micros(event.expires_at)])
        elif isinstance(event, LicenseRenewed):
            sets, values = "status = 'active', expires_at = ?", [micros(event.expires_at)]
        else:
            sets, values = "status = ?", [_STATUS[type(event)]]
        effects.write(
            self.cql(
                f"UPDATE {{p}}licenses USING TIMESTAMP ? SET {sets} WHERE title_id = ? AND account_id = ?"
                " AND license_id = ?"
            ),
            (position, *values, *key),
        )

    def page(
        self, title_id: str, *, status: str, after: tuple[str, str] | None, limit: int, now: datetime
    ) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
        """A page of the title's licenses with ``status``, in (account, license) order.

        A page reads at most :attr:`SCAN` rows of the title; when it stops there it answers what it
        found with a cursor to go on from.
        """
        cql = (
            "SELECT account_id, license_id, device_id, status, issued_at, expires_at FROM {p}licenses"
            " WHERE title_id = ?"
        )
        params: list[Any] = [title_id]
        if after is not None:
            cql += " AND (account_id, license_id) > (?, ?)"
            params.extend(after)
        found: list[dict[str, Any]] = []
        last = None
        cutoff = micros(now)
        if not self.exists():
            return [], None
        for scanned, row in enumerate(self.models.run(self.cql(cql), params), start=1):
            last = (row.account_id, row.license_id)
            if row.status == status and (status != "active" or row.expires_at > cutoff):
                if len(found) == limit:
                    return found, (found[-1]["account_id"], found[-1]["license_id"])
                found.append(
                    {
                        "account_id": row.account_id,
                        "license_id": row.license_id,
                        "device_id": row.device_id,
                        "status": row.status,
                        "issued_at": from_micros(row.issued_at),
                        "expires_at": from_micros(row.expires_at),
                    }
                )
            if scanned >= self.SCAN:
                return found, last
        return found, None

    def every_license(
        self, *, after: tuple[str, str, str] | None = None, limit: int = 1000
    ) -> list[tuple[str, str, str]]:
        """A page of ``(account_id, license_id, title_id)`` over every row (token order), after row ``after``."""
        resume = None if after is None else (after[2], after[0], after[1])
        rows = self.token_pages(
            "licenses", ["title_id"], ["account_id", "license_id"], "title_id, account_id, license_id", resume
        )
        return [(r.account_id, r.license_id, r.title_id) for r in _cut(rows, limit)]


class ClusterLookup(ClusterProjection):
    """Which accounts hold a device id, a license id or an idempotency key, partitioned by the key."""

    name = "lookup"

    def tables(self) -> Sequence[str]:
        return [
            "CREATE TABLE IF NOT EXISTS {p}keys (kind text, key text, account_id text,"
            " PRIMARY KEY ((kind, key), account_id))"
        ]

    def on_event(
        self,
        effects: Effects,
        stream_id: str,
        account_id: str | None,
        position: int,
        event: DomainEvent,
        meta: EventMetadata,
        batch: dict[str, Any],
    ) -> None:
        if account_id is None:
            return
        found: list[tuple[str, str]] = []
        if isinstance(event, DeviceRegistered):
            found.append(("device_id", event.device_id))
        elif isinstance(event, LicenseIssued):
            found.append(("license_id", event.license_id))
        if meta.extra and "reply" in meta.extra and meta.request_id:
            found.append(("idempotency_key", meta.request_id))
        for kind, key in found:
            effects.write(
                self.cql("INSERT INTO {p}keys (kind, key, account_id) VALUES (?, ?, ?) USING TIMESTAMP ?"),
                (kind, key, account_id, position),
            )

    def accounts(self, kind: str, key: str, *, limit: int = 1000) -> list[str]:
        rows = self.query("SELECT account_id FROM {p}keys WHERE kind = ? AND key = ? LIMIT ?", (kind, key, limit))
        return [str(r.account_id) for r in rows]

    def every_key(self, *, after: tuple[str, str, str] | None = None, limit: int = 1000) -> list[tuple[str, str, str]]:
        """A page of ``(account_id, kind, key)`` over every row (token order), after row ``after``."""
        resume = None if after is None else (after[1], after[2], after[0])
        rows = self.token_pages("keys", ["kind", "key"], ["account_id"], "kind, key, account_id", resume)
        return [(r.account_id, r.kind, r.key) for r in _cut(rows, limit)]


class ClusterDownloadReports(ClusterProjection):
    """Downloads and renewals per day and title, one row per event, summed when asked.

    A title's studio is the one its latest ``TitleSet`` names (or the policy's
    demo catalog), taken when the report is read: the feed gives no order
    between a title's stream and the accounts', so it cannot be fixed at the
    time of the download.
    """

    name = "download_reports"

    def __init__(
        self, models: CassandraReadModels, codec: EventCodec, *, version: int, demo_studio: Callable[[str], str]
    ) -> None:
        super().__init__(models, codec, version=version)
        self.demo_studio = demo_studio

    def tables(self) -> Sequence[str]:
        return [
            "CREATE TABLE IF NOT EXISTS {p}events (title_id text, month text, day text, account_id text,"
            " position bigint, downloads int, renewals int,"
            " PRIMARY KEY ((title_id, month), day, account_id, position))",
            "CREATE TABLE IF NOT EXISTS {p}titles (month text, title_id text, PRIMARY KEY ((month), title_id))",
            "CREATE TABLE IF NOT EXISTS {p}months (bucket int, month text, PRIMARY KEY ((bucket), month))",
            "CREATE TABLE IF NOT EXISTS {p}studios (title_id text PRIMARY KEY, studio text)",
            "CREATE TABLE IF NOT EXISTS {p}titles_of (account_id text, license_id text, title_id text,"
            " PRIMARY KEY ((account_id), license_id))",
        ]

    def _count(
        self, effects: Effects, at: datetime, title_id: str, account_id: str, position: int, downloads: int
    ) -> None:
        day = at.astimezone(UTC).date().isoformat()
        month = day[:7]
        effects.write(
            self.cql(
                "INSERT INTO {p}events (title_id, month, day, account_id, position, downloads, renewals)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
            ),
            (title_id, month, day, account_id, position, downloads, 1 - downloads, position),
        )
        effects.write(
            self.cql("INSERT INTO {p}titles (month, title_id) VALUES (?, ?) USING TIMESTAMP ?"), (month, title_id, 1)
        )
        effects.write(self.cql("INSERT INTO {p}months (bucket, month) VALUES (0, ?) USING TIMESTAMP ?"), (month, 1))

    def on_event(
        self,
        effects: Effects,
        stream_id: str,
        account_id: str | None,
        position: int,
        event: DomainEvent,
        meta: EventMetadata,
        batch: dict[str, Any],
    ) -> None:
        if isinstance(event, TitleSet):
            effects.write(
                self.cql("INSERT INTO {p}studios (title_id, studio) VALUES (?, ?) USING TIMESTAMP ?"),
                (event.title_id, event.studio, position),
            )
        elif account_id is not None and isinstance(event, LicenseIssued):
            self.remember_title(effects, account_id, event.license_id, event.title_id, position, batch)
            self._count(effects, event.issued_at, event.title_id, account_id, position, 1)
        elif account_id is not None and isinstance(event, LicenseRenewed):
            title_id = self.title_of(account_id, event.license_id, batch)
            if title_id is not None:
                self._count(effects, event.at, title_id, account_id, position, 0)

    def _studio(self, title_id: str, known: dict[str, str]) -> str:
        if title_id not in known:
            rows = self.query("SELECT studio FROM {p}studios WHERE title_id = ?", (title_id,))
            known[title_id] = str(rows[0].studio) if rows else self.demo_studio(title_id)
        return known[title_id]

    def rows(
        self,
        *,
        granularity: str,
        studio: str | None,
        title_id: str | None,
        start: str | None,
        end: str | None,
        limit: int = 10_000,
    ) -> list[dict[str, Any]]:
        """Totals per period (``day``: 2026-12-01, ``month``: 2026-12), studio and title, dates inclusive."""
        months = [
            str(r.month)
            for r in self.query("SELECT month FROM {p}months WHERE bucket = 0")
            if (start is None or r.month >= start[:7]) and (end is None or r.month <= end[:7])
        ]
        totals: dict[tuple[str, str, str], list[int]] = {}
        studios: dict[str, str] = {}
        for month in months:
            titles = (
                [title_id]
                if title_id is not None
                else [str(r.title_id) for r in self.query("SELECT title_id FROM {p}titles WHERE month = ?", (month,))]
            )
            for title in titles:
                owner = self._studio(title, studios)
                if studio is not None and owner != studio:
                    continue
                cql = "SELECT day, downloads, renewals FROM {p}events WHERE title_id = ? AND month = ?"
                params: list[Any] = [title, month]
                if start is not None:
                    cql += " AND day >= ?"
                    params.append(start)
                if end is not None:
                    cql += " AND day <= ?"
                    params.append(end)
                for row in self.query(cql, params):
                    period = row.day if granularity == "day" else row.day[:7]
                    total = totals.get((period, owner, title))
                    if total is None:
                        if len(totals) >= limit:
                            raise ReportTooLarge(limit)
                        total = totals[(period, owner, title)] = [0, 0]
                    total[0] += row.downloads
                    total[1] += row.renewals
        return [
            {"period": p, "studio": s, "title_id": t, "downloads": d, "renewals": r}
            for (p, s, t), (d, r) in sorted(totals.items())
        ]


class ClusterTitleWithdrawal(ClusterProjection):
    """The withdrawal manager's state (titles, active licenses, marks) and its action; see the module docstring."""

    name = "title_withdrawal"
    REASON = "title_withdrawn"

    def __init__(
        self, models: CassandraReadModels, codec: EventCodec, *, version: int, clock: Callable[[], datetime] = _now
    ) -> None:
        super().__init__(models, codec, version=version)
        #: the manager's clock: an end of availability is judged by the same clock on both sides
        self.clock = clock

    def tables(self) -> Sequence[str]:
        return [
            "CREATE TABLE IF NOT EXISTS {p}titles (title_id text PRIMARY KEY, withdrawn boolean,"
            " available_until bigint, episode text)",
            "CREATE TABLE IF NOT EXISTS {p}until (bucket int, title_id text, available_until bigint,"
            " PRIMARY KEY ((bucket), title_id))",
            "CREATE TABLE IF NOT EXISTS {p}licenses (title_id text, account_id text, license_id text, active boolean,"
            " PRIMARY KEY ((title_id), account_id, license_id))",
            "CREATE TABLE IF NOT EXISTS {p}titles_of (account_id text, license_id text, title_id text,"
            " PRIMARY KEY ((account_id), license_id))",
            "CREATE TABLE IF NOT EXISTS {p}marks (bucket int, title_id text, stream_id text, position bigint,"
            " PRIMARY KEY ((bucket), title_id, stream_id, position))",
            "CREATE TABLE IF NOT EXISTS {p}done (title_id text, episode text, PRIMARY KEY ((title_id), episode))",
        ]

    def _mark(self, effects: Effects, title_id: str, stream_id: str, position: int) -> None:
        effects.write(
            self.cql(
                "INSERT INTO {p}marks (bucket, title_id, stream_id, position) VALUES (0, ?, ?, ?) USING TIMESTAMP ?"
            ),
            (title_id, stream_id, position, position),
        )

    def _title(self, title_id: str) -> Any:
        rows = self.query("SELECT withdrawn, available_until, episode FROM {p}titles WHERE title_id = ?", (title_id,))
        return rows[0] if rows else None

    def on_event(
        self,
        effects: Effects,
        stream_id: str,
        account_id: str | None,
        position: int,
        event: DomainEvent,
        meta: EventMetadata,
        batch: dict[str, Any],
    ) -> None:
        if isinstance(event, TitleSet):
            ended = event.available_until is not None and event.available_until <= event.at
            withdrawn = not event.downloadable or ended
            until = micros(event.available_until) if event.available_until is not None else None
            effects.write(
                self.cql(
                    "INSERT INTO {p}titles (title_id, withdrawn, available_until, episode) VALUES (?, ?, ?, ?)"
                    " USING TIMESTAMP ?"
                ),
                (event.title_id, withdrawn, until, f"e{position}" if withdrawn else None, position),
            )
            effects.write(
                self.cql("INSERT INTO {p}until (bucket, title_id, available_until) VALUES (0, ?, ?) USING TIMESTAMP ?"),
                (event.title_id, until, position),
            )
            if withdrawn:
                effects.flush()  # the withdrawal stands before its mark
                self._mark(effects, event.title_id, stream_id, position)
            return
        if account_id is None:
            return
        if isinstance(event, LicenseIssued):
            self.remember_title(effects, account_id, event.license_id, event.title_id, position, batch)
            title_id: str | None = event.title_id
            at: datetime | None = event.issued_at
        elif isinstance(event, LicenseRenewed):
            title_id, at = self.title_of(account_id, event.license_id, batch), event.at
        elif isinstance(event, LicenseReleased | LicenseRevoked | LicenseExpired):
            title_id, at = self.title_of(account_id, event.license_id, batch), None
        else:
            return
        if title_id is None:
            return
        active = at is not None
        effects.write(
            self.cql(
                "INSERT INTO {p}licenses (title_id, account_id, license_id, active) VALUES (?, ?, ?, ?)"
                " USING TIMESTAMP ?"
            ),
            (title_id, account_id, event.license_id, active, position),
        )
        if not active:
            return
        effects.flush()  # the active license stands before its title is read
        title = self._title(title_id)
        if title is not None and (
            title.withdrawn or (title.available_until is not None and title.available_until <= micros(self.clock()))
        ):
            self._mark(effects, title_id, stream_id, position)

    # -- the process manager -----------------------------------------------------------

    def _episode(self, title: Any, now: datetime) -> str | None:
        """Why the title is withdrawn now (the event, or the end of its availability), or None if it is not."""
        if title is None:
            return None
        if title.withdrawn:
            return str(title.episode)
        if title.available_until is not None and title.available_until <= micros(now):
            return f"t{title.available_until}"
        return None

    def _revoke_all(self, service: DownloadsService, title_id: str, episode: str) -> int:
        """Revoke every active license of the title (a few commands at once); raises the first failure."""
        from concurrent.futures import ThreadPoolExecutor

        rows = self.query("SELECT account_id, license_id, active FROM {p}licenses WHERE title_id = ?", (title_id,))
        active = [(row.account_id, row.license_id) for row in rows if row.active]

        def revoke(item: tuple[str, str]) -> int:
            account_id, license_id = item
            try:
                service.handle(
                    RevokeLicense(account_id, license_id, self.REASON),
                    idempotency_key=f"withdraw:{title_id}:{license_id}:{episode}",
                )
            except NotFound:
                return 0
            return 1

        if len(active) <= 1:
            return sum(map(revoke, active))
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="withdraw") as pool:
            return sum(pool.map(revoke, active))

    def manage(self, service: DownloadsService, now: datetime, *, marks: int = 1000, ends: bool = True) -> int:
        """Revoke the active licenses of marked titles and (with ``ends``) of titles whose availability ended.

        Returns how many revocations were sent. Raises the first command that failed, after the rest; the
        marks of a title not fully handled stay.
        """
        if not self.exists():
            return 0
        sent, failure = 0, None
        ended = self.query("SELECT title_id, available_until FROM {p}until WHERE bucket = 0") if ends else []
        for row in ended:
            if row.available_until is None or row.available_until > micros(now):
                continue
            episode = f"t{row.available_until}"
            if self.query("SELECT episode FROM {p}done WHERE title_id = ? AND episode = ?", (row.title_id, episode)):
                continue
            if self._episode(self._title(row.title_id), now) != episode:
                continue  # withdrawn by an event already (its marks handle it), or made available again
            try:
                sent += self._revoke_all(service, row.title_id, episode)
            except Exception as exc:
                failure = failure or exc
                continue
            self.models.run(self.cql("INSERT INTO {p}done (title_id, episode) VALUES (?, ?)"), (row.title_id, episode))
        by_title: dict[str, list[Any]] = {}
        for mark in self.query("SELECT title_id, stream_id, position FROM {p}marks WHERE bucket = 0 LIMIT ?", (marks,)):
            by_title.setdefault(mark.title_id, []).append(mark)
        for title_id, seen in by_title.items():
            marked = self._episode(self._title(title_id), now)
            if marked is not None:
                try:
                    sent += self._revoke_all(service, title_id, marked)
                except Exception as exc:
                    failure = failure or exc
                    continue
            for mark in seen:  # only the marks read before the scan: a newer one stays for the next round
                self.models.run(
                    self.cql(
                        "DELETE FROM {p}marks WHERE bucket = 0 AND title_id = ? AND stream_id = ? AND position = ?"
                    ),
                    (mark.title_id, mark.stream_id, mark.position),
                )
        if failure is not None:
            raise failure
        return sent

    def pending(self) -> int:
        """Marks not yet handled (each may stand for many revocations)."""
        return len(self.query("SELECT position FROM {p}marks WHERE bucket = 0 LIMIT 10000"))
