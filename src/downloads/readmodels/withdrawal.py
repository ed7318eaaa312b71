"""Title withdrawal: a process manager on the feed that revokes a withdrawn title's active licenses.

It is a projection of its own (so its state moves with its checkpoint, once per
event): it keeps which titles are withdrawn, which licenses are active, and the
revocations still to send. A title becomes withdrawn when it is set not
downloadable, or when its ``available_until`` has passed (checked by
:meth:`TitleWithdrawal.due`, as time goes by). Then every active license of the
title, and any issued or renewed later (a command decided on a title read just
before the withdrawal), becomes a job; :meth:`TitleWithdrawal.send` sends each
as an ordinary ``RevokeLicense`` command under an idempotency key of its own.
Revoking is a no-op on a license that is not active, so a job sent twice after
a crash still revokes once. Making the title downloadable again drops the jobs
not yet sent: it revokes nothing more.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from datetime import datetime

from downloads.application import DownloadsService, RevokeLicense
from downloads.domain import NotFound
from downloads.domain.events import (
    LicenseExpired,
    LicenseIssued,
    LicenseReleased,
    LicenseRenewed,
    LicenseRevoked,
    TitleSet,
)
from downloads.readmodels.projections import DecodingProjection, micros
from eskit import DomainEvent, EventMetadata

__all__ = ["REASON", "TitleWithdrawal"]

log = logging.getLogger(__name__)

REASON = "title_withdrawn"


class TitleWithdrawal(DecodingProjection):
    """The withdrawal process manager's state and its two actions (see the module docstring)."""

    name = "title_withdrawal"

    def tables(self) -> Sequence[str]:
        return [
            "CREATE TABLE IF NOT EXISTS {p}titles (title_id TEXT PRIMARY KEY, withdrawn INTEGER NOT NULL,"
            " available_until INTEGER)",
            "CREATE TABLE IF NOT EXISTS {p}licenses (account_id TEXT NOT NULL, license_id TEXT NOT NULL,"
            " title_id TEXT NOT NULL, active INTEGER NOT NULL, PRIMARY KEY (account_id, license_id))",
            "CREATE INDEX IF NOT EXISTS {p}active_by_title ON {p}licenses (title_id, active)",
            "CREATE TABLE IF NOT EXISTS {p}jobs (account_id TEXT NOT NULL, license_id TEXT NOT NULL,"
            " title_id TEXT NOT NULL, episode TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
            " PRIMARY KEY (account_id, license_id))",
        ]

    def _withdrawn(self, conn: sqlite3.Connection, title_id: str) -> bool:
        row = conn.execute(f"SELECT withdrawn FROM {self.prefix}titles WHERE title_id = ?", (title_id,)).fetchone()
        return bool(row and row[0])

    def _withdraw(self, conn: sqlite3.Connection, title_id: str, episode: str) -> None:
        """Mark the title withdrawn and make a job of each active license, tagged with this withdrawal."""
        p = self.prefix
        conn.execute(f"UPDATE {p}titles SET withdrawn = 1 WHERE title_id = ?", (title_id,))
        conn.execute(
            f"INSERT OR IGNORE INTO {p}jobs (account_id, license_id, title_id, episode)"
            f" SELECT account_id, license_id, title_id, ? FROM {p}licenses WHERE title_id = ? AND active = 1",
            (episode, title_id),
        )

    def on_event(
        self, conn: sqlite3.Connection, account_id: str | None, event: DomainEvent, meta: EventMetadata
    ) -> None:
        p = self.prefix
        if isinstance(event, TitleSet):
            until = micros(event.available_until) if event.available_until is not None else None
            conn.execute(
                f"INSERT INTO {p}titles VALUES (?, 0, ?) ON CONFLICT (title_id) DO UPDATE SET available_until = ?",
                (event.title_id, until, until),
            )
            ended = event.available_until is not None and event.available_until <= event.at
            if not event.downloadable or ended:
                self._withdraw(conn, event.title_id, f"e{self.current_sequence}")
            else:  # downloadable again: nothing more is revoked
                conn.execute(f"UPDATE {p}titles SET withdrawn = 0 WHERE title_id = ?", (event.title_id,))
                conn.execute(f"DELETE FROM {p}jobs WHERE title_id = ?", (event.title_id,))
            return
        if account_id is None:
            return
        key = (account_id, getattr(event, "license_id", ""))
        if isinstance(event, LicenseIssued):
            conn.execute(f"INSERT OR REPLACE INTO {p}licenses VALUES (?, ?, ?, 1)", (*key, event.title_id))
        elif isinstance(event, LicenseRenewed):
            conn.execute(f"UPDATE {p}licenses SET active = 1 WHERE account_id = ? AND license_id = ?", key)
        elif isinstance(event, LicenseReleased | LicenseRevoked | LicenseExpired):
            conn.execute(f"UPDATE {p}licenses SET active = 0 WHERE account_id = ? AND license_id = ?", key)
            conn.execute(f"DELETE FROM {p}jobs WHERE account_id = ? AND license_id = ?", key)
            return
        else:
            return
        # Issued or renewed: on a title already withdrawn (decided on the title as read just before), revoke it too.
        row = conn.execute(f"SELECT title_id FROM {p}licenses WHERE account_id = ? AND license_id = ?", key).fetchone()
        if row is not None and self._withdrawn(conn, row[0]):
            conn.execute(
                f"INSERT OR IGNORE INTO {p}jobs (account_id, license_id, title_id, episode) VALUES (?, ?, ?, ?)",
                (*key, row[0], f"e{self.current_sequence}"),
            )

    def due(self, now: datetime) -> int:
        """Withdraw the titles whose ``available_until`` has passed by ``now``; return how many."""
        self._ensure_tables()
        self.models.connection()
        with self.models.db.transaction(immediate=True) as conn:
            rows = conn.execute(
                f"SELECT title_id FROM {self.prefix}titles WHERE withdrawn = 0 AND available_until IS NOT NULL"
                " AND available_until <= ?",
                (micros(now),),
            ).fetchall()
            for (title_id,) in rows:
                self._withdraw(conn, title_id, f"t{micros(now)}")
        return len(rows)

    def pending(self) -> int:
        rows = self.query(f"SELECT count(*) FROM {self.prefix}jobs")
        return int(rows[0][0]) if rows else 0

    def send(self, service: DownloadsService, *, limit: int = 200) -> int:
        """Send up to ``limit`` pending revocations; return how many were done.

        Each is keyed by its title, license and withdrawal (the feed event or the moment that
        made it), so the same withdrawal sent again is one command, and a later withdrawal of the
        same license is a new one. A job whose command fails is tried again later, after the
        others (its attempts are counted); the failure is raised once the batch is through.
        """
        self._ensure_tables()
        conn = self.models.connection()
        jobs = conn.execute(
            f"SELECT account_id, license_id, title_id, episode FROM {self.prefix}jobs"
            " ORDER BY attempts, account_id, license_id LIMIT ?",
            (limit,),
        ).fetchall()
        done, failure = 0, None
        for account_id, license_id, title_id, episode in jobs:
            command = RevokeLicense(account_id, license_id, REASON)
            try:
                service.handle(command, idempotency_key=f"withdraw:{title_id}:{license_id}:{episode}")
            except NotFound:
                pass  # nothing to revoke
            except Exception as exc:  # kept, tried again after the others
                failure = failure or exc
                with self.models.db.transaction(immediate=True) as tx:
                    tx.execute(
                        f"UPDATE {self.prefix}jobs SET attempts = attempts + 1 WHERE account_id = ? AND license_id = ?",
                        (account_id, license_id),
                    )
                continue
            with self.models.db.transaction(immediate=True) as tx:
                tx.execute(
                    f"DELETE FROM {self.prefix}jobs WHERE account_id = ? AND license_id = ? AND episode = ?",
                    (account_id, license_id, episode),
                )
            done += 1
        if failure is not None:
            raise failure
        return done
