"""The read side on a 3-node Cassandra cluster: what hints cost an append, projection speed, feed lag, withdrawal."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.harness import goal_at_least, goal_at_most, median, progress
from downloads.application import AcquireLicense, OpenAccount, RegisterDevice, ReleaseLicense, SetTitle
from downloads.bootstrap import Runtime, bootstrap, open_read_side
from downloads.readmodels.readside import ReadSide
from downloads.settings import Settings
from eskit.projection import StreamTarget
from eskit.stores.cassandra import CassandraEventStore
from eskit.testing.contract import new_event

NAME = "read_side_cassandra"
TITLE = "Read side on a 3-node Cassandra cluster: hint cost per append, projection throughput, feed lag, withdrawal"


def _url(hosts: str) -> str:
    return f"cassandra://{hosts}/bench_rs_{uuid.uuid4().hex[:8]}?dc=dc1&replication=3&create_schema=true"


def _wired(url: str) -> tuple[Runtime, ReadSide]:
    from eskit.privacy import MasterKey

    runtime = bootstrap(Settings(store=url, snapshot_every=0, master_key=MasterKey.generate().text()))
    read_side = open_read_side(runtime)
    assert isinstance(read_side, ReadSide)
    return runtime, read_side


def _backlog(runtime: Runtime) -> tuple[int, object]:
    assert runtime.stores.stream_feed is not None
    return runtime.stores.stream_feed.backlog()


def _hint_cost(runtime: Runtime, appends: int, rounds: int) -> tuple[dict[str, Any], float]:
    """One-event appends by 16 threads to fresh streams, with hints and without, rounds taking turns."""
    with_feed = runtime.stores.events
    assert isinstance(with_feed, CassandraEventStore)
    without = CassandraEventStore(with_feed.db, None)  # the same session, no hints: the store as it was
    rates: dict[bool, list[float]] = {True: [], False: []}
    for r in range(rounds):
        for hinted in (True, False) if r % 2 == 0 else (False, True):
            store = with_feed if hinted else without
            prefix = f"cost-{r}-{hinted}"

            def one(i: int, store: CassandraEventStore = store, prefix: str = prefix) -> int:
                return store.append(f"{prefix}-{i}", [new_event(i)], expected_version=0)

            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=16) as pool:
                list(pool.map(one, range(appends)))
            rates[hinted].append(appends / (time.perf_counter() - started))
    ratio = median([a / b for a, b in zip(rates[True], rates[False], strict=True)])
    progress(f"hint cost: appends/s with hints / without = {ratio:.2f}")
    row = {
        "case": "append, 1 event, 16 threads",
        "with feed /s": round(median(rates[True])),
        "without feed /s": round(median(rates[False])),
        "ratio": round(ratio, 3),
    }
    return row, ratio


def _fill(runtime: Runtime, accounts: int, pairs: int) -> None:
    service = runtime.service

    def one(a: int) -> None:
        account = f"acct-{a}"
        service.handle(OpenAccount(account, "standard"))
        service.handle(RegisterDevice(account, "d1", "phone"))
        for _ in range(pairs):
            license_id = str(service.handle(AcquireLicense(account, "d1", "demo-title-1")).body["license_id"])
            service.handle(ReleaseLicense(account, license_id))

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, range(accounts)))


def _throughput(runtime: Runtime, read_side: ReadSide) -> tuple[list[dict[str, Any]], float]:
    """Each projection rebuilt from every stream against reading every stream (16 at once) through the store."""
    store = runtime.stores.events
    streams = store.stream_ids(limit=100_000)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=16) as pool:
        events = sum(pool.map(lambda s: len(store.read(s)), streams))
    raw = events / (time.perf_counter() - started)
    rows = [{"case": "read every stream (16 at once)", "events": events, "events/s": round(raw), "x raw read": 1.0}]
    progress(f"raw read: {raw:,.0f} events/s over {events:,} events")
    licenses_ratio = 0.0
    for name in ("licenses_by_title", "lookup", "download_reports", "title_withdrawal"):
        started = time.perf_counter()
        read_side.rebuild(name)
        rate = events / (time.perf_counter() - started)
        rows.append({"case": f"rebuild {name}", "events": events, "events/s": round(rate), "x raw read": rate / raw})
        progress(f"rebuild {name}: {rate:,.0f} events/s ({rate / raw:.2f}x the raw read)")
        if name == "licenses_by_title":
            licenses_ratio = rate / raw
    return rows, licenses_ratio


def _lag(runtime: Runtime, read_side: ReadSide, seconds: float, rate: float) -> dict[str, Any]:
    """Acquire+release pairs at a steady pace with the read side in the background; lag = answer to applied."""
    service = runtime.service
    acks: list[tuple[float, str, int]] = []  # (answer time, stream, its version after the acquire)
    applied_at: dict[int, float] = {}
    done = threading.Event()
    lock = threading.Lock()

    licenses = read_side.runner.target("licenses_by_title")  # the version answering reads, looked up once
    assert isinstance(licenses, StreamTarget)

    def sample() -> None:
        pending = 0
        while True:
            with lock:
                waiting = acks[pending : pending + 50]
            if not waiting:
                if done.is_set():
                    return
                time.sleep(0.02)
                continue
            checkpoints = licenses.checkpoints(sorted({s for _, s, _ in waiting}))
            now = time.perf_counter()
            for _, stream, position in waiting:
                if checkpoints[stream] < position:
                    break
                applied_at[pending] = now
                pending += 1
            if done.is_set() and now - acks[-1][0] > 30:
                return
            time.sleep(0.02)

    read_side.start()
    sampler = threading.Thread(target=sample)
    sampler.start()
    started = time.perf_counter()
    n = 0
    try:
        while time.perf_counter() - started < seconds:
            account = f"acct-{n % 50}"
            stream = service.accounts.stream_id(account)
            license_id = str(service.handle(AcquireLicense(account, "d1", "demo-title-1")).body["license_id"])
            with lock:
                acks.append((time.perf_counter(), stream, runtime.stores.events.version(stream)))
            service.handle(ReleaseLicense(account, license_id))
            n += 1
            pause = started + n / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
    finally:
        done.set()
        sampler.join(timeout=60)
        read_side.stop()
    lags = sorted(applied_at[i] - acks[i][0] for i in applied_at)
    p50, p99 = lags[len(lags) // 2], lags[min(len(lags) - 1, int(len(lags) * 0.99))]
    progress(f"feed lag over {len(lags)} acquires: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms")
    return {"commands": len(acks) * 2, "applied": len(lags), "p50 ms": p50 * 1000, "p99 ms": p99 * 1000}


def _withdrawal(hosts: str, accounts: int) -> dict[str, Any]:
    runtime, read_side = _wired(_url(hosts))
    service = runtime.service
    service.set_title(SetTitle("film", "default"))

    def one(a: int) -> None:
        service.handle(OpenAccount(f"w-{a}", "standard"))
        service.handle(RegisterDevice(f"w-{a}", "d1", "phone"))
        service.handle(AcquireLicense(f"w-{a}", "d1", "film"))

    progress(f"withdrawal: {accounts:,} accounts each acquiring the title")
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, range(accounts)))
    service_rate = 3 * accounts / (time.perf_counter() - started)  # the same service's own pace, 16 threads
    while read_side.step() or _backlog(runtime)[0]:
        pass
    service.set_title(SetTitle("film", "default", downloadable=False))
    started = time.perf_counter()
    while True:
        read_side.step()
        active = read_side.title_licenses("film", status="active", after=None, limit=1, now=service.clock()).licenses
        if not active and not _backlog(runtime)[0] and read_side.pending_revocations() == 0:
            break
    took = time.perf_counter() - started
    read_side.close()
    runtime.close()
    progress(f"withdrawal of a title held by {accounts:,} accounts: {took:.1f} s")
    return {
        "accounts": accounts,
        "seconds": took,
        "revocations/s": accounts / took,
        "service commands/s": service_rate,
        "x service": accounts / took / service_rate,
    }


def run(quick: bool) -> dict[str, Any]:
    from tools.cassandra_cluster import LocalCassandraCluster

    appends, rounds = (300, 2) if quick else (2000, 4)
    accounts, pairs = (50, 10) if quick else (500, 10)
    withdrawn = 500 if quick else 10_000
    seconds = 5.0 if quick else 30.0
    cluster = LocalCassandraCluster(3)
    progress("3-node cluster: starting")
    cluster.start()
    try:
        hosts = ",".join(cluster.contact_points)
        runtime, read_side = _wired(_url(hosts))
        cost_row, cost = _hint_cost(runtime, appends, rounds)
        progress(f"filling: {accounts} accounts, {pairs} acquire+release pairs each")
        _fill(runtime, accounts, pairs)
        while read_side.step() or _backlog(runtime)[0]:
            pass
        throughput_rows, licenses_ratio = _throughput(runtime, read_side)
        lag = _lag(runtime, read_side, seconds, rate=10.0)
        read_side.close()
        runtime.close()
        withdrawal = _withdrawal(hosts, withdrawn)
    finally:
        cluster.stop(wipe=True)
    rows = [
        cost_row,
        *throughput_rows,
        {"case": "feed lag, 20 commands/s (10 acquire+release pairs)", **lag},
        {"case": f"withdraw a title held by {withdrawal['accounts']:,} accounts", **withdrawal},
    ]
    goals = [
        goal_at_least("an append with its hint ≥ 0.6x the speed of one without", cost, 0.6),
        goal_at_least("rebuilding the licenses projection ≥ 0.1x the raw read rate", licenses_ratio, 0.1),
        goal_at_most("feed lag p99 ≤ 2000 ms under steady load", lag["p99 ms"], 2000.0),
        goal_at_least(
            "a withdrawal (8 commands at once) revokes at ≥ 0.25x the service's own command rate at 16 threads",
            withdrawal["x service"],
            0.25,
        ),
    ]
    method = (
        "A local 3-node cluster (Cassandra 5.0, 512 MB heap per node, replication 3, reads and writes at "
        "LOCAL_QUORUM, appends' Paxos at LOCAL_SERIAL). Hint cost: one-event appends to fresh streams by 16 "
        f"threads, {appends} per round, {rounds} rounds taking turns between the store with its feed (a quorum "
        "hint write before each conditional append) and the same store on the same session without it; the "
        "ratio is the median over round pairs of (appends/s with / without). Throughput: a keyspace filled "
        f"through DownloadsService ({accounts} accounts, {pairs} acquire+release pairs each); the raw rate reads "
        "every stream through the event store, 16 at once; each projection is then rebuilt into a new version "
        "(a sweep of every stream, eight at once, each event's effects written and awaited, then the stream's "
        "checkpoint). Feed lag: the read side runs in the background of the same process (as in serve), "
        "acquire+release pairs at 10 pairs/s (about a third of what this cluster takes) "
        f"for {seconds:.0f} s; the lag of an acquire is the time from its "
        "answer to the moment the licenses projection's checkpoint of that account reaches the version the "
        "acquire made (sampled every 20 ms, which bounds the resolution). "
        f"Withdrawal: {withdrawn:,} accounts each holding one license of a "
        "title, the read side caught up, the title set not downloadable, then the read side stepped in the "
        "foreground until no active license of the title is left in the read model and no hint or mark is "
        "pending; every revocation is an ordinary RevokeLicense command with its own idempotency key, eight at once. "
        "The service's own rate is that of the 3 commands per account that filled the keyspace, 16 threads."
    )
    return {"title": TITLE, "method": method, "rows": rows, "goals": goals}
