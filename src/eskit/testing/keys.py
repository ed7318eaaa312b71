"""The contract every key store must meet (:class:`~eskit.privacy.KeyStore`), run against each backend.

A backend's test module subclasses :class:`KeyStoreContract` and provides
:meth:`~KeyStoreContract.make_key_store`.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from eskit.privacy import KeyRecord, KeyStore

__all__ = ["T0", "KeyStoreContract", "live_record"]

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def live_record(subject: str, *, at: datetime = T0, master_id: str = "m1") -> KeyRecord:
    """A live key record with random wrapped bytes (the store never looks inside them)."""
    return KeyRecord(subject, master_id, os.urandom(60), at)


def _subject() -> str:
    return f"stream-{uuid.uuid4().hex}"


class KeyStoreContract:
    """Behaviour every :class:`~eskit.privacy.KeyStore` adapter must show."""

    #: how many threads race to make one subject's key
    racers: int = 8

    def make_key_store(self) -> KeyStore:
        raise NotImplementedError

    def release_key_store(self, store: KeyStore) -> None:
        """Called after each test; backends that share one connection per module override it."""
        store.close()

    @pytest.fixture
    def keys(self) -> Iterator[KeyStore]:
        store = self.make_key_store()
        try:
            yield store
        finally:
            self.release_key_store(store)

    def test_a_subject_without_a_key_has_no_record(self, keys: KeyStore) -> None:
        assert keys.get(_subject()) is None

    def test_the_first_key_made_stays_and_every_later_maker_gets_it(self, keys: KeyStore) -> None:
        subject = _subject()
        first = keys.create(live_record(subject))
        again = keys.create(live_record(subject, at=T0 + timedelta(seconds=1)))
        assert first.wrapped == again.wrapped and first.master_id == "m1" and not first.erased
        assert keys.get(subject) == first

    def test_writers_racing_to_make_a_key_all_get_the_same_one(self, keys: KeyStore) -> None:
        subject = _subject()
        got: list[KeyRecord] = []
        barrier = threading.Barrier(self.racers)

        def make() -> None:
            barrier.wait(timeout=30)
            got.append(keys.create(live_record(subject)))

        threads = [threading.Thread(target=make) for _ in range(self.racers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(got) == self.racers
        assert len({record.wrapped for record in got}) == 1

    def test_an_erased_key_leaves_a_tombstone_that_no_maker_replaces(self, keys: KeyStore) -> None:
        subject = _subject()
        keys.create(live_record(subject))
        erased = keys.erase(subject, T0 + timedelta(hours=1))
        assert erased.erased and erased.wrapped is None and erased.master_id is None
        assert erased.erased_at == T0 + timedelta(hours=1) and erased.created_at == T0
        assert keys.get(subject) == erased
        assert keys.create(live_record(subject)) == erased

    def test_erasing_again_keeps_the_first_erasure(self, keys: KeyStore) -> None:
        subject = _subject()
        keys.create(live_record(subject))
        first = keys.erase(subject, T0 + timedelta(hours=1))
        assert keys.erase(subject, T0 + timedelta(hours=2)) == first

    def test_erasing_a_subject_that_never_had_a_key_still_leaves_a_tombstone(self, keys: KeyStore) -> None:
        subject = _subject()
        erased = keys.erase(subject, T0)
        assert erased.erased and keys.get(subject) == erased
        assert keys.create(live_record(subject)).erased

    def test_a_key_is_rewrapped_only_as_it_was_read(self, keys: KeyStore) -> None:
        subject = _subject()
        old = keys.create(live_record(subject))
        assert keys.rewrap(old, "m2", b"w" * 60)
        assert keys.get(subject) == KeyRecord(subject, "m2", b"w" * 60, T0)
        assert not keys.rewrap(old, "m3", b"x" * 60)  # rewrapped since it was read
        current = keys.get(subject)
        assert current is not None
        keys.erase(subject, T0)
        assert not keys.rewrap(current, "m3", b"x" * 60)  # erased since
        assert keys.get(subject) is not None and keys.get(subject).erased  # type: ignore[union-attr]

    def test_a_scan_page_by_page_meets_every_record_once(self, keys: KeyStore) -> None:
        made = {_subject() for _ in range(25)}
        for subject in made:
            keys.create(live_record(subject))
        seen: list[str] = []
        after = None
        while page := keys.scan(after=after, limit=7):
            seen += [record.subject for record in page]
            after = page[-1].subject
        assert len(seen) == len(set(seen))
        assert made <= set(seen)

    def test_a_load_never_brings_back_an_erased_key_and_always_brings_an_erasure(self, keys: KeyStore) -> None:
        live, erased, fresh, later = _subject(), _subject(), _subject(), _subject()
        keys.create(live_record(live))
        keys.create(live_record(erased))
        kept = keys.erase(erased, T0 + timedelta(hours=1))
        keys.create(live_record(later))
        incoming = [
            live_record(live),  # another key for a live subject: the one here stays
            live_record(erased),  # a key for an erased subject: never
            live_record(fresh),  # a key for a subject with none: lands
            KeyRecord.tombstone(later, T0 + timedelta(hours=2), created_at=T0),  # an erasure: lands over the key
            KeyRecord.tombstone(erased, T0 + timedelta(hours=3), created_at=T0),  # erased already: the first stays
        ]
        assert keys.load(incoming) == 2
        assert keys.get(live) is not None and keys.get(live).wrapped != incoming[0].wrapped  # type: ignore[union-attr]
        assert keys.get(erased) == kept
        assert keys.get(fresh) == incoming[2]
        after = keys.get(later)
        assert after is not None and after.erased and after.wrapped is None
