"""Guarantees that must hold past the easy cases: retry horizons, skewed clocks, renewals, snapshots.

Each test here reproduces a failure found on an earlier version (issue 7): a key
forgotten after 1,000 other commands, a reply copied into every event, a limit
exceeded by a process whose clock runs behind, two active licenses for one title
after a renewal, and an answer that depended on whether a snapshot was used.
"""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from downloads.application import (
    AcquireLicense,
    ChangePlan,
    CloseAccount,
    DeactivateDevice,
    RegisterDevice,
    ReleaseLicense,
    RenewLicense,
)
from downloads.domain import Denied, Invalid, Policy, Studio
from tests.downloads.factories import FakeClock, make_policy, refusal, start_service


def _other_commands(d, account_id: str, n: int) -> None:  # type: ignore[no-untyped-def]
    """``n`` accepted commands with keys of their own, each writing an event (the plan flips back and forth)."""
    for i in range(n):
        d.service.handle(ChangePlan(account_id, "standard" if i % 2 == 0 else "premium"), idempotency_key=f"other-{i}")


@pytest.mark.parametrize("others", [1000, 5000])
def test_a_key_retried_after_thousands_of_other_commands_gets_the_original_answer(others: int) -> None:
    d = start_service(snapshot_every=100)
    d.account("acct-1", devices=["phone"])
    first = d.service.handle(AcquireLicense("acct-1", "phone", "demo-title-1"), idempotency_key="key-1")
    d.service.handle(ReleaseLicense("acct-1", first.body["license_id"]))
    _other_commands(d, "acct-1", others)
    before = d.stream_version("acct-1")

    again = d.service.handle(AcquireLicense("acct-1", "phone", "demo-title-1"), idempotency_key="key-1")

    assert (again.body, again.created, again.replayed) == (first.body, True, True)
    assert d.stream_version("acct-1") == before
    assert d.service.title_downloads("acct-1", "demo-title-1")["used"] == 1


def test_a_key_reused_for_another_command_is_refused_after_thousands_of_other_commands() -> None:
    d = start_service(snapshot_every=100)
    d.account("acct-1", devices=["phone"])
    lic = d.service.handle(AcquireLicense("acct-1", "phone", "demo-title-1"), idempotency_key="key-1").body[
        "license_id"
    ]
    _other_commands(d, "acct-1", 1000)

    error = refusal(lambda: d.service.handle(ReleaseLicense("acct-1", lic), idempotency_key="key-1"), Invalid)

    assert error.code == "IDEMPOTENCY_KEY_REUSED"
    assert d.service.get_license("acct-1", lic)["status"] == "active"


