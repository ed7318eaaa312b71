"""The read side in a Cassandra cluster: a withdrawal over 1,000 accounts through a killed runner, and rebuilds."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from downloads.application import AcquireLicense, OpenAccount, RegisterDevice, SetTitle, SyncDevice
from downloads.bootstrap import Runtime, bootstrap
from downloads.readmodels import withdrawal
from downloads.readmodels.readside import ReadSide
from downloads.settings import Settings
from eskit.projection import StreamTarget
from eskit.readmodel import RunnerSettings
from eskit.stores.cassandra import CassandraReadModels
from tests.support.cassandra import ClusterPool, keyspace_url

pytestmark = [pytest.mark.cassandra, pytest.mark.cluster(nodes=1)]

ACCOUNTS = 1000
TITLE = "film-withdrawn"


def wired(url: str, *, lease: float = 10.0) -> tuple[Runtime, ReadSide]:
    runtime = bootstrap(Settings(store=url, snapshot_every=0))
    codec, settings = runtime.service.accounts.codec, RunnerSettings(lease_ttl=lease)
    return runtime, ReadSide(runtime.stores, codec, runtime.policy, runtime.service, settings=settings)


def licenses(read_side: ReadSide, status: str) -> list[object]:
    return list(read_side.title_licenses(TITLE, status=status, after=None, limit=1000, now=datetime.now(UTC)).licenses)


def revocations(runtime: Runtime, accounts: list[str]) -> Counter[str]:
    """License id -> how many LicenseRevoked events name it, read from every account's stream."""
    counts: Counter[str] = Counter()
    for account in accounts:
        for stored in runtime.stores.events.read(runtime.service.accounts.stream_id(account)):
            if stored.type_name == "LicenseRevoked":
                event = runtime.service.accounts.decode(stored).event
                counts[event.license_id] += 1  # type: ignore[attr-defined]
    return counts


def revoked_count(runtime: Runtime, accounts: list[str]) -> int:
    return sum(revocations(runtime, accounts).values())


def _run_until_killed(url: str) -> None:
    """A read-side runner with a short lease, until it is killed."""
    _runtime, read_side = wired(url, lease=1.0)
    while True:
        read_side.step()


def settle(read_side: ReadSide, *, rounds: int = 200) -> None:
    """Run rounds until the feed is empty and nothing is left to send."""
    feed = read_side.runner.stores.stream_feed
    assert feed is not None
    for _ in range(rounds):
        if read_side.step() == 0 and feed.backlog()[0] == 0 and read_side.pending_revocations() == 0:
            return
    raise AssertionError("the read side did not settle")


@pytest.fixture
def url(cluster_pool: ClusterPool) -> Iterator[str]:
    with keyspace_url(cluster_pool.get(1), "readside") as made:
        yield made


@pytest.mark.slow
def test_a_withdrawal_over_a_thousand_accounts_revokes_each_license_once_through_a_killed_runner(url: str) -> None:
    runtime, read_side = wired(url)
    service = runtime.service
    service.set_title(SetTitle(TITLE, "default"))
    held: dict[str, str] = {}
    for n in range(ACCOUNTS):
        account = f"acct-{n:04d}"
        service.handle(OpenAccount(account, "standard"))
        service.handle(RegisterDevice(account, "d1", "phone"))
        held[account] = str(service.handle(AcquireLicense(account, "d1", TITLE)).body["license_id"])
    settle(read_side)
    assert len(licenses(read_side, "active")) == ACCOUNTS
    service.set_title(SetTitle(TITLE, "default", downloadable=False))
    read_side.close()

    # A runner that dies part-way: SIGKILLed after it revoked some.
    accounts = list(held)
    victim = multiprocessing.get_context("spawn").Process(target=_run_until_killed, args=(url,))
    victim.start()
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and revoked_count(runtime, accounts[:100]) < 10:
            time.sleep(0.2)
        assert victim.pid is not None and victim.is_alive()
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(timeout=30)
    finally:
        if victim.is_alive():
            victim.kill()
            victim.join(timeout=30)
    part_way = revoked_count(runtime, accounts)
    assert 10 <= part_way < ACCOUNTS

    # The next runner takes the lease once the dead one's has run out, and finishes the job.
    time.sleep(1.2)
    _, resumed = wired(url)
    settle(resumed)
    counts = revocations(runtime, accounts)
    assert counts == Counter({license_id: 1 for license_id in held.values()})  # every one, exactly once
    for account in ("acct-0000", "acct-0500", "acct-0999"):
        synced = service.handle(SyncDevice(account, "d1", (held[account],)))
        assert synced.body["revoked"] == [held[account]]
    assert len(licenses(resumed, "revoked")) == ACCOUNTS

    # A re-run of the process manager from the start (a rebuilt version, every license marked
    # again) sends its commands again and changes nothing.
    assert resumed.rebuild(withdrawal.NAME) == 2
    (manager,) = resumed.runner.managers
    tables = resumed.runner.tables(withdrawal.NAME)
    assert tables.prefix == "rm_title_withdrawal_v2_"
    assert manager.act(tables) == 0  # nothing is active any more: nothing to send
    tables.put("marks", (0, TITLE, "again", 1))  # as if withdrawn again: every license is scanned once more
    settle(resumed)
    assert revocations(runtime, accounts) == counts
    resumed.close()
    runtime.close()


