"""Denials are recorded (section 3): every refusal on an existing account, apart from its events, bounded."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from downloads.application import (
    AcquireLicense,
    CloseAccount,
    DeactivateDevice,
    OpenAccount,
    RegisterDevice,
    ReleaseLicense,
    RenewLicense,
    StartPlayback,
)
from downloads.domain import DomainError, Policy, Studio
from tests.downloads.factories import Downloads, make_policy, refusal, start_service

DAY = timedelta(days=1)


def _denials(d: Downloads, account_id: str = "acct-1", **page: Any) -> list[dict[str, Any]]:
    denials: list[dict[str, Any]] = d.service.list_denials(account_id, **page)["denials"]
    return denials


def _every_denial(d: Downloads) -> list[tuple[str, Callable[[], object]]]:
    """A command refused with each code of section 3, in the order they are sent."""
    s = d.service
    d.title("rare", studio="restricted")
    d.title("gone", downloadable=False)
    d.account("acct-1", plan="basic", devices=["phone", "tablet", "old"])
    s.handle(DeactivateDevice("acct-1", "old"))
    first = d.license("acct-1", "phone", "demo-title-1")
    for _ in range(3):  # the restricted studio allows 3 downloads of a title a year
        s.handle(ReleaseLicense("acct-1", d.license("acct-1", "phone", "rare")))
    expiring = d.license("acct-1", "phone", "demo-title-2")
    return [
        ("ACCOUNT_EXISTS", lambda: s.handle(OpenAccount("acct-1", "basic"))),
        ("DEVICE_NOT_FOUND", lambda: s.handle(AcquireLicense("acct-1", "nowhere", "demo-title-1"))),
        ("DEVICE_NOT_ACTIVE", lambda: s.handle(AcquireLicense("acct-1", "old", "demo-title-1"))),
        ("TITLE_NOT_FOUND", lambda: s.handle(AcquireLicense("acct-1", "phone", "no-such-title"))),
        ("TITLE_NOT_DOWNLOADABLE", lambda: s.handle(AcquireLicense("acct-1", "phone", "gone"))),
        ("DEVICE_LIMIT_REACHED", lambda: s.handle(AcquireLicense("acct-1", "tablet", "demo-title-1"))),
        ("TITLE_YEARLY_LIMIT_REACHED", lambda: s.handle(AcquireLicense("acct-1", "phone", "rare"))),
        ("LICENSE_NOT_FOUND", lambda: s.handle(StartPlayback("acct-1", "no-such-license"))),
        (
            "LICENSE_NOT_ACTIVE",
            lambda: (s.handle(ReleaseLicense("acct-1", first)), s.handle(StartPlayback("acct-1", first))),
        ),
        ("TITLE_ALREADY_LICENSED", lambda: _renew_expired_while_held(d, expiring)),
        ("TOO_MANY_DEVICES", lambda: [s.handle(RegisterDevice("acct-1", f"extra-{n}", "m")) for n in range(30)]),
        ("DEVICE_DOWNLOAD_LIMIT_REACHED", lambda: _fill_device(d)),
        (
            "ACCOUNT_NOT_ACTIVE",
            lambda: (s.handle(CloseAccount("acct-1")), s.handle(AcquireLicense("acct-1", "phone", "demo-title-1"))),
        ),
    ]


def _renew_expired_while_held(d: Downloads, license_id: str) -> None:
    d.clock.advance(31 * DAY)  # the license expires ...
    d.license("acct-1", "phone", "demo-title-2")  # ... and the device takes the title again
    d.service.handle(RenewLicense("acct-1", license_id))


def _fill_device(d: Downloads) -> None:
    for n in range(5):
        d.title(f"t{n}")
        d.license("acct-1", "phone", f"t{n}")


def test_every_denial_code_of_section_3_is_recorded_with_its_details() -> None:
    policy = make_policy(plans={"basic": 1, "premium": 6}, max_active_downloads=5)
    policy = Policy(**{**policy.__dict__, "max_devices": 4})
    d = start_service(policy=policy)
    expected = []
    for code, send in _every_denial(d):
        refused = refusal(send)
        assert refused.code == code, (code, refused.code)
        expected.append((code, refused.message, refused.details))
    recorded = list(reversed(_denials(d, limit=1000)))  # newest first: oldest first here
    assert [r["code"] for r in recorded] == [code for code, _, _ in expected]
    for record, (code, message, details) in zip(recorded, expected, strict=True):
        assert record["message"] == message
        assert set(record["details"]) == set(details), code
        assert record["at"].endswith("Z") and record["command"]
    limit = next(r for r in recorded if r["code"] == "DEVICE_LIMIT_REACHED")
    assert (limit["command"], limit["args"]) == ("acquire_license", {"device_id": "tablet", "title_id": "demo-title-1"})
    assert limit["details"] == {"limit": 1, "used": 1, "plan": "basic"}
    yearly = next(r for r in recorded if r["code"] == "TITLE_YEARLY_LIMIT_REACHED")
    assert yearly["details"]["next_available_at"].endswith("Z")


def test_a_denial_keeps_its_idempotency_key_as_request_id_and_changes_no_event() -> None:
    d = start_service()
    d.account("acct-1", plan="basic", devices=["phone", "tablet"])
    d.license("acct-1", "phone", "demo-title-1")
    before = d.stream_version("acct-1")
    refusal(lambda: d.service.handle(AcquireLicense("acct-1", "tablet", "demo-title-1"), idempotency_key="k-77"))
    assert d.stream_version("acct-1") == before
    assert [(r["code"], r["request_id"]) for r in _denials(d)] == [("DEVICE_LIMIT_REACHED", "k-77")]


def test_commands_on_accounts_that_do_not_exist_are_not_recorded() -> None:
    d = start_service()
    refusal(lambda: d.service.handle(AcquireLicense("ghost", "phone", "demo-title-1")))
    assert d.service.denials is not None
    assert d.service.denials.page("ghost", after=None, limit=10) == ([], None)
    assert refusal(lambda: d.service.list_denials("ghost")).code == "ACCOUNT_NOT_FOUND"


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_an_account_keeps_only_its_newest_denials_and_pages_through_them(store: str, tmp_path: Path) -> None:
    url = "memory://" if store == "memory" else f"sqlite:///{tmp_path / 'downloads.db'}"
    d = start_service(store=url)
    d.service.denials.kept = 50  # type: ignore[union-attr]
    d.account("acct-1", plan="basic", devices=["phone", "tablet"])
    d.license("acct-1", "phone", "demo-title-1")
    for n in range(80):
        refusal(
            lambda n=n: d.service.handle(AcquireLicense("acct-1", "tablet", "demo-title-1"), idempotency_key=f"k{n}")
        )
    seen, after = [], None
    while True:
        page = d.service.list_denials("acct-1", after=after, limit=7)
        seen.extend(r["request_id"] for r in page["denials"])
        if page["next"] is None:
            break
        after = page["next"]
    assert seen == [f"k{n}" for n in range(79, 29, -1)]  # the newest 50, newest first
    d.close()


def test_denials_racing_accepted_commands_on_one_account_cause_them_no_conflict(tmp_path: Path) -> None:
    d = start_service(store=f"sqlite:///{tmp_path / 'downloads.db'}")
    conflicts: list[tuple[str, int]] = []

    class Observer:
        def conflict(self, command: str, attempt: int) -> None:
            conflicts.append((command, attempt))

        def outcome(self, command: str, code: str, seconds: float) -> None:
            pass

    d.service.observer = Observer()
    d.account("acct-1", plan="basic", devices=["phone", "tablet"])
    d.license("acct-1", "phone", "demo-title-1")
    start = threading.Barrier(101)
    errors: list[BaseException] = []

    def denied(n: int) -> None:
        start.wait()
        try:
            d.service.handle(AcquireLicense("acct-1", "tablet", "demo-title-1"), idempotency_key=f"deny-{n}")
        except DomainError as exc:
            assert exc.code == "DEVICE_LIMIT_REACHED"
        except BaseException as exc:
            errors.append(exc)

    def accepted() -> None:
        start.wait()
        try:
            for n in range(30):  # one writer: any conflict it meets could only come from the denials
                d.service.handle(RegisterDevice("acct-1", f"dev-{n % 3}", "m"))
                d.service.handle(DeactivateDevice("acct-1", f"dev-{n % 3}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=denied, args=(n,)) for n in range(100)] + [threading.Thread(target=accepted)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert conflicts == []
    assert len(_denials(d, limit=1000)) == 100
    d.close()


def test_accepted_commands_record_their_arguments_with_their_first_event() -> None:
    d = start_service(policy=make_policy(studios={"default": Studio()}))
    d.account("acct-1", devices=["phone"])
    d.license("acct-1", "phone", "demo-title-1")
    history = d.service.accounts.history("acct-1")
    acquire = next(r for r in history if r.type_name == "LicenseIssued")
    assert acquire.metadata.command == "acquire_license"
    assert acquire.metadata.extra["args"] == {"device_id": "phone", "title_id": "demo-title-1"}
