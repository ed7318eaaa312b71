"""Idempotency: a command retried with the same request id has exactly one effect (section 3)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from downloads.application import (
    AcquireLicense,
    ChangePlan,
    CloseAccount,
    DeactivateDevice,
    OpenAccount,
    RegisterDevice,
    ReleaseLicense,
    RenewLicense,
    Reply,
    StartPlayback,
    SyncDevice,
)
from downloads.domain import Invalid
from tests.downloads.factories import Downloads, make_policy, refusal, start_service


@dataclass(frozen=True)
class Case:
    """A command that records events, and a change made after it so that re-running it would answer differently."""

    setup: Callable[[Downloads], dict[str, str]]
    command: Callable[[Downloads, dict[str, str], str], Reply]
    afterwards: Callable[[Downloads, dict[str, str]], object]


def _nothing(d: Downloads) -> dict[str, str]:
    return {}


def _account(d: Downloads) -> dict[str, str]:
    d.account("acct-1", plan="basic", devices=["phone"])
    return {}


def _with_license(d: Downloads) -> dict[str, str]:
    d.account("acct-1", plan="basic", devices=["phone"])
    return {"license": d.license("acct-1", "phone", "demo-title-1")}


def _with_two_licenses(d: Downloads) -> dict[str, str]:
    ids = _with_license(d)
    return {**ids, "other": d.license("acct-1", "phone", "demo-title-2")}


CASES = {
    "open account": Case(
        _nothing,
        lambda d, ids, rid: d.service.handle(OpenAccount("acct-1", "basic"), idempotency_key=rid),
        lambda d, ids: d.service.handle(ChangePlan("acct-1", "premium")),
    ),
    "change plan": Case(
        _account,
        lambda d, ids, rid: d.service.handle(ChangePlan("acct-1", "premium"), idempotency_key=rid),
        lambda d, ids: d.service.handle(ChangePlan("acct-1", "standard")),
    ),
    "close account": Case(
        _with_license,
        lambda d, ids, rid: d.service.handle(CloseAccount("acct-1"), idempotency_key=rid),
        lambda d, ids: None,
    ),
    "register device": Case(
        _account,
        lambda d, ids, rid: d.service.handle(RegisterDevice("acct-1", "tablet", "model"), idempotency_key=rid),
        lambda d, ids: d.service.handle(DeactivateDevice("acct-1", "tablet")),
    ),
    "deactivate device": Case(
        _with_license,
        lambda d, ids, rid: d.service.handle(DeactivateDevice("acct-1", "phone"), idempotency_key=rid),
        lambda d, ids: d.service.handle(RegisterDevice("acct-1", "phone", "model")),
    ),
    "sync device": Case(
        _with_two_licenses,
        lambda d, ids, rid: d.service.handle(SyncDevice("acct-1", "phone", [ids["license"]]), idempotency_key=rid),
        lambda d, ids: d.service.handle(ReleaseLicense("acct-1", ids["license"])),
    ),
    "acquire license": Case(
        _account,
        lambda d, ids, rid: d.service.handle(AcquireLicense("acct-1", "phone", "demo-title-1"), idempotency_key=rid),
        lambda d, ids: d.service.handle(SyncDevice("acct-1", "phone", [])),
    ),
    "start playback": Case(
        _with_license,
        lambda d, ids, rid: d.service.handle(StartPlayback("acct-1", ids["license"]), idempotency_key=rid),
        lambda d, ids: d.service.handle(RenewLicense("acct-1", ids["license"])),
    ),
    "renew license": Case(
        _with_license,
        lambda d, ids, rid: d.service.handle(RenewLicense("acct-1", ids["license"]), idempotency_key=rid),
        lambda d, ids: d.service.handle(StartPlayback("acct-1", ids["license"])),
    ),
    "release license": Case(
        _with_license,
        lambda d, ids, rid: d.service.handle(ReleaseLicense("acct-1", ids["license"]), idempotency_key=rid),
        lambda d, ids: d.service.handle(RegisterDevice("acct-1", "tablet", "model")),
    ),
}

#: where the retry is answered from: events only, a snapshot, or a second process on the same file
SETUPS = ["events only", "snapshot every event", "snapshot every 2 events", "after a restart"]


def _service(setup: str, tmp_path: Path) -> Downloads:
    if setup == "after a restart":
        return start_service(store=f"sqlite:///{tmp_path}/downloads.db", snapshot_every=2)
    return start_service(snapshot_every={"events only": 0, "snapshot every event": 1}.get(setup, 2))


@pytest.mark.parametrize("setup", SETUPS)
@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_a_retried_command_returns_the_original_reply_and_writes_nothing(
    case: Case, setup: str, tmp_path: Path
) -> None:
    d = _service(setup, tmp_path)
    ids = case.setup(d)
    first = case.command(d, ids, "request-1")
    d.clock.advance(timedelta(hours=1))
    case.afterwards(d, ids)
    if setup == "after a restart":
        d = d.restart()
    before = d.stream_version("acct-1")

    again = case.command(d, ids, "request-1")

    assert not first.replayed
    assert (again.body, again.created, again.replayed) == (first.body, first.created, True)
    assert d.stream_version("acct-1") == before
    d.close()


def test_a_remembered_request_is_read_back_from_a_snapshot() -> None:
    d = start_service(snapshot_every=1)
    d.account("acct-1", devices=["phone"])
    first = d.service.handle(AcquireLicense("acct-1", "phone", "demo-title-1"), idempotency_key="request-1")
    stream = d.service.accounts.stream_id("acct-1")
    snapshot = d.app.stores.snapshots.load(stream)
    assert snapshot is not None and snapshot.version == d.stream_version("acct-1")

    again = d.service.handle(AcquireLicense("acct-1", "phone", "demo-title-1"), idempotency_key="request-1")

    assert (again.body, again.created, again.replayed) == (first.body, True, True)


def test_a_request_id_reused_for_different_arguments_is_invalid_and_writes_nothing() -> None:
    d = start_service()
    d.account("acct-1", devices=["phone"])
    d.service.handle(AcquireLicense("acct-1", "phone", "demo-title-1"), idempotency_key="request-1")
    before = d.stream_version("acct-1")

    error = refusal(
        lambda: d.service.handle(AcquireLicense("acct-1", "phone", "demo-title-2"), idempotency_key="request-1"),
        Invalid,
    )

    assert error.code == "IDEMPOTENCY_KEY_REUSED"
    assert d.stream_version("acct-1") == before


def test_a_request_id_reused_for_a_different_command_is_invalid() -> None:
    d = start_service()
    d.account("acct-1", devices=["phone"])
    lic = d.service.handle(AcquireLicense("acct-1", "phone", "demo-title-1"), idempotency_key="request-1").body[
        "license_id"
    ]

    error = refusal(lambda: d.service.handle(ReleaseLicense("acct-1", lic), idempotency_key="request-1"), Invalid)

    assert error.code == "IDEMPOTENCY_KEY_REUSED"
    assert d.service.get_license("acct-1", lic)["status"] == "active"


def test_a_refused_command_is_not_remembered_so_its_retry_is_decided_again() -> None:
    d = start_service()
    d.account("acct-1", plan="basic", devices=["phone", "tablet"])
    held = d.license("acct-1", "phone", "demo-title-1")
    denied = refusal(
        lambda: d.service.handle(AcquireLicense("acct-1", "tablet", "demo-title-1"), idempotency_key="request-1")
    )
    assert denied.code == "DEVICE_LIMIT_REACHED"
    d.service.handle(ReleaseLicense("acct-1", held))

    retry = d.service.handle(AcquireLicense("acct-1", "tablet", "demo-title-1"), idempotency_key="request-1")

    assert retry.created and not retry.replayed


def test_a_request_id_is_remembered_for_the_configured_hours_even_across_other_commands() -> None:
    d = start_service(idempotency_hours=1)
    d.account("acct-1", devices=["phone", "tablet"])
    first = d.service.handle(AcquireLicense("acct-1", "phone", "demo-title-1"), idempotency_key="request-1")
    d.clock.advance(timedelta(minutes=59))
    d.service.handle(AcquireLicense("acct-1", "tablet", "demo-title-1"))

    again = d.service.handle(AcquireLicense("acct-1", "phone", "demo-title-1"), idempotency_key="request-1")

    assert (again.body, again.created, again.replayed) == (first.body, True, True)


def test_a_request_id_is_forgotten_once_the_configured_hours_pass() -> None:
    d = start_service(idempotency_hours=1)
    d.account("acct-1", devices=["phone", "tablet"])
    first = d.service.handle(AcquireLicense("acct-1", "phone", "demo-title-1"), idempotency_key="request-1")
    d.clock.advance(timedelta(hours=1))

    again = d.service.handle(AcquireLicense("acct-1", "phone", "demo-title-1"), idempotency_key="request-1")

    # decided afresh: the license is still active, so it is answered, but not as a replay
    assert (again.body["license_id"], again.created, again.replayed) == (first.body["license_id"], False, False)


def test_a_forgotten_request_id_may_be_used_for_another_command() -> None:
    d = start_service(idempotency_hours=1)
    d.account("acct-1", devices=["phone", "tablet"])
    lic = d.service.handle(AcquireLicense("acct-1", "phone", "demo-title-1"), idempotency_key="request-1").body[
        "license_id"
    ]
    d.clock.advance(timedelta(hours=2))
    d.service.handle(RegisterDevice("acct-1", "laptop", "model"))  # a later command: the old id is pruned

    reply = d.service.handle(ReleaseLicense("acct-1", lic), idempotency_key="request-1")

    assert reply.body["status"] == "released" and not reply.replayed


def test_a_retried_command_that_recorded_nothing_still_gets_its_original_answer() -> None:
    d = start_service()
    d.account("acct-1", devices=["phone"])
    lic = d.license("acct-1", "phone", "demo-title-1")
    first = d.service.handle(AcquireLicense("acct-1", "phone", "demo-title-1"), idempotency_key="request-1")
    d.service.handle(ReleaseLicense("acct-1", lic))
    before = d.stream_version("acct-1")

    again = d.service.handle(AcquireLicense("acct-1", "phone", "demo-title-1"), idempotency_key="request-1")

    assert (again.body, again.created, again.replayed) == (first.body, False, True)
    assert d.stream_version("acct-1") == before


def _with_released_license(d: Downloads) -> dict[str, str]:
    ids = _with_license(d)
    d.service.handle(ReleaseLicense("acct-1", ids["license"]))
    return ids


def _with_deactivated_device(d: Downloads) -> dict[str, str]:
    ids = _account(d)
    d.service.handle(DeactivateDevice("acct-1", "phone"))
    return ids


def _with_license_playing(d: Downloads) -> dict[str, str]:
    ids = _with_license(d)
    d.service.handle(StartPlayback("acct-1", ids["license"]))
    return ids


#: commands that change nothing when sent, each with a change made afterwards that would change their answer
#: (and the sync also names a license the server does not know)
UNCHANGED = {
    "acquire a title the device holds": Case(
        _with_license,
        lambda d, ids, rid: d.service.handle(AcquireLicense("acct-1", "phone", "demo-title-1"), idempotency_key=rid),
        lambda d, ids: d.service.handle(ReleaseLicense("acct-1", ids["license"])),
    ),
    "register an active device": Case(
        _account,
        lambda d, ids, rid: d.service.handle(RegisterDevice("acct-1", "phone", "model"), idempotency_key=rid),
        lambda d, ids: d.service.handle(DeactivateDevice("acct-1", "phone")),
    ),
    "change to the same plan": Case(
        _account,
        lambda d, ids, rid: d.service.handle(ChangePlan("acct-1", "basic"), idempotency_key=rid),
        lambda d, ids: d.service.handle(RegisterDevice("acct-1", "tablet", "model")),
    ),
    "release a released license": Case(
        _with_released_license,
        lambda d, ids, rid: d.service.handle(ReleaseLicense("acct-1", ids["license"]), idempotency_key=rid),
        lambda d, ids: None,  # nothing can change a released license: the replay header tells
    ),
    "deactivate a deactivated device": Case(
        _with_deactivated_device,
        lambda d, ids, rid: d.service.handle(DeactivateDevice("acct-1", "phone"), idempotency_key=rid),
        lambda d, ids: d.service.handle(RegisterDevice("acct-1", "phone", "model")),
    ),
    "sync what the server holds": Case(
        _with_license,
        lambda d, ids, rid: d.service.handle(
            SyncDevice("acct-1", "phone", [ids["license"], "made-up"]), idempotency_key=rid
        ),
        lambda d, ids: d.service.handle(ReleaseLicense("acct-1", ids["license"])),
    ),
    "play a license playing already": Case(
        _with_license_playing,
        lambda d, ids, rid: d.service.handle(StartPlayback("acct-1", ids["license"]), idempotency_key=rid),
        lambda d, ids: d.service.handle(RenewLicense("acct-1", ids["license"])),
    ),
}


@pytest.mark.parametrize("setup", SETUPS)
@pytest.mark.parametrize("case", UNCHANGED.values(), ids=UNCHANGED.keys())
def test_a_command_that_changed_nothing_is_remembered_by_one_small_event_and_replayed(
    case: Case, setup: str, tmp_path: Path
) -> None:
    d = _service(setup, tmp_path)
    ids = case.setup(d)
    before = d.stream_version("acct-1")
    first = case.command(d, ids, "request-1")
    recorded = d.events("acct-1", after=before)
    d.clock.advance(timedelta(hours=1))
    case.afterwards(d, ids)
    if setup == "after a restart":
        d = d.restart()
    unchanged = d.stream_version("acct-1")

    again = case.command(d, ids, "request-1")

    assert [e["type"] for e in recorded] == ["RequestAnswered"]
    assert recorded[0]["metadata"]["request_id"] == "request-1"
    assert recorded[0]["data"]["command"] == recorded[0]["metadata"]["command"]
    assert (again.body, again.created, again.replayed) == (first.body, first.created, True)
    assert d.stream_version("acct-1") == unchanged
    d.close()


def test_a_command_that_changed_nothing_without_a_key_writes_nothing() -> None:
    d = start_service()
    d.account("acct-1", devices=["phone"])
    lic = d.license("acct-1", "phone", "demo-title-1")
    before = d.stream_version("acct-1")

    d.service.handle(AcquireLicense("acct-1", "phone", "demo-title-1"))
    d.service.handle(SyncDevice("acct-1", "phone", [lic]))
    d.service.handle(RegisterDevice("acct-1", "phone", "model"))

    assert d.stream_version("acct-1") == before


def test_a_replayed_sync_answers_its_original_body_with_the_ids_it_did_not_store(tmp_path: Path) -> None:
    d = start_service(store=f"sqlite:///{tmp_path}/downloads.db")
    d.account("acct-1", devices=["phone", "tablet"])
    kept = d.license("acct-1", "phone", "demo-title-1")
    dropped = d.license("acct-1", "phone", "demo-title-2")
    elsewhere = d.license("acct-1", "tablet", "demo-title-1")
    held = ["made-up-2", kept, "made-up-1", elsewhere, "made-up-2"]
    before = d.stream_version("acct-1")
    first = d.service.handle(SyncDevice("acct-1", "phone", held), idempotency_key="sync-1")
    d.clock.advance(timedelta(hours=1))
    d.service.handle(ReleaseLicense("acct-1", kept))
    d = d.restart()

    again = d.service.handle(SyncDevice("acct-1", "phone", held), idempotency_key="sync-1")

    assert first.body == {"active": [kept], "released": [dropped], "revoked": ["made-up-2", "made-up-1", elsewhere]}
    assert (again.body, again.replayed) == (first.body, True)
    stored = d.service.accounts.history("acct-1", gt=before)
    assert "made-up" not in str([(r.metadata.extra, r.event) for r in stored])
    assert stored[0].metadata.extra["args"] == {"device_id": "phone", "license_ids": [kept], "license_ids_sent": 5}
    assert stored[0].metadata.extra["reply"]["body"] == {"active": [kept], "released": [dropped]}
    reused = refusal(
        lambda: d.service.handle(SyncDevice("acct-1", "phone", held[:-1]), idempotency_key="sync-1"), Invalid
    )
    assert reused.code == "IDEMPOTENCY_KEY_REUSED"  # the fingerprint is of every id sent, not of those stored
    d.close()


def test_a_sync_naming_more_ids_than_a_device_may_hold_is_invalid_and_writes_nothing() -> None:
    d = start_service(policy=make_policy(max_active_downloads=3))
    d.account("acct-1", devices=["phone"])
    before = d.stream_version("acct-1")

    for device in ("phone", "ghost"):
        error = refusal(
            lambda device=device: d.service.handle(
                SyncDevice("acct-1", device, ["a", "b", "c", "d"]), idempotency_key="k"
            ),
            Invalid,
        )
        assert (error.code, error.details) == ("TOO_MANY_LICENSE_IDS", {"limit": 3, "sent": 4})
    d.service.handle(SyncDevice("acct-1", "phone", ["a", "b", "c"]))

    assert d.stream_version("acct-1") == before
    assert d.service.list_denials("acct-1")["denials"] == []
