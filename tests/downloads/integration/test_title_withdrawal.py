"""Title withdrawal on a real SQLite store: 1,000 accounts, a crash part-way, a re-run that changes nothing."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from downloads.application import AcquireLicense, OpenAccount, RegisterDevice, RenewLicense, SetTitle, SyncDevice
from downloads.bootstrap import Runtime, bootstrap
from downloads.readmodels import withdrawal
from downloads.readmodels.readside import ReadSide
from downloads.settings import Settings
from eskit.readmodel import RunnerSettings

ACCOUNTS = 1000
TITLE = "film-withdrawn"


def read_side_of(runtime: Runtime, *, lease: float = 10.0) -> ReadSide:
    codec = runtime.service.accounts.codec
    settings = RunnerSettings(lease_ttl=lease)
    return ReadSide(runtime.stores, codec, runtime.policy, runtime.service, settings=settings)


def wired(path: Path, *, lease: float = 10.0) -> tuple[Runtime, ReadSide]:
    runtime = bootstrap(Settings(store=f"sqlite:///{path}", snapshot_every=0))
    return runtime, read_side_of(runtime, lease=lease)


def manager(read_side: ReadSide) -> withdrawal.TitleWithdrawal:
    (found,) = read_side.runner.managers
    assert isinstance(found, withdrawal.TitleWithdrawal)
    return found


def revocations(runtime: Runtime) -> Counter[str]:
    """License id -> how many LicenseRevoked events name it, over every account (read from the feed)."""
    assert runtime.stores.feed is not None
    counts: Counter[str] = Counter()
    after = 0
    while batch := runtime.stores.feed.read(after=after, limit=5000):
        for item in batch:
            if item.event.type_name == "LicenseRevoked":
                event = runtime.service.accounts.decode(item.event).event
                counts[event.license_id] += 1  # type: ignore[attr-defined]
        after = batch[-1].sequence
    return counts


class _Late:
    """The service, each command sent 10 ms late: however fast the machine, the runner that sends them is
    killed part-way (it once sent all thousand before the test's first look)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def handle(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.01)
        return self.inner.handle(*args, **kwargs)


def _withdraw_slowly(path: str) -> None:
    """A read-side runner that sends revocations one at a time, until it is killed."""
    _runtime, read_side = wired(Path(path), lease=0.5)
    slow = manager(read_side)
    slow.workers = 1
    slow.service = _Late(slow.service)
    while True:
        read_side.step()


@pytest.mark.slow
def test_a_withdrawal_over_a_thousand_accounts_revokes_each_license_once_through_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "downloads.db"
    runtime, read_side = wired(path)
    service = runtime.service
    service.set_title(SetTitle(TITLE, "default"))
    held: dict[str, str] = {}
    for n in range(ACCOUNTS):
        account = f"acct-{n:04d}"
        service.handle(OpenAccount(account, "standard"))
        service.handle(RegisterDevice(account, "d1", "phone"))
        held[account] = str(service.handle(AcquireLicense(account, "d1", TITLE)).body["license_id"])
    read_side.step()  # the read models know every license
    service.set_title(SetTitle(TITLE, "default", downloadable=False))
    read_side.close()

    # A runner that dies part-way: SIGKILLed after it sent some revocations.
    victim = multiprocessing.get_context("spawn").Process(target=_withdraw_slowly, args=(str(path),))
    victim.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and sum(revocations(runtime).values()) < 50:
            time.sleep(0.05)
        assert victim.pid is not None and victim.is_alive()
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(timeout=30)
    finally:
        if victim.is_alive():
            victim.kill()
            victim.join(timeout=30)
    part_way = sum(revocations(runtime).values())
    assert 50 <= part_way < ACCOUNTS

    # The next runner takes the lease once the dead one's has run out, and finishes the job.
    time.sleep(0.6)
    resumed = read_side_of(runtime)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and sum(revocations(runtime).values()) < ACCOUNTS:
        resumed.step()
    counts = revocations(runtime)
    assert counts == Counter({license_id: 1 for license_id in held.values()})  # every one, exactly once
    for account in ("acct-0000", "acct-0500", "acct-0999"):
        synced = service.handle(SyncDevice(account, "d1", (held[account],)))
        assert synced.body["revoked"] == [held[account]]

    # A re-run of the process manager from the start sends its commands again and changes nothing.
    resumed.rebuild(withdrawal.NAME)
    for _ in range(5):
        resumed.step()
    assert revocations(runtime) == counts
    assert resumed.pending_revocations() == 0
    # And sending every revocation again (a read model that lost track of what was revoked) changes nothing either.
    tables = resumed.runner.tables(withdrawal.NAME)
    for account, license_id in held.items():
        tables.put("licenses", (TITLE, account, license_id), {"active": True})
    tables.put("marks", (0, TITLE, "resend", 1))
    assert manager(resumed).act(tables) == ACCOUNTS
    assert revocations(runtime) == counts
    resumed.close()
    runtime.close()


def _one_license(path: Path, clock: object = None) -> tuple[Runtime, ReadSide, str]:
    runtime = bootstrap(Settings(store=f"sqlite:///{path}", snapshot_every=0), **({"clock": clock} if clock else {}))
    read_side = read_side_of(runtime)
    service = runtime.service
    service.set_title(SetTitle(TITLE, "default"))
    service.handle(OpenAccount("acct", "standard"))
    service.handle(RegisterDevice("acct", "d1", "phone"))
    license_id = str(service.handle(AcquireLicense("acct", "d1", TITLE)).body["license_id"])
    return runtime, read_side, license_id


def test_a_revocation_sent_after_the_title_became_downloadable_again_revokes_nothing(tmp_path: Path) -> None:
    runtime, read_side, license_id = _one_license(tmp_path / "d.db")
    service = runtime.service
    service.set_title(SetTitle(TITLE, "default", downloadable=False))
    read_side.step(manage=False)  # the title is marked ...
    assert read_side.pending_revocations() == 1
    service.set_title(SetTitle(TITLE, "default", downloadable=True))  # ... and comes back before the manager acts

    assert manager(read_side).act(read_side.runner.tables(withdrawal.NAME)) == 1  # a revocation is sent ...

    assert service.get_license("acct", license_id)["status"] == "active"  # ... and refused by the account
    assert revocations(runtime) == Counter()
    read_side.close()
    runtime.close()


def test_a_license_renewed_after_a_withdrawal_is_revoked_by_the_next_withdrawal(tmp_path: Path) -> None:
    from tests.downloads.factories import START, FakeClock

    clock = FakeClock(START)
    runtime, read_side, license_id = _one_license(tmp_path / "d.db", clock)
    service = runtime.service
    clock.advance(timedelta(days=31))  # the license is past its expiry, not yet recorded as expired
    service.set_title(SetTitle(TITLE, "default", downloadable=False))
    while read_side.step():
        pass
    assert service.get_license("acct", license_id)["status"] == "expired"  # nothing to revoke the first time

    service.set_title(SetTitle(TITLE, "default", downloadable=True))
    assert service.handle(RenewLicense("acct", license_id)).body["status"] == "active"
    service.set_title(SetTitle(TITLE, "default", downloadable=False))  # withdrawn again, within a day
    while read_side.step():
        pass

    assert service.get_license("acct", license_id)["status"] == "revoked"
    assert revocations(runtime) == Counter({license_id: 1})
    read_side.close()
    runtime.close()
