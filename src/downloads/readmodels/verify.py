"""Verifying the read models against the accounts: every row they hold names something that exists.

A license in ``licenses_by_title`` must exist in its account, with the same
title; a device or license id in ``lookup`` must belong to the account it
names. Rows are read in account order, so each account is loaded once.
Problems go into the same :class:`~eskit.verify.VerifyReport` as the store's.
An account that cannot be loaded (its events do not fold: one is missing or
unreadable) is a ``fold`` problem, reported once, and its rows are not checked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from downloads.application import DownloadsService
from downloads.domain import Account
from downloads.readmodels.ports import OTHER_STORE, ReadModels
from eskit import AggregateNotFound, OperationalError
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
    if not read_side.belongs():
        report.add(Problem("read_model", "read models", None, OTHER_STORE))
        return 0
    checked = 0
    account = _Accounts(service, report)
    for account_id, license_id, title_id in _pages(read_side.every_license):
        checked += 1
        advance(1)
        found = account.get(account_id)
        where = f"read model licenses_by_title: license {license_id!r}"
        if found is _UNLOADABLE:
            continue
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
        if found is _UNLOADABLE:
            continue
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


#: stands for an account that exists but cannot be loaded (reported once)
_UNLOADABLE = Account("")


class _Accounts:
    """The last account loaded, kept while rows of the same account follow."""

    def __init__(self, service: DownloadsService, report: VerifyReport) -> None:
        self.service = service
        self.report = report
        self.account_id: str | None = None
        self.account: Account | None = None
        self.reported: set[str] = set()  # accounts found unloadable: each is reported once, in either pass

    def get(self, account_id: str) -> Account | None:
        """The account, None when it does not exist, :data:`_UNLOADABLE` when its events do not fold."""
        if account_id != self.account_id:
            self.account_id = account_id
            try:
                self.account = self.service.accounts.load(account_id)
            except AggregateNotFound:
                self.account = None
            except OperationalError:
                raise  # the store failed: nothing more can be checked
            except Exception as exc:  # a stream damaged in a way the store check reported at its event
                self.account = _UNLOADABLE
                if account_id in self.reported:
                    return self.account
                self.reported.add(account_id)
                self.report.add(
                    Problem(
                        "fold",
                        self.service.accounts.stream_id(account_id),
                        None,
                        f"the account cannot be loaded, so its read-model rows are not checked: "
                        f"{type(exc).__name__}: {exc}",
                    )
                )
        return self.account
