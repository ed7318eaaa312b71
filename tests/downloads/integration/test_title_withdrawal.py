"""Title withdrawal on a real SQLite store: 1,000 accounts, a crash part-way, a re-run that changes nothing."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from downloads.application import AcquireLicense, OpenAccount, RegisterDevice, RenewLicense, SetTitle, SyncDevice
from downloads.bootstrap import Runtime, bootstrap, open_read_side
from downloads.readmodels.readside import ReadSide
from downloads.readmodels.withdrawal import TitleWithdrawal
from downloads.settings import Settings

ACCOUNTS = 1000
TITLE = "film-withdrawn"


def wired(path: Path) -> tuple[Runtime, ReadSide]:
    runtime = bootstrap(Settings(store=f"sqlite:///{path}", snapshot_every=0))
    read_side = open_read_side(runtime)
    assert read_side is not None
    return runtime, read_side


def revocations(runtime: Runtime) -> Counter[str]:
    """License id -> how many LicenseRevoked events name it, over every account (read from the feed)."""
    assert runtime.stores.feed is not None
    counts: Counter[str] = Counter()
    after = 0
    while batch := runtime.stores.feed.read(after=after, limit=5000):
        for item in batch:
            if item.event.type_name == "LicenseRevoked":
                event, _ = runtime.service.accounts.codec.decode(item.event)
                counts[event.license_id] += 1  # type: ignore[attr-defined]
        after = batch[-1].sequence
    return counts


def _withdraw_slowly(path: str) -> None:
    """A read-side runner that sends revocations a few at a time, until it is killed."""
    runtime, read_side = wired(Path(path))
    withdrawal = read_side.projectors[TitleWithdrawal.name].target
    assert isinstance(withdrawal, TitleWithdrawal)
    while True:
        read_side.models.acquire_lease("read-side", read_side.holder, ttl=0.5)
        for projector in read_side.projectors.values():
            projector.tick()
        withdrawal.send(runtime.service, limit=10)


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
    resumed = open_read_side(runtime)
    assert resumed is not None
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and sum(revocations(runtime).values()) < ACCOUNTS:
        resumed.step()
    counts = revocations(runtime)
    assert counts == Counter({license_id: 1 for license_id in held.values()})  # every one, exactly once
    for account in ("acct-0000", "acct-0500", "acct-0999"):
        synced = service.handle(SyncDevice(account, "d1", (held[account],)))
        assert synced.body["revoked"] == [held[account]]

    # A re-run of the process manager from the start sends its commands again and changes nothing.
    resumed.rebuild(TitleWithdrawal.name)
    for _ in range(5):
        resumed.step()
    assert revocations(runtime) == counts
    withdrawal = resumed.projectors[TitleWithdrawal.name].target
    assert isinstance(withdrawal, TitleWithdrawal) and withdrawal.pending() == 0
    # And sending every revocation again (a runner that lost track of what it sent) changes nothing either.
    with withdrawal.models.db.transaction(immediate=True) as conn:
        conn.executemany(
            f"INSERT INTO {withdrawal.prefix}jobs (account_id, license_id, title_id, episode) VALUES (?, ?, ?, ?)",
            [(a, lic, TITLE, "resend") for a, lic in held.items()],
        )
    assert withdrawal.send(service, limit=ACCOUNTS) == ACCOUNTS
    assert revocations(runtime) == counts
    resumed.close()
    runtime.close()


def _one_license(path: Path, clock: object = None) -> tuple[Runtime, ReadSide, str]:
    runtime = bootstrap(Settings(store=f"sqlite:///{path}", snapshot_every=0), **({"clock": clock} if clock else {}))
    read_side = open_read_side(runtime)
    assert read_side is not None
    service = runtime.service
    service.set_title(SetTitle(TITLE, "default"))
    service.handle(OpenAccount("acct", "standard"))
    service.handle(RegisterDevice("acct", "d1", "phone"))
    license_id = str(service.handle(AcquireLicense("acct", "d1", TITLE)).body["license_id"])
    return runtime, read_side, license_id


def _withdrawal(read_side: ReadSide) -> TitleWithdrawal:
    target = read_side.projectors[TitleWithdrawal.name].target
    assert isinstance(target, TitleWithdrawal)
    return target


def test_a_revocation_sent_after_the_title_became_downloadable_again_revokes_nothing(tmp_path: Path) -> None:
    runtime, read_side, license_id = _one_license(tmp_path / "d.db")
    service = runtime.service
    service.set_title(SetTitle(TITLE, "default", downloadable=False))
    for projector in read_side.projectors.values():
        projector.tick()  # the job is made ...
    assert _withdrawal(read_side).pending() == 1
    service.set_title(SetTitle(TITLE, "default", downloadable=True))  # ... and the title comes back before it is sent

    _withdrawal(read_side).send(service)

    assert service.get_license("acct", license_id)["status"] == "active"
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
