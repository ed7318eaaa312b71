"""The port of the service's read models: what the routes, the CLI, verify and ``serve`` ask of them.

One implementation (:class:`~downloads.readmodels.readside.ReadSide`) serves
every store, over the backend eskit opens for the store's URL; tests may give
another. Every answer has the same meaning on every store, including
:meth:`ReadModels.status` (see :meth:`eskit.readmodel.ProjectionRunner.status`).
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable
from datetime import datetime

from downloads.application.presenters import DeviceLicensesOut, LookupOut, ReportOut, TitleLicensesOut
from eskit.projection import ProjectionStatus
from eskit.readmodel.runner import OTHER_STORE

__all__ = ["OTHER_STORE", "Progress", "ReadModels"]

#: ``progress(done, total)``: events applied of ``total``, or streams swept (``total`` None)
Progress = Callable[[int, "int | None"], None]


class ReadModels(abc.ABC):
    """Port: the read models of one deployment, and the runner that keeps them."""

    @property
    @abc.abstractmethod
    def names(self) -> list[str]:
        """The projections, in the order they are reported."""

    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether read models were ever kept for this store (asking creates nothing)."""

    @abc.abstractmethod
    def belongs(self) -> bool:
        """Whether the read models follow this store: False while they are another store's (see
        :data:`OTHER_STORE`), until the runner has emptied them to build them again."""

    # -- queries -------------------------------------------------------------------------

    @abc.abstractmethod
    def title_licenses(
        self, title_id: str, *, status: str, after: tuple[str, str] | None, limit: int, now: datetime
    ) -> TitleLicensesOut:
        """A page of a title's licenses with ``status`` across accounts, by account and license."""

    @abc.abstractmethod
    def device_licenses(self, device_id: str) -> DeviceLicensesOut:
        """The active licenses a device id holds, in any account (at most 1,000)."""

    @abc.abstractmethod
    def lookup(self, kind: str, key: str) -> LookupOut:
        """The accounts holding a ``device_id``, ``license_id`` or ``idempotency_key``."""

    @abc.abstractmethod
    def report(
        self, *, granularity: str, studio: str | None, title_id: str | None, start: str | None, end: str | None
    ) -> ReportOut:
        """Downloads and renewals per period, studio and title; raises ``ReportTooLarge`` past its bound."""

    @abc.abstractmethod
    def every_license(self, *, after: tuple[str, str, str] | None, limit: int) -> list[tuple[str, str, str]]:
        """A page of ``(account_id, license_id, title_id)`` over every license row (for verification)."""

    @abc.abstractmethod
    def every_key(self, *, after: tuple[str, str, str] | None, limit: int) -> list[tuple[str, str, str]]:
        """A page of ``(account_id, kind, key)`` over every lookup row (for verification)."""

    @abc.abstractmethod
    def pending_revocations(self) -> int:
        """Titles marked for the withdrawal manager and not handled yet."""

    # -- running -------------------------------------------------------------------------

    @abc.abstractmethod
    def status(self) -> list[ProjectionStatus]:
        """Each projection's position, lag, last update and error, with one meaning on every store."""

    @abc.abstractmethod
    def rebuild(self, name: str, *, progress: Progress | None = None) -> int:
        """Fill a new version of projection ``name`` while the old one answers reads, then switch; its number.

        Raises ``KeyError`` for an unknown name.
        """

    @abc.abstractmethod
    def step(self, *, manage: bool = True) -> int:
        """One round of the runner (if it holds the lease), with the process managers unless not ``manage``."""

    @abc.abstractmethod
    def run(self, stop: threading.Event) -> None:
        """Run rounds until ``stop`` is set."""

    @abc.abstractmethod
    def start(self) -> None:
        """Run in a background thread (one runner of a deployment works at a time)."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the background thread, bounded in time."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop and release what the read models hold."""