def test_a_rebuilt_projection_holds_what_the_old_one_held_and_answers_reads_once_switched(url: str) -> None:
    runtime, read_side = wired(url)
    service = runtime.service
    try:
        service.set_title(SetTitle("film-r", "default"))
        for n in range(30):
            account = f"r-{n:02d}"
            service.handle(OpenAccount(account, "standard"))
            service.handle(RegisterDevice(account, "d1", "phone"))
            service.handle(AcquireLicense(account, "d1", "film-r"), idempotency_key=f"key-{n}")
        settle(read_side)
        now = datetime.now(UTC)
        before = read_side.title_licenses("film-r", status="active", after=None, limit=100, now=now).licenses
        keys_before = read_side.every_key(after=None, limit=1000)
        assert len(before) == 30 and len(keys_before) == 90  # a device, a license and a key per account

        progress: list[int] = []
        version = read_side.rebuild("licenses_by_title", progress=lambda done, _total: progress.append(done))
        assert version == 2 and progress
        assert read_side.runner.tables("licenses_by_title").prefix == "rm_licenses_by_title_v2_"
        after = read_side.title_licenses("film-r", status="active", after=None, limit=100, now=now).licenses
        assert after == before
        models = read_side.store
        assert isinstance(models, CassandraReadModels)
        assert not models.has_table("rm_licenses_by_title_v1_licenses")  # the old one is dropped
        # the new version follows the feed like the old one did
        service.handle(OpenAccount("r-late", "standard"))
        service.handle(RegisterDevice("r-late", "d1", "phone"))
        service.handle(AcquireLicense("r-late", "d1", "film-r"))
        settle(read_side)
        late = read_side.title_licenses("film-r", status="active", after=None, limit=100, now=datetime.now(UTC))
        assert len(late.licenses) == 31
        statuses = read_side.status()
        assert {s.name for s in statuses} == set(read_side.names)
        assert [s.status for s in statuses] == ["caught_up"] * len(read_side.names)
    finally:
        read_side.close()
        runtime.close()


