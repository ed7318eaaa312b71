"""The read models: active licenses by title, accounts by device, license and key, download reports.

Each is a :class:`~eskit.stores.sqlite.readmodel.SQLiteProjection`: it decodes
the feed's events with the service's codec and changes its rows in the
transaction that moves its checkpoint, so each event has exactly one effect.
Times are stored as microseconds since the epoch (UTC).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

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
from eskit import DomainEvent, EventCodec, EventMetadata
from eskit.ports import FeedEvent
from eskit.stores.sqlite.readmodel import SQLiteProjection, SQLiteReadModels
from eskit.stores.timestamps import from_micros, to_micros

__all__ = [
    "ACCOUNT_PREFIX",
    "TITLE_PREFIX",
    "DecodingProjection",
    "DownloadReports",
    "LicensesByTitle",
    "Lookup",
    "ReportTooLarge",
    "micros",
]

ACCOUNT_PREFIX = "account-"
TITLE_PREFIX = "title-"


def micros(when: datetime) -> int:
    return to_micros(when)


class DecodingProjection(SQLiteProjection):
    """A projection that sees decoded events of account and title streams."""

    def __init__(self, models: SQLiteReadModels, codec: EventCodec, **options: Any) -> None:
        super().__init__(models, **options)
        self.codec = codec
        #: the feed sequence of the event being handled (what a process manager tags its work with)
        self.current_sequence = 0

    def handle(self, conn: sqlite3.Connection, events: Sequence[FeedEvent]) -> None:
        for item in events:
            stream = item.event.stream_id
            if not stream.startswith((ACCOUNT_PREFIX, TITLE_PREFIX)):
                continue
            event, metadata = self.codec.decode(item.event)
            self.current_sequence = item.sequence
            owner = stream.removeprefix(ACCOUNT_PREFIX) if stream.startswith(ACCOUNT_PREFIX) else None
            self.on_event(conn, owner, event, metadata)

    def on_event(
        self, conn: sqlite3.Connection, account_id: str | None, event: DomainEvent, meta: EventMetadata
    ) -> None:
        """One decoded event; ``account_id`` is None for a title stream's events."""
        raise NotImplementedError


