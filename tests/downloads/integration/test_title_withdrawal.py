"""Title withdrawal on a real SQLite store: 1,000 accounts, a crash part-way, a re-run that changes nothing."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from downloads.application import AcquireLicense, OpenAccount, RegisterDevice, SetTitle, SyncDevice
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
            f"INSERT INTO {withdrawal.prefix}jobs VALUES (?, ?, ?)", [(a, lic, TITLE) for a, lic in held.items()]
        )
    assert withdrawal.send(service, limit=ACCOUNTS) == ACCOUNTS
    assert revocations(runtime) == counts
    resumed.close()
    runtime.close()
