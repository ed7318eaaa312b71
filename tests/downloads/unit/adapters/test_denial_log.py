"""The denial logs: each record is capped in size, each page in bytes, and a cursor the log never gives is refused.

Run against every backend: in memory, the SQLite file beside a store's, and (marked ``cassandra``) a
keyspace of the 1-node cluster.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from downloads.adapters.denials import (
    MAX_DENIAL_FIELD_BYTES,
    MAX_DENIAL_TEXT,
    PAGE_BYTES,
    InMemoryDenialLog,
    SQLiteDenialLog,
)
from downloads.application.ports import Denial, DenialLog, InvalidCursor

BACKENDS = [
    "memory",
    "sqlite",
    pytest.param("cassandra", marks=[pytest.mark.cassandra, pytest.mark.cluster(nodes=1)]),
]
AT = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture(params=BACKENDS)
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DenialLog]:
    if request.param == "memory":
        yield InMemoryDenialLog()
    elif request.param == "sqlite":
        sqlite_log = SQLiteDenialLog(tmp_path / "x.denials.db")
        yield sqlite_log
        sqlite_log.close()
    else:
        from downloads.bootstrap import bootstrap
        from downloads.settings import Settings
        from tests.support.cassandra import MASTER_KEY, keyspace_url

        with keyspace_url(request.getfixturevalue("cluster_pool").get(1), "denials") as url:
            runtime = bootstrap(Settings(store=url, master_key=MASTER_KEY))  # a Cassandra store is production mode
            assert runtime.service.denials is not None
            yield runtime.service.denials
            runtime.close()


def _denial(n: int, *, args: dict[str, Any] | None = None, message: str = "refused", **details: Any) -> Denial:
    return Denial(
        at=AT + timedelta(seconds=n),
        command="sync_device",
        args=args if args is not None else {"device_id": "phone", "n": n},
        code="DEVICE_NOT_FOUND",
        message=message,
        details=details,
        request_id=f"k-{n}",
        version=n,
    )


def _every(log: DenialLog, account_id: str, *, limit: int = 1000) -> tuple[list[Denial], int]:
    """Every denial of the account, page by page; and how many pages it took."""
    found: list[Denial] = []
    after, pages = None, 0
    while True:
        page, after = log.page(account_id, after=after, limit=limit)
        found.extend(page)
        pages += 1
        if after is None:
            return found, pages
        assert pages < 1000, "the cursor never ended"


def _size(denial: Denial) -> int:
    return len(orjson.dumps([denial.args, denial.details, denial.message, denial.request_id]))


def test_a_denial_with_huge_arguments_details_and_message_is_kept_capped_with_a_marker(log: DenialLog) -> None:
    ids = [f"{n:04d}-" + "x" * 123 for n in range(490)]  # what a 64 KB sync body can name
    huge = _denial(1, args={"device_id": "phone", "license_ids": ids}, message="m" * 50_000, blob="y" * 100_000)
    small = _denial(2)
    log.record("acct-1", huge)
    log.record("acct-1", small)

    (kept_small, kept_huge), _ = _every(log, "acct-1")

    assert kept_small == small  # under the caps a denial is kept exactly
    assert kept_huge.args["_truncated"] is True and kept_huge.args["bytes"] > 60_000
    assert kept_huge.details["_truncated"] is True and kept_huge.details["bytes"] > 100_000
    assert kept_huge.message.startswith("m" * 100) and kept_huge.message.endswith("(truncated, 50000 characters)")
    assert len(kept_huge.message) < MAX_DENIAL_TEXT + 40
    assert len(orjson.dumps(kept_huge.args)) <= MAX_DENIAL_FIELD_BYTES
    assert len(orjson.dumps(kept_huge.details)) <= MAX_DENIAL_FIELD_BYTES
    assert (kept_huge.code, kept_huge.command, kept_huge.version) == (huge.code, huge.command, huge.version)


def test_a_huge_denial_takes_a_few_kilobytes_in_the_sqlite_file(tmp_path: Path) -> None:
    log = SQLiteDenialLog(tmp_path / "x.denials.db")
    ids = [f"{n:04d}-" + "x" * 123 for n in range(490)]
    log.record("acct-1", _denial(1, args={"license_ids": ids}, message="m" * 50_000, blob="é" * 100_000))
    log.close()

    with sqlite3.connect(tmp_path / "x.denials.db") as conn:
        (stored,) = conn.execute("SELECT sum(length(body)) FROM denials").fetchone()

    assert stored < 8 * 1024, stored  # 63 KB of ids and 150 KB of text arrived


def test_a_denials_page_stops_at_its_byte_budget_and_gives_next(log: DenialLog) -> None:
    fat = {f"field-{n}": "z" * 64 for n in range(25)}  # about 2 KB of details each, under the cap
    for n in range(300):
        log.record("acct-1", _denial(n, **fat))

    first, following = log.page("acct-1", after=None, limit=1000)
    every, pages = _every(log, "acct-1")

    assert following is not None and 0 < len(first) < 300
    assert sum(_size(d) for d in first) <= PAGE_BYTES
    assert [d.version for d in every] == list(range(299, -1, -1))  # all of them, newest first, once each
    assert pages > 1


def test_a_page_holds_at_least_one_denial_and_at_most_limit(log: DenialLog) -> None:
    for n in range(5):
        log.record("acct-1", _denial(n))

    page, following = log.page("acct-1", after=None, limit=2)

    assert [d.version for d in page] == [4, 3] and following is not None
    assert [d.version for d in _every(log, "acct-1", limit=2)[0]] == [4, 3, 2, 1, 0]


@pytest.mark.parametrize("cursor", ["abc", "-", "12abc", "zz-zz", "00000000-0000-4000-8000-000000000000x"])
def test_a_cursor_the_log_never_gives_is_refused(log: DenialLog, cursor: str) -> None:
    log.record("acct-1", _denial(1))

    with pytest.raises(InvalidCursor):
        log.page("acct-1", after=cursor, limit=10)
