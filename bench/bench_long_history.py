"""A long history on one account: a command's CPU at the 30,000th command against the first, and what-if over it."""

from __future__ import annotations

import inspect
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.harness import goal_at_most, median, progress, scratch_dir
from downloads.application import AcquireLicense, OpenAccount, RegisterDevice, ReleaseLicense
from downloads.domain import CatalogTitle, Policy, Studio

NAME = "long_history"
TITLE = "Long histories: a command's cost and what-if against the account's history length (SQLite)"

TARGET = 2.0
ACCOUNT = "long"
DEVICE = "d1"
TITLE_ID = "film"
#: a studio limit every acquire counts against (so the per-title window is counted each time) but never reaches
LIMIT = 1_000_000


def policy() -> Policy:
    return Policy(
        studios={"default": Studio(), "counted": Studio(max_downloads_per_title=LIMIT)},
        titles={TITLE_ID: CatalogTitle("counted")},
    )


def other_policy() -> Policy:
    """What-if's policy: the same rules with another window, so every acquire is re-decided and counted."""
    return Policy(
        window=timedelta(days=30),
        studios={"default": Studio(), "counted": Studio(max_downloads_per_title=LIMIT)},
        titles={TITLE_ID: CatalogTitle("counted")},
    )


class Service:
    """``DownloadsService`` from ``bootstrap(Settings(store="sqlite:///file"))``, as ``downloads serve`` wires it."""

    def __init__(self, path: Path) -> None:
        from downloads.bootstrap import bootstrap
        from downloads.settings import Settings

        self.app = bootstrap(Settings(store=f"sqlite:///{path}"), policy=policy())
        self.service = self.app.service

    def open(self, account_id: str) -> None:
        self.service.handle(OpenAccount(account_id, "standard"))
        self.service.handle(RegisterDevice(account_id, DEVICE, "bench-phone"))

    def pair(self, account_id: str) -> tuple[float, float]:
        """An acquire then a release on ``account_id``; the CPU seconds of each."""
        c0 = time.process_time()
        reply = self.service.handle(AcquireLicense(account_id, DEVICE, TITLE_ID))
        c1 = time.process_time()
        if not reply.created:
            raise RuntimeError(f"acquire on {account_id} issued nothing: {reply.body}")
        body = self.service.handle(ReleaseLicense(account_id, str(reply.body["license_id"]))).body
        c2 = time.process_time()
        if body["status"] != "released":
            raise RuntimeError(f"release on {account_id} answered {body}")
        return c1 - c0, c2 - c1

    def what_if(self, account_id: str) -> tuple[float, float, int, int]:
        """What-if over the account under :func:`other_policy`: wall and CPU seconds, commands, decisions changed."""
        from downloads.application.whatif import WhatIf

        # The per-request bound on what-if's work (WHAT_IF_TOO_LARGE), where the code has one, is lifted:
        # this measures the work such a bound is set against.
        unbounded = {"bounded": False} if "bounded" in inspect.signature(WhatIf.account).parameters else {}
        w0, c0 = time.perf_counter(), time.process_time()
        engine = WhatIf(self.service, other_policy())
        result = engine.account(account_id, **unbounded)
        engine.present(result)
        return time.perf_counter() - w0, time.process_time() - c0, result.commands, result.changed

    def cold_load(self, account_id: str) -> float:
        """CPU seconds of ``GET /v1/accounts/{a}``'s work: a load from the store (snapshot and events after it)."""
        c0 = time.process_time()
        self.service.get_account(account_id)
        return time.process_time() - c0

    def snapshots(self, account_id: str) -> tuple[int, int]:
        """The version and size of the account's newest snapshot."""
        snapshots = self.app.stores.snapshots
        found = snapshots.load(self.service.accounts.stream_id(account_id)) if snapshots else None
        return (found.version, len(found.state)) if found else (0, 0)

    def close(self) -> None:
        self.app.close()


