"""Forgetting a member: every route answers ACCOUNT_ERASED, nothing personal can be read, history stays.

On the in-memory store and on SQLite, through the real service (only time is faked).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

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
    RevokeLicense,
    StartPlayback,
    SyncDevice,
)
from downloads.application.whatif import WhatIf, summarise
from downloads.domain import Gone, NotFound, Policy
from downloads.domain.events import AccountErased, DeviceRegistered
from eskit import ERASED, EventMetadata, is_erased
from eskit.privacy import ErasedKey
from tests.downloads.factories import START, Downloads, refusal, start_service

MODEL = "Pixel-Secret-Model-42"
DEVICE = "device-secret-7"
KEY = "idem-secret-key-9"


@pytest.fixture(params=["memory", "sqlite"])
def d(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Downloads]:
    store = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'downloads.db'}"
    downloads = start_service(store=store, snapshot_every=3)
    yield downloads
    downloads.close()


def member(d: Downloads, account_id: str = "acct-1") -> str:
    """An account with a device, licenses (one played), a command under a key and a denial."""
    d.service.handle(OpenAccount(account_id, "basic"))
    d.service.handle(RegisterDevice(account_id, DEVICE, MODEL), idempotency_key=KEY)
    d.service.handle(RegisterDevice(account_id, "tablet", "Tablet-Model"))
    first = d.license(account_id, DEVICE, "demo-title-1")
    d.service.handle(StartPlayback(account_id, first))
    refusal(lambda: d.service.handle(AcquireLicense(account_id, "tablet", "demo-title-2")))  # basic: one device
    return first


def erase(d: Downloads, account_id: str = "acct-1") -> dict[str, Any]:
    return d.service.erase(account_id, by="admin-ann", request_id="ticket-123")


def test_every_command_on_an_erased_account_answers_account_erased_and_writes_nothing(d: Downloads) -> None:
    license_id = member(d)
    erase(d)
    version = d.stream_version("acct-1")
    commands = [
        OpenAccount("acct-1", "basic"),
        ChangePlan("acct-1", "premium"),
        CloseAccount("acct-1"),
        RegisterDevice("acct-1", "new", "model"),
        DeactivateDevice("acct-1", DEVICE),
        SyncDevice("acct-1", DEVICE, [license_id]),
        AcquireLicense("acct-1", DEVICE, "demo-title-2"),
        StartPlayback("acct-1", license_id),
        RenewLicense("acct-1", license_id),
        ReleaseLicense("acct-1", license_id),
        RevokeLicense("acct-1", license_id, "title_withdrawn"),
    ]
    for command in commands:
        refused = refusal(lambda command=command: d.service.handle(command, idempotency_key=KEY), Gone)
        assert refused.code == "ACCOUNT_ERASED" and refused.details["account_id"] == "acct-1"
    assert d.stream_version("acct-1") == version


def test_every_query_on_an_erased_account_answers_account_erased_even_about_the_past(d: Downloads) -> None:
    license_id = member(d)
    erase(d)
    queries: list[Callable[[], object]] = [
        lambda: d.service.get_account("acct-1"),
        lambda: d.service.get_account("acct-1", version=2),
        lambda: d.service.get_account("acct-1", as_of=START),
        lambda: d.service.list_licenses("acct-1"),
        lambda: d.service.get_license("acct-1", license_id),
        lambda: d.service.title_downloads("acct-1", "demo-title-1"),
        lambda: d.service.history("acct-1"),
        lambda: d.service.list_denials("acct-1"),
        lambda: WhatIf(d.service, Policy()).account("acct-1"),
    ]
    for query in queries:
        assert refusal(query, Gone).code == "ACCOUNT_ERASED"


def test_an_erasure_keeps_every_event_where_it_was_and_none_of_the_member_readable(d: Downloads) -> None:
    member(d)
    before = [(e.position, e.type_name, e.event_id) for e in _stored(d)]
    done = erase(d)
    after = _stored(d)
    assert [(e.position, e.type_name, e.event_id) for e in after[:-1]] == before
    assert after[-1].type_name == "AccountErased" and done["erased_at"] == START
    decoded = d.service.accounts.history("acct-1")
    registered = [r.event for r in decoded if isinstance(r.event, DeviceRegistered)]
    assert registered == [DeviceRegistered(ERASED, ERASED, START)] * 2
    assert all(r.metadata.erased and is_erased(r.metadata.request_id) for r in decoded[:-1])
    assert isinstance(d.service.accounts.stream_key(d.service.accounts.stream_id("acct-1")), ErasedKey)
    assert d.app.stores.snapshots.versions(d.service.accounts.stream_id("acct-1")) == []


def test_the_erasure_is_recorded_without_personal_data(d: Downloads) -> None:
    member(d)
    erase(d)
    last = _stored(d)[-1]
    recorded = d.service.accounts.decode(last)
    assert recorded.event == AccountErased(START, "admin-ann", "ticket-123")
    assert recorded.metadata == EventMetadata(recorded_at=START, command="erase_account", erased=True)
    assert b"$sealed" not in last.data and b"$sealed" not in last.metadata  # nothing was sealed: nothing to seal


def test_erasing_again_answers_the_first_erasure_and_writes_nothing(d: Downloads) -> None:
    member(d)
    first = erase(d)
    version = d.stream_version("acct-1")
    d.clock.advance(timedelta(days=3))
    assert erase(d) == first
    assert d.stream_version("acct-1") == version


def test_an_account_that_never_existed_cannot_be_erased(d: Downloads) -> None:
    assert refusal(lambda: erase(d, "nobody"), NotFound).code == "ACCOUNT_NOT_FOUND"
    assert d.stream_version("nobody") == 0


def test_the_denials_of_an_erased_member_go_with_them(d: Downloads) -> None:
    member(d)
    log = d.service.denials
    assert log is not None
    assert len(log.page("acct-1", after=None, limit=100)[0]) == 1
    erase(d)
    assert log.page("acct-1", after=None, limit=100) == ([], None)


def test_other_members_answer_the_same_before_and_after_an_erasure(d: Downloads) -> None:
    member(d, "acct-1")
    member(d, "acct-2")
    before = (
        d.service.get_account("acct-2"),
        d.service.list_licenses("acct-2"),
        d.service.history("acct-2"),
        d.service.list_denials("acct-2"),
    )
    erase(d, "acct-1")
    after = (
        d.service.get_account("acct-2"),
        d.service.list_licenses("acct-2"),
        d.service.history("acct-2"),
        d.service.list_denials("acct-2"),
    )
    assert after == before


def test_a_process_holding_the_account_in_its_cache_refuses_commands_after_the_erasure(d: Downloads) -> None:
    if d.app.settings.store.startswith("memory"):
        pytest.skip("a second process needs a store both can open")
    member(d)
    other = d.restart()
    other.service.handle(RegisterDevice("acct-1", "cached", "model"))  # now cached there, with the key
    erase(d)
    assert refusal(lambda: other.service.handle(ReleaseLicense("acct-1", "x")), Gone).code == "ACCOUNT_ERASED"
    assert refusal(lambda: other.service.get_account("acct-1"), Gone).code == "ACCOUNT_ERASED"


def test_a_retry_under_a_key_accepted_before_the_erasure_is_refused_not_replayed(d: Downloads) -> None:
    member(d)
    erase(d)
    retry = refusal(lambda: d.service.handle(RegisterDevice("acct-1", DEVICE, MODEL), idempotency_key=KEY), Gone)
    assert retry.code == "ACCOUNT_ERASED"


@pytest.mark.parametrize("steps", [1, 2, 3], ids=["event only", "event and key", "event, key, snapshots"])
def test_an_erasure_interrupted_after_any_step_is_finished_by_erasing_again(d: Downloads, steps: int) -> None:
    """The steps of :meth:`DownloadsService.erase`, taken one by one as a crash would leave them."""
    member(d)
    accounts, stream = d.service.accounts, d.service.accounts.stream_id("acct-1")
    at = d.service.account_commands.run(
        "acct-1",
        lambda account: account.erase(by="admin-ann", request_id="ticket-123", now=START),
        metadata=EventMetadata(recorded_at=START, command="erase_account"),
    )
    if steps >= 2:
        assert accounts.keys is not None
        accounts.keys.erase(stream, at=at)
    if steps >= 3:
        d.app.stores.snapshots.delete(stream, d.app.stores.snapshots.versions(stream))
    assert refusal(lambda: d.service.get_account("acct-1"), Gone).code == "ACCOUNT_ERASED"  # already, at each step
    assert erase(d) == {"account_id": "acct-1", "erased_at": START}
    assert isinstance(accounts.stream_key(stream), ErasedKey)
    assert d.app.stores.snapshots.versions(stream) == []
    assert d.service.denials is not None and d.service.denials.page("acct-1", after=None, limit=10) == ([], None)
    assert [e.type_name for e in _stored(d)].count("AccountErased") == 1


def test_what_if_over_every_account_skips_erased_members_and_says_how_many(d: Downloads) -> None:
    member(d, "acct-1")
    member(d, "acct-2")
    erase(d, "acct-1")
    summary = summarise(WhatIf(d.service, Policy()), iter(["acct-1", "acct-2"]))
    assert (summary.accounts, summary.erased) == (1, 1)


def _stored(d: Downloads) -> list[Any]:
    return d.service.accounts.events.read(d.service.accounts.stream_id("acct-1"))


def test_an_account_written_in_clear_before_encryption_is_erased_too_within_the_limit_of_history(
    tmp_path: Path,
) -> None:
    """Events stored in clear stay as they were stored (history is never rewritten): after the erasure no
    read shows their personal fields, but their bytes are still in the store's rows, and verify counts them."""
    from downloads.application.verify import verify_service_store
    from downloads.bootstrap import bootstrap, make_codec
    from downloads.settings import Settings

    settings = Settings(store=f"sqlite:///{tmp_path / 'downloads.db'}", snapshot_every=0)
    before = bootstrap(settings, codec=make_codec(sealed=False))  # the code before encryption
    before.service.handle(OpenAccount("old", "basic"))
    before.service.handle(RegisterDevice("old", DEVICE, MODEL))
    before.close()
    runtime = bootstrap(settings)
    try:
        service = runtime.service
        assert service.get_account("old")["devices"][0]["model"] == MODEL  # read as it was stored
        service.handle(RegisterDevice("old", "second", "Second-Secret-Model"))  # sealed: the stream gets a key
        service.erase("old", by="dpo")
        assert refusal(lambda: service.get_account("old"), Gone).code == "ACCOUNT_ERASED"
        registered = [r.event for r in service.accounts.history("old") if isinstance(r.event, DeviceRegistered)]
        assert all(is_erased(e.device_id) and is_erased(e.model) for e in registered)
        report = verify_service_store(service, runtime.stores.events, runtime.stores.snapshots)
        assert report.sound and report.erased == 1 and report.erased_in_clear == 2  # AccountOpened's request id too
    finally:
        runtime.close()
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert MODEL.encode() in stored  # the limit: written in clear, it stays in the row
    assert b"Second-Secret-Model" not in stored
