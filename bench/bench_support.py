"""Support tools: what-if against the plain fold of the same events, and the admin timeline's server time."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.harness import goal_at_least, goal_at_most, median, progress, scratch_dir
from downloads.application import AcquireLicense, DownloadsService, OpenAccount, RegisterDevice, ReleaseLicense
from downloads.application.whatif import WhatIf, summarise
from downloads.bootstrap import bootstrap
from downloads.domain import Account, DomainError, Policy
from downloads.settings import Settings

NAME = "support"
TITLE = "Support tools: what-if against the plain fold, the admin timeline against the JSON route"


class _Clock:
    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=5)
        return self.now


def _busy_account(service: DownloadsService, account: str, commands: int) -> int:
    """One account's commands: acquire and release pairs on two devices, some refused; returns how many."""
    service.handle(OpenAccount(account, "basic"))
    service.handle(RegisterDevice(account, "phone", "p"))
    service.handle(RegisterDevice(account, "tablet", "t"))
    sent = 3
    while sent < commands:
        try:
            lic = service.handle(AcquireLicense(account, "phone", "demo-title-1")).body["license_id"]
            service.handle(AcquireLicense(account, "tablet", "demo-title-2"))  # refused: one device on basic
        except DomainError:
            pass
        service.handle(ReleaseLicense(account, lic))
        sent += 3
    return sent


def _fold_rate(service: DownloadsService, account: str) -> float:
    """Events read, decoded and folded per second by a plain load from the first event (no snapshot)."""
    started = time.perf_counter()
    history = service.accounts.history(account)
    folded = Account(account)
    for recorded in history:
        folded.replay(recorded.event, recorded.metadata)
    return len(history) / (time.perf_counter() - started)


def _what_if_account(quick: bool) -> tuple[dict[str, Any], float]:
    commands = 2_000 if quick else 10_000
    runtime = bootstrap(Settings(store="memory://", snapshot_every=0), clock=_Clock())
    sent = _busy_account(runtime.service, "busy", commands)
    stricter = WhatIf(runtime.service, Policy())
    rates, folds = [], []
    for _ in range(3):
        started = time.perf_counter()
        result = stricter.account("busy", bounded=False)  # the engine's rate: one request past its bound
        rates.append(result.commands / (time.perf_counter() - started))
        folds.append(_fold_rate(runtime.service, "busy"))
    events = len(runtime.service.accounts.history("busy"))
    runtime.close()
    rate, fold = median(rates), median(folds)
    progress(f"what-if on one account of {sent:,} commands: {rate:,.0f} commands/s; plain fold {fold:,.0f} events/s")
    row = {
        "case": f"what-if, one account of {sent:,} commands ({events:,} events)",
        "commands/s": rate,
        "fold events/s": fold,
        "x fold": rate / fold,
    }
    return row, rate / fold


def _what_if_fleet(quick: bool) -> tuple[dict[str, Any], float]:
    accounts = 1_000 if quick else 10_000
    runtime = bootstrap(Settings(store="memory://", snapshot_every=0), clock=_Clock())
    ids = [f"a{n}" for n in range(accounts)]
    for account in ids:
        _busy_account(runtime.service, account, 9)
    engine = WhatIf(runtime.service, Policy())
    started = time.perf_counter()
    summary = summarise(engine, iter(ids))
    took = time.perf_counter() - started
    started = time.perf_counter()
    events = 0
    for account in ids:
        history = runtime.service.accounts.history(account)
        folded = Account(account)
        for recorded in history:
            folded.replay(recorded.event, recorded.metadata)
        events += len(history)
    fold = events / (time.perf_counter() - started)
    runtime.close()
    rate = summary.commands / took
    progress(f"what-if over {accounts:,} accounts: {rate:,.0f} commands/s; plain fold {fold:,.0f} events/s")
    return {
        "case": f"what-if over {accounts:,} accounts ({summary.commands:,} commands)",
        "commands/s": rate,
        "fold events/s": fold,
        "x fold": rate / fold,
    }, rate / fold


