"""Forgetting members: erasing 10,000 members on SQLite, and the read side's catch-up after it."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.harness import progress, scratch_dir

NAME = "erasure"
TITLE = "Erasing members on SQLite: members per second, and the read side catching up after them"

THREADS = 8


def _catch_up(read_side: Any) -> float:
    """Step the read side until every projection is at the feed's head; the seconds it took."""
    started = time.perf_counter()
    while True:
        read_side.step()
        if all(s.lag_events == 0 for s in read_side.status()) and read_side.pending_revocations() == 0:
            return time.perf_counter() - started


def run(quick: bool) -> dict[str, Any]:
    from downloads.application import AcquireLicense, OpenAccount, RegisterDevice
    from downloads.bootstrap import bootstrap, open_read_side
    from downloads.settings import Settings

    members = 1_000 if quick else 10_000
    with scratch_dir() as workdir:
        runtime = bootstrap(Settings(store=f"sqlite:///{workdir / 'downloads.db'}", snapshot_every=100))
        read_side = open_read_side(runtime)
        service = runtime.service
        try:

            def member(n: int) -> None:
                account = f"member-{n:06d}"
                service.handle(OpenAccount(account, "premium"))
                service.handle(RegisterDevice(account, f"{account}-phone", "phone"), idempotency_key=f"{account}-k")
                service.handle(AcquireLicense(account, f"{account}-phone", "demo-title-1"))

            built = time.perf_counter()
            with ThreadPoolExecutor(THREADS) as pool:
                list(pool.map(member, range(members)))
            built = time.perf_counter() - built
            progress(f"{members:,} members built in {built:.1f} s")
            first_catch_up = _catch_up(read_side)
            events = read_side.status()[0].position

            def erase(n: int) -> None:
                service.erase(f"member-{n:06d}", by="bench")

            started = time.perf_counter()
            with ThreadPoolExecutor(THREADS) as pool:
                list(pool.map(erase, range(members)))
            erasing = time.perf_counter() - started
            progress(f"{members:,} members erased in {erasing:.1f} s")
            after = _catch_up(read_side)
            lookup = read_side.lookup("device_id", "member-000000-phone").accounts
            report = read_side.report(granularity="day", studio=None, title_id=None, start=None, end=None).rows
        finally:
            read_side.close()
            runtime.close()
    if lookup or sum(r.downloads for r in report) != members:
        raise RuntimeError(f"after the erasures the lookup found {lookup} and the report counts {report}")
    rows = [
        {
            "members": f"{members:,}",
            "erased/s": members / erasing,
            "ms per erasure (of one thread)": erasing / members * THREADS * 1e3,
            "read side catch-up after them (s)": after,
            "erasures applied/s by the read side": members / after,
            "read side first build (s)": first_catch_up,
            "events the read side followed before": f"{events:,}",
        }
    ]
    method = (
        f"A fresh SQLite store (the service as `bootstrap` wires it, snapshots every 100 events): {members:,} "
        f"members, each opened, a device registered under an idempotency key, a license acquired ({THREADS} "
        f"threads, not timed), and the read side caught up (its five read models). Then {THREADS} threads erase "
        f"every member with `DownloadsService.erase` (timed: erased/s): per member, `AccountErased` by a "
        f"conditional append (group commit), the key's tombstone written with `secure_delete` and the store's "
        f"log checkpointed, the snapshots and denials removed. Then the read side catches up on the erasures "
        f"(timed, stepping its runner in the foreground): every read model drops the member's rows (the lookup, "
        f"a title's and a device's licenses, the withdrawal manager's) with `secure_delete`, the report keeps "
        f"its counts; checked after: the lookup finds no erased member, the report still counts {members:,} "
        f"downloads."
    )
    return {"title": TITLE, "method": method, "rows": rows, "goals": []}
