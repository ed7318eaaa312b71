"""Titles for commands come from memory: what a stale title may and may not do.

Two service processes share one SQLite file (``restart`` bootstraps a second one); the second
keeps titles in its cache for a minute, so any change the first makes is stale there. A stale
title may grant (the withdrawal process manager revokes such licenses); it never refuses, and a
revocation never trusts it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from downloads.application import AcquireLicense, ReleaseLicense, RevokeLicense
from downloads.application.catalog import TitleCache
from downloads.domain import Denied, TitleInfo
from tests.downloads.factories import Downloads, refusal, start_service


@pytest.fixture
def two_processes(tmp_path: Path) -> Iterator[tuple[Downloads, Downloads]]:
    first = start_service(store=f"sqlite:///{tmp_path / 'catalog.db'}")
    second = first.restart()
    second.service.catalog.ttl = second.service.catalog.max_age = 60.0
    try:
        yield first, second
    finally:
        first.close()


def test_a_refusal_is_decided_on_the_title_as_stored_not_on_a_stale_studio(
    two_processes: tuple[Downloads, Downloads],
) -> None:
    first, second = two_processes
    first.title("film", studio="restricted")  # at most 3 downloads of a title per window
    account = first.account("acct-1", devices=["phone"])
    for _ in range(3):  # the second process caches "restricted"
        license_id = second.service.handle(AcquireLicense(account, "phone", "film")).body["license_id"]
        second.service.handle(ReleaseLicense(account, license_id))
    assert refusal(lambda: second.service.handle(AcquireLicense(account, "phone", "film")), Denied).code == (
        "TITLE_YEARLY_LIMIT_REACHED"
    )
    first.title("film", studio="default")  # no limit any more

    granted = second.service.handle(AcquireLicense(account, "phone", "film"))

    assert granted.created  # the cached "restricted" would have refused it: decided again on the stored title


def test_a_revocation_reads_the_title_as_stored(two_processes: tuple[Downloads, Downloads]) -> None:
    first, second = two_processes
    first.title("film")
    account = first.account("acct-1", devices=["phone"])
    license_id = second.service.handle(AcquireLicense(account, "phone", "film")).body["license_id"]  # cached
    first.title("film", downloadable=False)

    revoked = second.service.handle(RevokeLicense(account, license_id, "withdrawn"))

    assert revoked.body["status"] == "revoked"  # the cached "downloadable" would have left it active


def test_a_process_sees_its_own_catalog_change_at_once(two_processes: tuple[Downloads, Downloads]) -> None:
    _, second = two_processes
    second.title("film")
    account = second.account("acct-1", devices=["phone"])
    second.service.handle(ReleaseLicense(account, second.license(account, "phone", "film")))  # "film" cached
    second.title("film", downloadable=False)

    error = refusal(lambda: second.service.handle(AcquireLicense(account, "phone", "film")), Denied)
    assert error.code == "TITLE_NOT_DOWNLOADABLE"


def test_a_title_that_cannot_be_licensed_is_never_cached(two_processes: tuple[Downloads, Downloads]) -> None:
    first, second = two_processes
    first.title("film", downloadable=False)
    account = first.account("acct-1", devices=["phone"])
    refusal(lambda: second.service.handle(AcquireLicense(account, "phone", "film")), Denied)
    first.title("film", downloadable=True)

    assert second.service.handle(AcquireLicense(account, "phone", "film")).created


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_cache_reads_a_title_again_in_the_background_after_ttl_and_before_the_command_after_max_age() -> None:
    clock, reads, released = Clock(), [], threading.Event()
    stored = {"film": TitleInfo("film", "default")}

    def load(title_id: str) -> TitleInfo | None:
        reads.append(title_id)
        if len(reads) > 1:
            assert released.wait(5)
        return stored.get(title_id)

    cache = TitleCache(load, ttl=1.0, max_age=10.0, clock=clock)
    try:
        assert cache.get("film") == TitleInfo("film", "default")
        assert cache.get("film") is not None and reads == ["film"]  # fresh: no read
        stored["film"] = TitleInfo("film", "restricted")
        clock.now = 2.0
        assert cache.get("film") == TitleInfo("film", "default")  # stale: answered at once, read behind
        released.set()
        cache.close()  # waits for the background read
        assert cache.get("film") == TitleInfo("film", "restricted")
        clock.now = 20.0
        stored["film"] = TitleInfo("film", "short")
        assert cache.get("film") == TitleInfo("film", "short")  # too old: read before answering
    finally:
        cache.close()


def test_the_cache_holds_at_most_size_titles() -> None:
    cache = TitleCache(lambda title_id: TitleInfo(title_id, "default"), size=3)
    for n in range(10):
        cache.get(f"t{n}")
    assert list(cache._entries) == ["t7", "t8", "t9"]