def run(quick: bool) -> dict[str, Any]:
    commands = 4_000 if quick else 30_000
    window = 400 if quick else 1_000
    early = 6_000 if not quick else 800  # what-if is also timed here, to compare per command
    paired = window // 2
    cpu: list[float] = []  # per command of the long account, in order
    checkpoints: dict[int, dict[str, Any]] = {}
    with scratch_dir() as workdir:
        side = Service(workdir / "long.db")
        try:
            side.open("warm-up")  # imports and first-use work, outside the measured commands
            for _ in range(50):
                side.pair("warm-up")
            side.open(ACCOUNT)
            started = time.perf_counter()
            while len(cpu) < commands:
                cpu.extend(side.pair(ACCOUNT))
                if len(cpu) in (early, commands):
                    wall, what_if_cpu, redecided, changed = side.what_if(ACCOUNT)
                    checkpoints[len(cpu)] = {
                        "what_if_s": wall,
                        "what_if_cpu_s": what_if_cpu,
                        "redecided": redecided,
                        "changed": changed,
                        "cold_load_ms": median([side.cold_load(ACCOUNT) for _ in range(5)]) * 1e3,
                        "snapshot": side.snapshots(ACCOUNT),
                    }
                if len(cpu) % 5_000 == 0:
                    progress(f"{len(cpu):,} commands in {time.perf_counter() - started:.0f} s")
            # Side by side: the long account against a fresh one, pair by pair, alternating who goes first.
            side.open("fresh")
            long_cpu: list[float] = []
            fresh_cpu: list[float] = []
            for n in range(paired):
                order = (ACCOUNT, "fresh") if n % 2 == 0 else ("fresh", ACCOUNT)
                for account in order:
                    (long_cpu if account == ACCOUNT else fresh_cpu).extend(side.pair(account))
        finally:
            side.close()

    first = sum(cpu[:window]) / window
    last = sum(cpu[-window:]) / window
    growth = last / first
    side_by_side = sum(long_cpu) / sum(fresh_cpu)
    at_early, at_end = checkpoints[early], checkpoints[commands]
    what_if_growth = (at_end["what_if_cpu_s"] / at_end["redecided"]) / (
        at_early["what_if_cpu_s"] / at_early["redecided"]
    )
    rows = [
        {
            "measure": f"CPU µs per command, commands 1-{window:,} of the account",
            "value": first * 1e6,
        },
        {
            "measure": f"CPU µs per command, commands {commands - window + 1:,}-{commands:,}",
            "value": last * 1e6,
        },
        {"measure": "last / first", "value": growth},
        {
            "measure": f"side by side after {commands:,}: CPU of the long account / a fresh one ({2 * paired} "
            f"commands each)",
            "value": side_by_side,
        },
    ]
    for at, point in ((early, at_early), (commands, at_end)):
        rows += [
            {
                "measure": f"what-if over {point['redecided']:,} commands (at {at:,}): wall s",
                "value": point["what_if_s"],
            },
            {
                "measure": f"what-if at {at:,}: CPU µs per command re-decided",
                "value": point["what_if_cpu_s"] / point["redecided"] * 1e6,
            },
            {"measure": f"a cold load (GET account) at {at:,}: CPU ms", "value": point["cold_load_ms"]},
            {
                "measure": f"newest snapshot at {at:,}: version, bytes",
                "value": f"{point['snapshot'][0]:,}, {point['snapshot'][1]:,}",
            },
        ]
    goals = [
        goal_at_most(
            f"CPU per command of the last {window:,} ≤ {TARGET}x the first {window:,} ({commands:,} commands)",
            growth,
            TARGET,
        ),
        goal_at_most(f"side by side, the {commands:,}-command account ≤ {TARGET}x a fresh one", side_by_side, TARGET),
        goal_at_most(
            f"what-if CPU per command re-decided at {commands:,} ≤ {TARGET}x at {early:,}", what_if_growth, TARGET
        ),
    ]
    method = (
        f"One account on a fresh SQLite file, `DownloadsService` as `bootstrap(Settings(store='sqlite:///file'))` "
        f"wires it (snapshots by the default policy, the aggregate cache on), with a policy whose studio limits "
        f"the title to {LIMIT:,} downloads a year, so every acquire counts the title's window and none is refused. "
        f"After a warm-up on another account, {commands // 2:,} acquire/release pairs on the account "
        f"({commands:,} commands, {commands // 2:,} licenses it keeps); the CPU "
        f"time (process time) of each command is noted. The goal compares the mean of the last {window:,} "
        f"commands with the first {window:,}. Then, side by side in the same file, {paired} pairs on the long "
        f"account and {paired} on a freshly opened one, alternating who goes first: the ratio of their CPU "
        f"totals. At {early:,} and at {commands:,} commands: what-if over the whole account under a policy "
        f"with a 30-day window (every command re-decided, the answer presented; nothing changes, as the limit is "
        f"never reached), and the median CPU time of 5 loads of the account as a query does it (snapshot and "
        f"the events after it)."
    )
    notes = [
        f"What-if over {at_end['redecided']:,} commands took {at_end['what_if_s']:.2f} s "
        f"({at_end['what_if_cpu_s'] / at_end['redecided'] * 1e6:.0f} µs of CPU per command re-decided, against "
        f"{at_early['what_if_cpu_s'] / at_early['redecided'] * 1e6:.0f} at {early:,}): linear in the commands "
        f"re-decided, so a per-request bound on them bounds its time (10,000 commands: about "
        f"{at_end['what_if_cpu_s'] / at_end['redecided'] * 10_000:.1f} s of CPU here).",
        "A cold load stays linear in history: the account keeps every license it ever had (an old license id "
        "must still answer), and loading decodes them all from the snapshot. Commands do not pay it: the "
        "service keeps loaded accounts in its cache and snapshots are spaced by their size "
        "(docs/operations.md).",
    ]
    return {"title": TITLE, "method": method, "rows": rows, "goals": goals, "notes": notes}
