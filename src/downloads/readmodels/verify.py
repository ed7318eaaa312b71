"""Verifying the read models against the accounts: every row they hold names something that exists.

A license in ``licenses_by_title`` must exist in its account, with the same
title; a device or license id in ``lookup`` must belong to the account it
names. Rows are read in account order, so each account is loaded once.
Problems go into the same :class:`~eskit.verify.VerifyReport` as the store's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from downloads.application import DownloadsService
from downloads.domain import Account
from downloads.readmodels.ports import ReadModels
from eskit import AggregateNotFound
from eskit.verify import Problem, VerifyReport

__all__ = ["verify_read_models"]


def verify_read_models(
    read_side: ReadModels,
    service: DownloadsService,
    report: VerifyReport,
    *,
    advance: Callable[[int], None] = lambda _n: None,
) -> int:
    """Check every row of the read models that names a license or a device; return how many were checked."""
    checked = 0
    account = _Accounts(service)
    for account_id, license_id, title_id in _pages(read_side.every_license):
        checked += 1
        advance(1)
        found = account.get(account_id)
        where = f"read model licenses_by_title: license {license_id!r}"
        if found is None:
            report.add(
                Problem(
                    "read_model",
                    service.accounts.stream_id(account_id),
                    None,
                    f"{where} of an account that does not exist",
                )
            )
        elif license_id not in found.licenses:
            report.add(
                Problem("read_model", service.accounts.stream_id(account_id), None, f"{where} is not in the account")
            )
        elif found.licenses[license_id].title_id != title_id:
            report.add(
                Problem(
                    "read_model",
                    service.accounts.stream_id(account_id),
                    None,
                    f"{where} is for title {title_id!r}, the account says {found.licenses[license_id].title_id!r}",
                )
            )
    for account_id, kind, key in _pages(read_side.every_key):
        if kind == "idempotency_key":
            continue  # keys are remembered for a retention period only: an old key may be gone from the account
        checked += 1
        advance(1)
        found = account.get(account_id)
        held = None if found is None else (found.devices if kind == "device_id" else found.licenses)
        if held is None or key not in held:
            report.add(
                Problem(
                    "read_model",
                    service.accounts.stream_id(account_id),
                    None,
                    f"read model lookup: {kind} {key!r} does not belong to the account",
                )
            )
    return checked


def _pages(read: Callable[..., list[tuple[str, str, str]]]) -> Iterator[tuple[str, str, str]]:
    after = None
    while page := read(after=after, limit=1000):
        yield from page
        after = page[-1]


class _Accounts:
    """The last account loaded, kept while rows of the same account follow."""

    def __init__(self, service: DownloadsService) -> None:
        self.service = service
        self.account_id: str | None = None
        self.account: Account | None = None

    def get(self, account_id: str) -> Account | None:
        if account_id != self.account_id:
            self.account_id = account_id
            try:
                self.account = self.service.accounts.load(account_id)
            except AggregateNotFound:
                self.account = None
        return self.account
