"""Factories for unit tests: a controllable clock, policies and a wired service.

Tests build what they need by calling these (no fixture files): every helper
returns real components (the in-memory or SQLite store, the real service), only
time is faked, because the service takes its clock as a parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from downloads.application import AcquireLicense, DownloadsService, OpenAccount, RegisterDevice, SetTitle
from downloads.bootstrap import Runtime, bootstrap
from downloads.domain import DomainError, Plan, Policy, Studio
from downloads.settings import Settings

START = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@dataclass
class FakeClock:
    """A clock that stands still until a test moves it."""

    now: datetime = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        self.now += delta
        return self.now


def make_policy(
    *,
    plans: dict[str, int] | None = None,
    max_active_downloads: int = 100,
    window: timedelta = timedelta(days=365),
    studios: dict[str, Studio] | None = None,
) -> Policy:
    """The default policy, with the given parts replaced."""
    default = Policy()
    return Policy(
        plans={name: Plan(n) for name, n in plans.items()} if plans is not None else default.plans,
        max_active_downloads=max_active_downloads,
        window=window,
        studios=studios if studios is not None else default.studios,
    )


@dataclass
class Downloads:
    """A running service, its clock, and ways to look at what it stored."""

    app: Runtime
    clock: FakeClock
    opened: list[Runtime] = field(default_factory=list)

    @property
    def service(self) -> DownloadsService:
        return self.app.service

    def stream_version(self, account_id: str) -> int:
        """How many events the account's stream holds."""
        accounts = self.service.accounts
        return accounts.events.version(accounts.stream_id(account_id))

    def events(self, account_id: str, *, after: int = 0) -> list[dict[str, Any]]:
        """The account's stored events after position ``after``, as the history read shows them."""
        events: list[dict[str, Any]] = self.service.history(account_id, after=after, limit=1000)["events"]
        return events

    def event_types(self, account_id: str, *, after: int = 0) -> list[str]:
        return [e["type"] for e in self.events(account_id, after=after)]

    def title(
        self,
        title_id: str,
        *,
        studio: str = "default",
        downloadable: bool = True,
        available_until: datetime | None = None,
    ) -> str:
        """Put a title in the catalog; return its id."""
        self.service.set_title(SetTitle(title_id, studio, downloadable, available_until))
        return title_id

    def account(self, account_id: str = "acct-1", *, plan: str = "premium", devices: Iterable[str] = ("phone",)) -> str:
        """Open an account with active devices; return its id."""
        self.service.handle(OpenAccount(account_id, plan))
        for device_id in devices:
            self.service.handle(RegisterDevice(account_id, device_id, f"model-of-{device_id}"))
        return account_id

    def license(self, account_id: str, device_id: str, title_id: str) -> str:
        """Acquire a license that must be granted; return its id."""
        return str(self.service.handle(AcquireLicense(account_id, device_id, title_id)).body["license_id"])

    def restart(self) -> Downloads:
        """A second process on the same store: a fresh bootstrap with the same settings and clock."""
        app = bootstrap(self.app.settings, clock=self.clock, policy=self.app.policy)
        self.opened.append(app)
        return Downloads(app, self.clock, self.opened)

    def close(self) -> None:
        for app in [self.app, *self.opened]:
            app.close()


def start_service(
    *,
    store: str = "memory://",
    snapshot_every: int = 0,
    policy: Policy | None = None,
    clock: FakeClock | None = None,
    idempotency_hours: float = 24.0,
) -> Downloads:
    """Bootstrap the real service on ``store`` with a fake clock (the default policy unless given)."""
    clock = clock or FakeClock()
    settings = Settings(store=store, snapshot_every=snapshot_every, idempotency_hours=idempotency_hours)
    return Downloads(bootstrap(settings, clock=clock, policy=policy or Policy()), clock)


def refusal(call: Callable[[], object], kind: type[DomainError] = DomainError) -> DomainError:
    """Run a command that must be refused; return the refusal (of the given kind)."""
    with pytest.raises(kind) as caught:
        call()
    return caught.value