class LicensesByTitle(DecodingProjection):
    """Every license with its title and status, to list a title's licenses across accounts."""

    name = "licenses_by_title"

    def tables(self) -> Sequence[str]:
        return [
            "CREATE TABLE IF NOT EXISTS {p}licenses (account_id TEXT NOT NULL, license_id TEXT NOT NULL,"
            " device_id TEXT NOT NULL, title_id TEXT NOT NULL, status TEXT NOT NULL, issued_at INTEGER NOT NULL,"
            " expires_at INTEGER NOT NULL, PRIMARY KEY (account_id, license_id))",
            "CREATE INDEX IF NOT EXISTS {p}by_title ON {p}licenses (title_id, status, account_id, license_id)",
        ]

    def on_event(
        self, conn: sqlite3.Connection, account_id: str | None, event: DomainEvent, meta: EventMetadata
    ) -> None:
        table = f"{self.prefix}licenses"
        if account_id is None:
            return
        if isinstance(event, LicenseIssued):
            conn.execute(
                f"INSERT OR REPLACE INTO {table} VALUES (?, ?, ?, ?, 'active', ?, ?)",
                (
                    account_id,
                    event.license_id,
                    event.device_id,
                    event.title_id,
                    micros(event.issued_at),
                    micros(event.expires_at),
                ),
            )
        elif isinstance(event, PlaybackStarted):
            conn.execute(
                f"UPDATE {table} SET expires_at = ? WHERE account_id = ? AND license_id = ?",
                (micros(event.expires_at), account_id, event.license_id),
            )
        elif isinstance(event, LicenseRenewed):
            conn.execute(
                f"UPDATE {table} SET status = 'active', expires_at = ? WHERE account_id = ? AND license_id = ?",
                (micros(event.expires_at), account_id, event.license_id),
            )
        elif isinstance(event, LicenseReleased | LicenseRevoked | LicenseExpired):
            status = {LicenseReleased: "released", LicenseRevoked: "revoked", LicenseExpired: "expired"}[type(event)]
            conn.execute(
                f"UPDATE {table} SET status = ? WHERE account_id = ? AND license_id = ?",
                (status, account_id, event.license_id),
            )

    def page(
        self, title_id: str, *, status: str, after: tuple[str, str] | None, limit: int, now: datetime
    ) -> tuple[list[dict[str, Any]], tuple[str, str] | None]:
        """A page of the title's licenses in (account, license) order; ``active`` leaves out those past expiry."""
        sql = (
            f"SELECT account_id, license_id, device_id, status, issued_at, expires_at FROM {self.prefix}licenses"
            " WHERE title_id = ? AND status = ?"
        )
        params: list[Any] = [title_id, status]
        if status == "active":
            sql += " AND expires_at > ?"
            params.append(micros(now))
        if after is not None:
            sql += " AND (account_id, license_id) > (?, ?)"
            params.extend(after)
        sql += " ORDER BY account_id, license_id LIMIT ?"
        params.append(limit + 1)
        rows = self.query(sql, params)
        page = [
            {
                "account_id": a,
                "license_id": lic,
                "device_id": d,
                "status": s,
                "issued_at": from_micros(i),
                "expires_at": from_micros(e),
            }
            for a, lic, d, s, i, e in rows[:limit]
        ]
        following = (rows[limit - 1][0], rows[limit - 1][1]) if len(rows) > limit else None
        return page, following

    def every_license(
        self, *, after: tuple[str, str, str] | None = None, limit: int = 1000
    ) -> list[tuple[str, str, str]]:
        """A page of ``(account_id, license_id, title_id)`` over every row, in key order, after row ``after``."""
        sql = f"SELECT account_id, license_id, title_id FROM {self.prefix}licenses"
        params: list[Any] = []
        if after is not None:
            sql += " WHERE (account_id, license_id) > (?, ?)"
            params.extend(after[:2])
        return [
            (str(a), str(lic), str(t))
            for a, lic, t in self.query(sql + " ORDER BY account_id, license_id LIMIT ?", [*params, limit])
        ]


class Lookup(DecodingProjection):
    """Which accounts hold a device id, a license id or an idempotency key (support's first question)."""

    name = "lookup"
    KINDS = ("device_id", "license_id", "idempotency_key")

    def tables(self) -> Sequence[str]:
        return [
            "CREATE TABLE IF NOT EXISTS {p}keys (kind TEXT NOT NULL, key TEXT NOT NULL, account_id TEXT NOT NULL,"
            " PRIMARY KEY (kind, key, account_id))"
        ]

    def on_event(
        self, conn: sqlite3.Connection, account_id: str | None, event: DomainEvent, meta: EventMetadata
    ) -> None:
        if account_id is None:
            return
        found: list[tuple[str, str]] = []
        if isinstance(event, DeviceRegistered):
            found.append(("device_id", event.device_id))
        elif isinstance(event, LicenseIssued):
            found.append(("license_id", event.license_id))
        if meta.extra and "reply" in meta.extra and meta.request_id:  # the event holding a key's record
            found.append(("idempotency_key", meta.request_id))
        for kind, key in found:
            conn.execute(f"INSERT OR IGNORE INTO {self.prefix}keys VALUES (?, ?, ?)", (kind, key, account_id))

    def accounts(self, kind: str, key: str, *, limit: int = 1000) -> list[str]:
        rows = self.query(
            f"SELECT account_id FROM {self.prefix}keys WHERE kind = ? AND key = ? ORDER BY account_id LIMIT ?",
            (kind, key, limit),
        )
        return [str(row[0]) for row in rows]

    def every_key(self, *, after: tuple[str, str, str] | None = None, limit: int = 1000) -> list[tuple[str, str, str]]:
        """A page of ``(account_id, kind, key)`` over every row, by account (for verification)."""
        sql = f"SELECT account_id, kind, key FROM {self.prefix}keys"
        params: list[Any] = []
        if after is not None:
            sql += " WHERE (account_id, kind, key) > (?, ?, ?)"
            params.extend(after)
        return [
            (str(a), str(k), str(v))
            for a, k, v in self.query(sql + " ORDER BY account_id, kind, key LIMIT ?", [*params, limit])
        ]


