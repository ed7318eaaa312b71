"""What-if bounds its own work per request: commands re-decided, and bytes of decisions in the answer.

Past either bound a request is refused (422 ``WHAT_IF_TOO_LARGE`` over HTTP) with a message that
says how to narrow it with ``from`` and ``to``, and details that name a ``to`` which fits. The
summary over every account is not bounded by command count (it keeps no decisions), but its memory
must not grow with the number of accounts or of titles they name.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import orjson
import pytest

from downloads.application import AcquireLicense, OpenAccount, RegisterDevice, ReleaseLicense
from downloads.application.whatif import MAX_ANSWER_BYTES, MAX_COMMANDS, WhatIf, WhatIfLimits, summarise
from downloads.domain import DomainError, Invalid, Plan, Policy
from downloads.settings import Settings
from tests.downloads.factories import Downloads, refusal, start_service

MINUTE = timedelta(minutes=1)

#: under it, the second device of a basic account is refused: every acquire on the tablet changes
NO_DEVICES = Policy(plans={**Policy().plans, "basic": Plan(0)})


def _account_with_acquires(d: Downloads, account: str, pairs: int) -> int:
    """An open basic account, one device, then ``pairs`` acquire + release, a minute apart; the command count."""
    d.service.handle(OpenAccount(account, "basic"))
    d.service.handle(RegisterDevice(account, "phone", "p"))
    for _ in range(pairs):
        d.clock.advance(MINUTE)
        license_id = d.service.handle(AcquireLicense(account, "phone", "demo-title-1")).body["license_id"]
        d.clock.advance(MINUTE)
        d.service.handle(ReleaseLicense(account, license_id))
    return 2 + 2 * pairs


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_the_documented_bounds_are_the_defaults_and_the_settings_defaults() -> None:
    assert (MAX_COMMANDS, MAX_ANSWER_BYTES) == (10_000, 1_048_576)
    assert WhatIfLimits() == WhatIfLimits(commands=10_000, answer_bytes=1_048_576)
    settings = Settings()
    assert (settings.what_if_max_commands, settings.what_if_max_bytes) == (MAX_COMMANDS, MAX_ANSWER_BYTES)


def test_a_request_over_the_command_bound_is_refused_saying_how_to_narrow_it() -> None:
    d = start_service()
    commands = _account_with_acquires(d, "acct-1", 8)
    engine = WhatIf(d.service, NO_DEVICES, limits=WhatIfLimits(commands=10))

    refused = refusal(lambda: engine.account("acct-1"), Invalid)

    assert refused.code == "WHAT_IF_TOO_LARGE"
    assert refused.details["commands"] == commands
    assert refused.details["limit"] == 10
    assert '"from"' in refused.message and '"to"' in refused.message
    first = engine.account("acct-1", until=_time(refused.details["to"]))
    assert first.commands == 10
    assert first.changed == 8  # every acquire and release after the open and the registration
    rest = engine.account("acct-1", since=_time(refused.details["to"]) + MINUTE / 2, until=d.clock.now)
    assert rest.changed == 8  # the other eight, re-decided on the state the first ten left


def test_commands_before_from_are_applied_not_counted_against_the_bound() -> None:
    d = start_service()
    _account_with_acquires(d, "acct-1", 20)
    engine = WhatIf(d.service, NO_DEVICES, limits=WhatIfLimits(commands=10))

    late = engine.account("acct-1", since=d.clock.now - 9 * MINUTE)

    assert late.changed == 10


def test_a_request_whose_answer_would_exceed_the_byte_bound_is_refused_naming_a_to_that_fits() -> None:
    d = start_service()
    _account_with_acquires(d, "acct-1", 20)
    engine = WhatIf(d.service, NO_DEVICES, limits=WhatIfLimits(answer_bytes=2_000))

    refused = refusal(lambda: engine.account("acct-1"), Invalid)

    assert refused.code == "WHAT_IF_TOO_LARGE"
    assert refused.details["limit_bytes"] == 2_000
    assert '"from"' in refused.message and '"to"' in refused.message
    fits = engine.present(engine.account("acct-1", until=_time(refused.details["to"])))
    assert 0 < len(fits["decisions"]) < 40
    assert len(orjson.dumps(fits["decisions"])) <= 2_000


def test_over_the_default_bound_of_10000_commands_a_request_is_refused() -> None:
    d = start_service()
    commands = _account_with_acquires(d, "acct-1", 5_000)
    assert commands == MAX_COMMANDS + 2

    refused = refusal(lambda: WhatIf(d.service, NO_DEVICES).account("acct-1"), Invalid)

    assert (refused.code, refused.details["commands"], refused.details["limit"]) == (
        "WHAT_IF_TOO_LARGE",
        10_002,
        10_000,
    )


def test_the_fleet_summary_re_decides_every_command_whatever_the_per_request_bound() -> None:
    d = start_service()
    counts = [_account_with_acquires(d, f"acct-{n}", 10) for n in range(3)]
    engine = WhatIf(d.service, NO_DEVICES, limits=WhatIfLimits(commands=5, answer_bytes=1_024))

    summary = summarise(engine, iter(["acct-0", "acct-1", "acct-2"]))

    assert (summary.accounts, summary.commands, summary.changed) == (3, sum(counts), 3 * 20)


def test_the_fleet_summary_keeps_a_bounded_number_of_titles_in_memory() -> None:
    d = start_service()
    accounts = []
    for n in range(60):
        account = f"acct-{n:02d}"
        d.service.handle(OpenAccount(account, "basic"))
        d.service.handle(RegisterDevice(account, "phone", "p"))
        with pytest.raises(DomainError):  # each names a title of its own, unknown: refused and recorded
            d.service.handle(AcquireLicense(account, "phone", f"invented-{n}"))
        d.service.handle(AcquireLicense(account, "phone", "demo-title-2"))
        accounts.append(account)

    bounded = WhatIf(d.service, NO_DEVICES, titles_kept=8)
    summary = summarise(bounded, iter(accounts))

    assert len(bounded.catalog) <= 8
    everything = summarise(WhatIf(d.service, NO_DEVICES), iter(accounts))
    assert summary == everything
    assert summary.by_change[("acquire_license", "accepted", "DEVICE_LIMIT_REACHED", "restricted")] == 60
