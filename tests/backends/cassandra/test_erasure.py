"""Erasure on a three-region cluster: no byte of the member's personal fields in any table, read at ALL.

The keyspace has one replica per region ({dc1: 1, dc2: 1, dc3: 1}). A member is erased while the
read side runs; then every row of every table of the keyspace (events, snapshots, keys, feed hints,
denials, every read model) is read at consistency ALL through a coordinator in each region, and
searched for the member's device id, device model and idempotency key. An export taken after the
erasure holds none of them either, and a copy from SQLite keeps an erasure made there.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from downloads.application import AcquireLicense, OpenAccount, RegisterDevice
from downloads.bootstrap import Runtime, bootstrap, open_read_side
from downloads.domain import DomainError, Gone
from downloads.settings import Settings
from eskit.transfer import CopyState, copy_store, export_store
from tests.downloads.factories import refusal
from tests.support.cassandra import ClusterPool, keyspace_url

pytestmark = [pytest.mark.cassandra, pytest.mark.slow, pytest.mark.cluster(nodes=3, dcs=3)]

MODEL = "Pixel-Secret-Model-42"
DEVICE = "device-secret-7"
KEY = "idem-secret-key-9"
SECRETS = [DEVICE.encode(), MODEL.encode(), KEY.encode()]


@pytest.fixture(scope="module")
def regions(cluster_pool: ClusterPool) -> Iterator[str]:
    cluster = cluster_pool.get(3, dcs=3)
    assert cluster.data_centres == ["dc1", "dc2", "dc3"]
    with keyspace_url(cluster, "erasure") as url:
        yield url


def populate(runtime: Runtime) -> None:
    service = runtime.service
    for account, device, key in (("gone", DEVICE, KEY), ("kept", "kept-device", "kept-key")):
        service.handle(OpenAccount(account, "basic"))
        service.handle(RegisterDevice(account, device, MODEL), idempotency_key=key)
        service.handle(RegisterDevice(account, f"{device}-2", "tablet"))
        service.handle(AcquireLicense(account, device, "demo-title-1"))
        with pytest.raises(DomainError):
            service.handle(AcquireLicense(account, f"{device}-2", "demo-title-2"))  # a denial


def caught_up(read_side: Any, *, rounds: int = 200) -> None:
    feed = read_side.runner.stores.stream_feed
    for _ in range(rounds):
        if read_side.step() == 0 and feed.backlog()[0] == 0:
            return
    raise AssertionError("the read side did not catch up")


def every_row_at_all(url: str, dc: str) -> bytes:
    """Every value of every row of every table of the keyspace, read at ALL through a coordinator in ``dc``."""
    from cassandra import ConsistencyLevel
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.policies import DCAwareRoundRobinPolicy
    from cassandra.query import SimpleStatement

    hosts, keyspace = url[len("cassandra://") :].split("/", 1)
    keyspace = keyspace.split("?", 1)[0]
    profile = ExecutionProfile(
        load_balancing_policy=DCAwareRoundRobinPolicy(local_dc=dc), consistency_level=ConsistencyLevel.ALL
    )
    driver = Cluster(hosts.split(","), protocol_version=5, execution_profiles={EXEC_PROFILE_DEFAULT: profile})
    found: list[bytes] = []
    try:
        session = driver.connect()
        for table in sorted(driver.metadata.keyspaces[keyspace].tables):
            query = SimpleStatement(f"SELECT * FROM {keyspace}.{table}", consistency_level=ConsistencyLevel.ALL)
            for row in session.execute(query, timeout=120):
                for value in row:
                    found.append(value if isinstance(value, bytes) else str(value).encode())
    finally:
        driver.shutdown()
    return b"\n".join(found)


def test_after_an_erasure_no_table_of_any_region_holds_the_members_personal_fields(
    regions: str, tmp_path: Path
) -> None:
    runtime = bootstrap(Settings(store=regions, snapshot_every=2))
    read_side = open_read_side(runtime)
    try:
        populate(runtime)
        caught_up(read_side)
        assert DEVICE.encode() in every_row_at_all(regions, "dc1")  # the read models hold it while the member is
        runtime.service.erase("gone", by="dpo", request_id="ticket-1")
        caught_up(read_side)
        for dc in ("dc1", "dc2", "dc3"):
            rows = every_row_at_all(regions, dc)
            assert not [s for s in SECRETS if s in rows], dc
            assert b"kept-device" in rows  # the member who stays is still in the read models
        assert refusal(lambda: runtime.service.get_account("gone"), Gone).code == "ACCOUNT_ERASED"
        archive = tmp_path / "after.jsonl.gz"
        export_store(runtime.stores, str(archive))
        raw = gzip.decompress(archive.read_bytes())
        assert not [s for s in SECRETS if s in raw]
    finally:
        read_side.close()
        runtime.close()


def test_a_copy_from_sqlite_keeps_an_erasure_made_there(cluster_pool: ClusterPool, tmp_path: Path) -> None:
    source = bootstrap(Settings(store=f"sqlite:///{tmp_path / 'downloads.db'}"))
    try:
        source.service.handle(OpenAccount("copied-gone", "basic"))
        source.service.handle(RegisterDevice("copied-gone", "copied-device", MODEL))
        source.service.handle(OpenAccount("copied-kept", "basic"))
        source.service.erase("copied-gone", by="dpo")
        with keyspace_url(cluster_pool.get(3, dcs=3), "copied") as url:
            target = bootstrap(Settings(store=url))
            try:
                copy_store(source.stores, target.stores, CopyState(str(tmp_path / "copy.json"), "sqlite", url))
                assert refusal(lambda: target.service.get_account("copied-gone"), Gone).code == "ACCOUNT_ERASED"
                assert target.service.get_account("copied-kept")["plan"] == "basic"
                assert target.stores.keys is not None
                record = target.stores.keys.get("account-copied-gone")
                assert record is not None and record.erased and record.wrapped is None
                assert b"copied-device" not in every_row_at_all(url, "dc2")
            finally:
                target.close()
    finally:
        source.close()
