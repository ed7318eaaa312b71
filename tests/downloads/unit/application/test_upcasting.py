"""Changed events: rows written by old code are read by new code; stored rows are never rewritten."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest

from downloads.application import AcquireLicense, DownloadsService, StartPlayback, SyncDevice
from downloads.bootstrap import ENCRYPTION
from downloads.domain import ACCOUNT_EVENTS, Account
from downloads.domain.events import AccountEvent, AccountOpened, DeviceRegistered, LicenseIssued
from eskit import EventCodec, EventMetadata, Repository, Upcasters
from eskit.exceptions import UpcastError
from tests.downloads.factories import START, Downloads, refusal, start_service

# -- an old schema: LicenseIssued before it had ``counted`` ------------------------------------


@dataclass(frozen=True)
class OldLicenseIssued(AccountEvent):
    """``LicenseIssued`` as the first release wrote it: no ``counted`` field."""

    type_name = "LicenseIssued"
    license_id: str
    device_id: str
    title_id: str
    issued_at: datetime
    expires_at: datetime


def _write_with_old_code(d: Downloads, account_id: str, events: list[Any]) -> None:
    old = EventCodec([AccountOpened, DeviceRegistered, OldLicenseIssued])
    meta = EventMetadata(recorded_at=START, command="old-code")
    stream = d.service.accounts.stream_id(account_id)
    d.service.accounts.events.append(stream, [old.encode(e, meta) for e in events], expected_version=0)


def test_licenses_written_before_counted_existed_are_read_as_counted_downloads() -> None:
    d = start_service()
    d.title("film", studio="restricted")
    expires = START + timedelta(days=30)
    _write_with_old_code(
        d,
        "acct-1",
        [
            AccountOpened("acct-1", "basic", START),
            DeviceRegistered("phone", "model", START),
            *[OldLicenseIssued(f"old-{n}", "phone", "film", START, expires) for n in range(3)],
        ],
    )
    stored = d.service.accounts.events.read(d.service.accounts.stream_id("acct-1"))
    assert "counted" not in stored[-1].data.decode()

    licenses = d.service.list_licenses("acct-1")

    assert [x["license_id"] for x in licenses] == ["old-0", "old-1", "old-2"]
    assert d.service.title_downloads("acct-1", "film")["used"] == 3
    d.service.handle(SyncDevice("acct-1", "phone", []))  # releases the three
    assert (
        refusal(lambda: d.service.handle(AcquireLicense("acct-1", "phone", "film"))).code
        == "TITLE_YEARLY_LIMIT_REACHED"
    )


# -- a new schema: LicenseIssued v2 gains a field, filled for v1 rows by an upcaster -----------


@dataclass(frozen=True)
class LicenseIssuedV2(LicenseIssued):
    """What a later release might define: the license duration kept on the event."""

    version = 2
    duration_days: int = 0


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    issued, expires = (datetime.fromisoformat(data[k]) for k in ("issued_at", "expires_at"))
    return {**data, "duration_days": (expires - issued).days}


def _new_code(d: Downloads, *, upcast: bool = True) -> DownloadsService:
    """The service as the later release wires it, over the same stored rows."""
    upcasters = Upcasters()
    if upcast:
        upcasters.register("LicenseIssued", 1, _v1_to_v2)
    codec = EventCodec(
        [*(e for e in ACCOUNT_EVENTS if e is not LicenseIssued), LicenseIssuedV2],
        upcasters=upcasters,
        encryption=ENCRYPTION,
    )
    repo = d.service.accounts
    accounts = Repository(Account, repo.events, codec, stream_prefix=repo.stream_prefix, keys=repo.keys)
    return DownloadsService(accounts=accounts, titles=d.service.titles, policy=d.service.policy, clock=d.clock)


def _issued(service: DownloadsService) -> list[Any]:
    return [r.event for r in service.accounts.history("acct-1") if r.type_name == "LicenseIssued"]


def _history_of_v1_rows() -> Downloads:
    d = start_service()
    d.account("acct-1", devices=["phone", "tablet"])
    d.license("acct-1", "phone", "demo-title-1")
    d.service.handle(StartPlayback("acct-1", d.license("acct-1", "tablet", "demo-title-2")))
    return d


def test_rows_written_by_the_current_code_are_read_by_new_code_through_the_upcaster() -> None:
    d = _history_of_v1_rows()
    stream = d.service.accounts.stream_id("acct-1")
    rows_before = d.service.accounts.events.read(stream)
    new = _new_code(d)

    issued = _issued(new)

    assert all(isinstance(e, LicenseIssuedV2) for e in issued)
    assert [e.duration_days for e in issued] == [30, 30]
    assert new.get_account("acct-1") == d.service.get_account("acct-1")
    assert new.list_licenses("acct-1") == d.service.list_licenses("acct-1")
    assert d.service.accounts.events.read(stream) == rows_before, "stored rows are never rewritten"


def test_new_code_reads_a_stream_that_mixes_v1_and_v2_rows() -> None:
    d = _history_of_v1_rows()
    new = _new_code(d)
    stream = new.accounts.stream_id("acct-1")
    issued = LicenseIssuedV2("new-1", "phone", "demo-title-2", START, START + timedelta(days=7), True, 7)
    new.accounts.events.append(
        stream,
        [
            new.accounts.codec.encode(
                issued, EventMetadata(recorded_at=START), stream_id=stream, key=new.accounts.stream_key(stream)
            )
        ],
        expected_version=new.accounts.events.version(stream),
    )

    rows = new.accounts.events.read(stream)

    assert [r.schema_version for r in rows if r.type_name == "LicenseIssued"] == [1, 1, 2]
    assert [e.duration_days for e in _issued(new)] == [30, 30, 7]
    assert len(new.list_licenses("acct-1", status="active")) == 3


def test_without_the_upcaster_new_code_refuses_old_rows_instead_of_misreading_them() -> None:
    d = _history_of_v1_rows()
    new = _new_code(d, upcast=False)

    with pytest.raises(UpcastError):
        new.get_account("acct-1")