def _db_bytes(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        (size,) = conn.execute("SELECT coalesce(sum(length(metadata) + length(data)), 0) FROM events").fetchone()
    return int(size)


@pytest.mark.parametrize("licenses", [10, 300])
def test_a_key_is_stored_once_per_command_however_many_events_the_command_writes(licenses: int, tmp_path: Path) -> None:
    policy = make_policy(max_active_downloads=1000)
    sizes = {}
    for key in (None, "close-key"):
        path = tmp_path / f"{key}.db"
        d = start_service(store=f"sqlite:///{path}", policy=policy)
        d.account("acct-1", devices=["phone"])
        for i in range(licenses):
            d.license("acct-1", "phone", d.title(f"title-{i}"))
        before = _db_bytes(path)
        reply = d.service.handle(CloseAccount("acct-1"), idempotency_key=key)
        sizes[key] = _db_bytes(path) - before
        d.close()

    body_bytes = len(repr(reply.body))
    # The key record (fingerprint, status, body) costs about one copy of the body, not one per event.
    assert sizes["close-key"] - sizes[None] < 2 * body_bytes + 500


def test_a_process_whose_clock_runs_behind_still_counts_downloads_recorded_ahead(tmp_path: Path) -> None:
    policy = Policy(studios={"default": Studio(), "restricted": Studio(max_downloads_per_title=3)})
    store = f"sqlite:///{tmp_path}/shared.db"
    ahead = start_service(store=store, policy=policy, clock=FakeClock())
    ahead.clock.advance(timedelta(hours=1))
    behind = start_service(store=store, policy=policy, clock=FakeClock())
    ahead.account("acct-1", devices=["phone"])
    for _ in range(3):
        lic = ahead.license("acct-1", "phone", "demo-title-2")
        ahead.service.handle(ReleaseLicense("acct-1", lic))

    denied = refusal(lambda: behind.service.handle(AcquireLicense("acct-1", "phone", "demo-title-2")), Denied)

    assert denied.code == "TITLE_YEARLY_LIMIT_REACHED"
    counts = [s.service.title_downloads("acct-1", "demo-title-2")["used"] for s in (ahead, behind)]
    assert counts == [3, 3]


def test_time_never_runs_backwards_within_an_account() -> None:
    d = start_service()
    d.account("acct-1", devices=["phone"])
    last = d.events("acct-1")[-1]["recorded_at"]
    d.clock.advance(timedelta(minutes=-30))  # this process's clock jumps back

    d.service.handle(RegisterDevice("acct-1", "tablet", "model"))

    assert d.events("acct-1")[-1]["recorded_at"] >= last


def test_renewing_an_expired_license_when_the_device_holds_another_for_the_title_is_refused() -> None:
    d = start_service()
    d.account("acct-1", devices=["phone"])
    old = d.license("acct-1", "phone", "demo-title-1")
    d.clock.advance(timedelta(days=31))
    current = d.license("acct-1", "phone", "demo-title-1")
    before = d.stream_version("acct-1")

    error = refusal(lambda: d.service.handle(RenewLicense("acct-1", old)), Denied)

    assert error.code == "TITLE_ALREADY_LICENSED"
    assert error.details["license_id"] == current
    assert d.stream_version("acct-1") == before
    assert [lic["license_id"] for lic in d.service.list_licenses("acct-1", status="active")] == [current]


@pytest.mark.parametrize("snapshot_every", [0, 1])
def test_answers_are_the_same_whether_the_account_was_folded_or_loaded_from_a_snapshot(
    snapshot_every: int, tmp_path: Path
) -> None:
    d = start_service(store=f"sqlite:///{tmp_path}/downloads.db", snapshot_every=snapshot_every)
    d.account("acct-1", devices=["phone"])
    first = d.license("acct-1", "phone", "demo-title-1")
    d.clock.advance(timedelta(days=20))
    second = d.license("acct-1", "phone", "demo-title-2")
    d.clock.advance(timedelta(days=11))  # the first license expired, the second is still active
    d.service.handle(RenewLicense("acct-1", first))

    released = d.restart().service.handle(DeactivateDevice("acct-1", "phone")).body["released"]

    # One order whatever the load path: the order the licenses became active in.
    assert released == [second, first]


def test_a_key_reused_after_its_retention_names_the_new_command_even_behind_a_longer_lived_key(
    tmp_path: Path,
) -> None:
    store = f"sqlite:///{tmp_path}/shared.db"
    clock = FakeClock()
    long_lived = start_service(store=store, clock=clock, idempotency_hours=48)
    short_lived = start_service(store=store, clock=clock, idempotency_hours=24)
    long_lived.account("acct-1", devices=["phone", "tablet"])
    long_lived.service.handle(ChangePlan("acct-1", "standard"), idempotency_key="kept-48h")
    clock.advance(timedelta(hours=1))
    short_lived.service.handle(ChangePlan("acct-1", "premium"), idempotency_key="k")
    clock.advance(timedelta(hours=29))  # "k" expired, "kept-48h" (recorded before it) has not

    first = short_lived.service.handle(AcquireLicense("acct-1", "tablet", "demo-title-1"), idempotency_key="k")
    again = short_lived.service.handle(AcquireLicense("acct-1", "tablet", "demo-title-1"), idempotency_key="k")

    assert first.created and not first.replayed
    assert (again.body, again.replayed) == (first.body, True)
