"""Read models and erased members: their rows go, the studios' counts stay, a rebuild never writes them again.

On the in-memory backend (kept as Cassandra keeps read models) and on SQLite (whose files are searched).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from downloads.application import AcquireLicense, OpenAccount, RegisterDevice, RenewLicense
from downloads.readmodels.model import Decoder
from eskit import is_erased
from eskit.privacy import KeyCache
from tests.downloads.unit.readmodels.support import Wired, wired

MODEL = "Pixel-Secret-Model-42"
DEVICE = "device-secret-7"
KEY = "idem-secret-key-9"


@pytest.fixture(params=["memory", "sqlite"])
def side(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Wired]:
    store = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'downloads.db'}"
    with wired(store) as found:
        yield found


def member(side: Wired, account_id: str, device_id: str) -> str:
    service = side.app.service
    service.handle(OpenAccount(account_id, "premium"))
    service.handle(RegisterDevice(account_id, device_id, MODEL), idempotency_key=f"{KEY}-{account_id}")
    first = side.app.license(account_id, device_id, "film")
    service.handle(RenewLicense(account_id, first))
    service.handle(AcquireLicense(account_id, device_id, "demo-title-1"))
    return first


def answers(side: Wired, *, license_id: str) -> dict[str, Any]:
    """What every read model answers about the two members (the second one is never erased)."""
    read = side.read_side
    now = side.clock()
    return {
        "film": [
            r.model_dump()
            for r in read.title_licenses("film", status="active", after=None, limit=100, now=now).licenses
        ],
        "device": read.device_licenses(DEVICE).model_dump(),
        "other device": read.device_licenses("other-device").model_dump(),
        "by device": read.lookup("device_id", DEVICE).accounts,
        "by license": read.lookup("license_id", license_id).accounts,
        "by key": read.lookup("idempotency_key", f"{KEY}-erased").accounts,
        "other by key": read.lookup("idempotency_key", f"{KEY}-kept").accounts,
        "report": read.report(granularity="day", studio=None, title_id=None, start=None, end=None).model_dump(),
    }


def scenario(side: Wired) -> tuple[str, dict[str, Any]]:
    side.app.title("film")
    erased_license = member(side, "erased", DEVICE)
    member(side, "kept", "other-device")
    side.caught_up()
    before = answers(side, license_id=erased_license)
    assert before["by device"] == ["erased"] and before["by key"] == ["erased"] and len(before["film"]) == 2
    return erased_license, before


def test_an_erased_members_rows_go_and_the_studios_counts_stay(side: Wired) -> None:
    erased_license, before = scenario(side)
    side.app.service.erase("erased", by="admin")
    side.caught_up()
    after = answers(side, license_id=erased_license)
    gone = {"by device": [], "by license": [], "by key": [], "device": {"licenses": []}}
    assert {k: after[k] for k in gone} == gone
    assert [r["account_id"] for r in after["film"]] == ["kept"]
    assert after["report"] == before["report"]  # downloads and renewals of the erased member still count
    assert (after["other device"], after["other by key"]) == (before["other device"], before["other by key"])


def test_a_read_side_rebuilt_after_the_erasure_answers_the_same_and_never_writes_the_member(side: Wired) -> None:
    erased_license, _ = scenario(side)
    side.app.service.erase("erased", by="admin")
    side.caught_up()
    after = answers(side, license_id=erased_license)
    for name in side.read_side.names:
        side.read_side.rebuild(name)
    side.caught_up()
    assert answers(side, license_id=erased_license) == after
    _no_personal_bytes(side)


def test_a_member_erased_before_the_read_side_ever_saw_them_leaves_only_counts(side: Wired) -> None:
    side.app.title("film")
    side.caught_up()
    erased_license = member(side, "erased", DEVICE)
    member(side, "kept", "other-device")
    side.app.service.erase("erased", by="admin")
    side.caught_up()
    after = answers(side, license_id=erased_license)
    assert (after["by device"], after["by license"], after["by key"]) == ([], [], [])
    rows = after["report"]["rows"]
    assert sum(r["downloads"] for r in rows) == 4 and sum(r["renewals"] for r in rows) == 2
    _no_personal_bytes(side)


def _no_personal_bytes(side: Wired) -> None:
    """On SQLite, no file beside the store (events, keys, read models, denials, their logs) holds the
    erased member's device id, model or idempotency key; the kept member's model is there only sealed."""
    url = side.app.app.settings.store
    if not url.startswith("sqlite:"):
        return
    folder = Path(url[len("sqlite:///") :]).parent
    stored = b"".join(path.read_bytes() for path in folder.iterdir() if path.is_file())
    for secret in (DEVICE, MODEL, f"{KEY}-erased"):
        assert secret.encode() not in stored, secret
    assert b"other-device" in stored  # the kept member's device is in the read models, as it should be


def test_once_the_decoder_met_a_member_erased_it_never_serves_their_events_clear_from_its_cache(side: Wired) -> None:
    """A projection behind another across an erasure must not see the member's stream half clear: a
    ``LicenseIssued`` decoded erased (nothing written) then a renewal served clear from the cache (written
    with the device id, and never deleted, for the erasure's event finds rows through the issue's)."""
    side.app.title("film")
    member(side, "erased", DEVICE)
    service = side.app.service
    stream = service.accounts.stream_id("erased")
    events = service.accounts.events.read(stream)
    issued = next(e for e in events if e.type_name == "LicenseIssued")
    renewed = next(e for e in events if e.type_name == "LicenseRenewed")
    keys = KeyCache(service.accounts.keys)
    decoder = Decoder(service.accounts.codec, keys=keys)
    assert decoder.seen(stream, renewed) is not None  # a leading projection met the renewal before the erasure
    service.erase("erased", by="admin")
    keys.forget(stream)  # this process erased it (serve: the read side beside the service)

    seen_issued = decoder.seen(stream, issued)
    seen_renewed = decoder.seen(stream, renewed)

    assert seen_issued is not None and seen_issued.erased and is_erased(seen_issued.event.device_id)
    assert seen_renewed is not None and seen_renewed.erased