def _timeline(workdir: Path, quick: bool) -> tuple[list[dict[str, Any]], float]:
    """The admin page's timeline is one events request per page: its server time, at the start,
    middle and end of a long account, unfiltered and filtered, against the static page itself."""
    import httpx

    from eskit import open_stores
    from eskit.transfer import CopyState, copy_store
    from tests.support.server import Server
    from tools.server_process import free_port

    pairs = 5_000 if quick else 50_000
    memory = bootstrap(Settings(store="memory://", snapshot_every=100), clock=_Clock())
    service = memory.service
    service.handle(OpenAccount("long", "premium"))
    service.handle(RegisterDevice("long", "phone", "p"))
    for _ in range(pairs):
        lic = service.handle(AcquireLicense("long", "phone", "demo-title-1")).body["license_id"]
        service.handle(ReleaseLicense("long", lic))
    url = f"sqlite:///{workdir / 'long.db'}"
    target = open_stores(url)
    copy_store(memory.stores, target.events, CopyState(str(workdir / "copy.json"), "memory://", url))
    target.close()
    memory.close()
    events = 2 + 2 * pairs
    server = Server(store=url, port=free_port(), env={"DOWNLOADS_READ_SIDE": "off"}, log_path=workdir / "s.log")
    server.start()
    rows: list[dict[str, Any]] = []
    try:
        token = server.token("support")
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as http:

            def timed(path: str, **params: Any) -> float:
                samples = []
                for _ in range(5 if quick else 20):
                    started = time.perf_counter()
                    http.get(path, params=params).raise_for_status()
                    samples.append(time.perf_counter() - started)
                return median(samples) * 1000

            static = timed("/admin")
            for label, after in (("start", 0), ("middle", events // 2), ("end", events - 50)):
                ms = timed("/v1/accounts/long/events", after=after, limit=50)
                rows.append({"case": f"timeline page at the {label} ({events:,} events)", "ms": ms})
            filtered = timed("/v1/accounts/long/events", after=events // 2, limit=50, type="LicenseIssued")
            rows.append({"case": "timeline page, filtered by type, middle", "ms": filtered})
            rows.append({"case": "the page itself (/admin, static)", "ms": static})
    finally:
        server.stop()
    worst = max(r["ms"] for r in rows[:3]) / min(r["ms"] for r in rows[:3])
    progress("timeline pages: " + ", ".join(f"{r['ms']:.1f} ms" for r in rows))
    return rows, worst


def run(quick: bool) -> dict[str, Any]:
    account_row, account_ratio = _what_if_account(quick)
    fleet_row, fleet_ratio = _what_if_fleet(quick)
    with scratch_dir() as workdir:
        timeline_rows, spread = _timeline(workdir, quick)
    rows = [account_row, fleet_row, *timeline_rows]
    goals = [
        goal_at_least("what-if on one account ≥ 0.02x the plain load's rate", account_ratio, 0.02),
        goal_at_least("what-if over many accounts ≥ 0.05x the plain load's rate", fleet_ratio, 0.05),
        goal_at_most("a timeline page at the end costs ≤ 2x one at the start (flat in history)", spread, 2.0),
    ]
    method = (
        "What-if: accounts built by DownloadsService on the memory store (acquire on the phone, a refused acquire "
        "on a second device of a basic plan, release), then re-decided under the default policy by "
        "downloads.application.whatif (merging the recorded and refused commands, running each handler again on an "
        "account in memory); the contender is the plain load of the same events (read, decoded and folded with "
        "Account.replay from the first event, no snapshot). Rates are commands re-decided per second against "
        "events loaded per second, medians "
        "of three runs (one account) or one run (the fleet). Timeline: one account's history moved into SQLite "
        "with `store copy`, served by a real `downloads serve`; the admin page renders in the browser from one "
        "`GET /v1/accounts/{a}/events?limit=50` per page (it is a static page over the JSON API), so its server "
        "time per page is that request's: medians over repeated requests at the start, the middle and the end of "
        "the history, one filtered by type, and the static page for reference. The one-account case is a worst "
        "case for the title rule: every acquire counts the account's downloads of that title in the window, and "
        "this account downloads the same title thousands of times."
    )
    return {"title": TITLE, "method": method, "rows": rows, "goals": goals}