def test_streams_that_cannot_be_applied_are_skipped_named_and_hold_up_no_other_account(url: str) -> None:
    runtime, read_side = wired(url)
    service = runtime.service
    try:
        service.set_title(SetTitle("film-s", "default"))
        for n in range(6):
            account = f"s-{n}"
            service.handle(OpenAccount(account, "standard"))
            service.handle(RegisterDevice(account, "d1", "phone"))
            service.handle(AcquireLicense(account, "d1", "film-s"))
        # s-1's device event no longer decodes; s-2's license event has a time no store encodes.
        db = runtime.stores.events.db  # type: ignore[attr-defined]
        ks = db.settings.keyspace
        db.session.execute(
            f"UPDATE {ks}.events SET data = 0x7b22 WHERE stream_id = 'account-s-1' AND bucket = 0 AND position = 2"
        )
        db.session.execute(
            f"UPDATE {ks}.events SET recorded_at = 253402300800000000"
            " WHERE stream_id = 'account-s-2' AND bucket = 0 AND position = 3"
        )
        settle(read_side)  # the broken streams settle too: they are skipped, not retried every round
        page = read_side.title_licenses("film-s", status="active", after=None, limit=100, now=datetime.now(UTC))
        assert {row.account_id for row in page.licenses} == {"s-0", "s-3", "s-4", "s-5"}
        for status in read_side.status():
            assert status.status == "failing" and status.skipped_streams == 2, status
            assert status.error is not None and "account-s-1@2" in status.error and "account-s-2@3" in status.error

        # Events appended later to a skipped stream are skipped too; a rebuild finishes (it skips them again).
        service.handle(RegisterDevice("s-1", "d2", "tablet"))
        settle(read_side)
        lookup = {s.name: s for s in read_side.status()}["lookup"]
        assert lookup.skipped_events >= 3
        assert read_side.rebuild("lookup") == 2
        assert {s.name: s for s in read_side.status()}["lookup"].skipped_streams == 2
    finally:
        read_side.close()
        runtime.close()


def test_a_stream_target_answers_its_known_checkpoints_without_a_read_and_forgets_them_when_its_lease_is_taken_anew(
    url: str,
) -> None:
    runtime, read_side = wired(url, lease=1.0)
    try:
        service = runtime.service
        service.handle(OpenAccount("a-1", "standard"))
        service.handle(RegisterDevice("a-1", "d1", "phone"))
        service.handle(AcquireLicense("a-1", "d1", "demo-title-1"))
        settle(read_side)
        stream = service.accounts.stream_id("a-1")
        head = runtime.stores.events.version(stream)
        runner = read_side.runner
        target = runner.target(withdrawal.NAME)
        assert isinstance(target, StreamTarget)
        assert target.checkpoints([stream]) == {stream: head}

        models = target.tables.models  # type: ignore[attr-defined]
        session = models.db.session
        sent: list[object] = []

        def listener(future: object) -> None:
            sent.append(future)

        session.add_request_init_listener(listener)
        try:
            assert target.checkpoints([stream]) == {stream: head}
            assert sent == [], "a checkpoint the target wrote was read again"
            # Another runner, holding the lease meanwhile, moved the checkpoint further.
            table = target.tables.checkpoints_table.format(ks=models.ks)  # type: ignore[attr-defined]
            session.execute(
                f"INSERT INTO {table} (stream_id, position) VALUES (%s, %s) USING TIMESTAMP %s",
                (stream, head + 5, head + 5),
            )
            time.sleep(1.2)  # this runner's lease ran out
            other = runner.store.acquire_lease(runner.lease, "another-runner", ttl=0.2)
            assert other is not None
            runner.store.release_lease(runner.lease, "another-runner")
            read_side.step()  # takes the lease anew
            assert runner.token is not None and runner.token > other
            assert target.checkpoints([stream]) == {stream: head + 5}
        finally:
            session.remove_request_init_listener(listener)
    finally:
        read_side.close()
        runtime.close()


def test_a_stream_target_whose_runner_holds_no_lease_reads_its_checkpoints_from_the_store_every_time(
    url: str,
) -> None:
    runtime, read_side = wired(url)
    other_runtime, reader = wired(url)  # never steps: it holds no lease, like a status page or a check
    try:
        service = runtime.service
        service.handle(OpenAccount("r-1", "standard"))
        service.handle(RegisterDevice("r-1", "d1", "phone"))
        settle(read_side)
        stream = service.accounts.stream_id("r-1")
        head = runtime.stores.events.version(stream)
        target = reader.runner.target(withdrawal.NAME)
        assert isinstance(target, StreamTarget)
        assert target.checkpoints([stream]) == {stream: head}
        service.handle(AcquireLicense("r-1", "d1", "demo-title-1"))
        settle(read_side)  # the runner holding the lease moves the checkpoint on
        assert target.checkpoints([stream]) == {stream: head + 1}
    finally:
        reader.close()
        other_runtime.close()
        read_side.close()
        runtime.close()