class ReportTooLarge(Exception):
    """A report would have more rows than one answer holds."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the report has more than {limit:,} rows")
        self.limit = limit


class DownloadReports(DecodingProjection):
    """Downloads and renewals per day, studio and title, from the licenses' own times."""

    name = "download_reports"

    def __init__(
        self, models: SQLiteReadModels, codec: EventCodec, *, demo_studio: Callable[[str], str], **options: Any
    ):
        super().__init__(models, codec, **options)
        self.demo_studio = demo_studio  # the studio of a title only the policy's demo catalog knows

    def tables(self) -> Sequence[str]:
        return [
            "CREATE TABLE IF NOT EXISTS {p}daily (day TEXT NOT NULL, studio TEXT NOT NULL, title_id TEXT NOT NULL,"
            " downloads INTEGER NOT NULL, renewals INTEGER NOT NULL, PRIMARY KEY (day, studio, title_id))",
            "CREATE TABLE IF NOT EXISTS {p}studios (title_id TEXT PRIMARY KEY, studio TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS {p}titles (account_id TEXT NOT NULL, license_id TEXT NOT NULL,"
            " title_id TEXT NOT NULL, PRIMARY KEY (account_id, license_id))",
        ]

    def _studio(self, conn: sqlite3.Connection, title_id: str) -> str:
        row = conn.execute(f"SELECT studio FROM {self.prefix}studios WHERE title_id = ?", (title_id,)).fetchone()
        return str(row[0]) if row else self.demo_studio(title_id)

    def _count(self, conn: sqlite3.Connection, at: datetime, title_id: str, downloads: int, renewals: int) -> None:
        day = at.astimezone(UTC).date().isoformat()
        conn.execute(
            f"INSERT INTO {self.prefix}daily VALUES (?, ?, ?, ?, ?) ON CONFLICT (day, studio, title_id)"
            " DO UPDATE SET downloads = downloads + excluded.downloads, renewals = renewals + excluded.renewals",
            (day, self._studio(conn, title_id), title_id, downloads, renewals),
        )

    def on_event(
        self, conn: sqlite3.Connection, account_id: str | None, event: DomainEvent, meta: EventMetadata
    ) -> None:
        if isinstance(event, TitleSet):
            conn.execute(f"INSERT OR REPLACE INTO {self.prefix}studios VALUES (?, ?)", (event.title_id, event.studio))
        elif account_id is not None and isinstance(event, LicenseIssued):
            conn.execute(
                f"INSERT OR REPLACE INTO {self.prefix}titles VALUES (?, ?, ?)",
                (account_id, event.license_id, event.title_id),
            )
            self._count(conn, event.issued_at, event.title_id, 1, 0)
        elif account_id is not None and isinstance(event, LicenseRenewed):
            row = conn.execute(
                f"SELECT title_id FROM {self.prefix}titles WHERE account_id = ? AND license_id = ?",
                (account_id, event.license_id),
            ).fetchone()
            if row is not None:
                self._count(conn, event.at, str(row[0]), 0, 1)

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
        period = "day" if granularity == "day" else "substr(day, 1, 7)"
        sql = f"SELECT {period} AS period, studio, title_id, sum(downloads), sum(renewals) FROM {self.prefix}daily"
        where: list[str] = []
        params: list[object] = []
        for clause, value in (
            ("studio = ?", studio),
            ("title_id = ?", title_id),
            ("day >= ?", start),
            ("day <= ?", end),
        ):
            if value is not None:
                where.append(clause)
                params.append(value)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " GROUP BY period, studio, title_id ORDER BY period, studio, title_id LIMIT ?"
        params.append(limit + 1)
        found = [
            {"period": p, "studio": s, "title_id": t, "downloads": int(d), "renewals": int(r)}
            for p, s, t, d, r in self.query(sql, params)
        ]
        if len(found) > limit:
            raise ReportTooLarge(limit)
        return found
