"""The key ring: a stream's key from the key store (made on first need), erased on request, rewrapped on rotation."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from eskit.privacy.keys import ERASED_KEY, SECRET_BYTES, DataKey, KeyRecord, KeyStore, MasterKeys, StreamKey

__all__ = ["KeyCache", "KeyRing", "Rewrapped"]


@dataclass(frozen=True)
class Rewrapped:
    """What a rotation did: keys rewrapped by the current master key, keys it had already, tombstones met."""

    rewrapped: int
    current: int
    erased: int


class KeyRing:
    """Streams' keys over a :class:`~eskit.privacy.keys.KeyStore`, wrapped by ``masters``.

    Nothing is cached here: every :meth:`key` reads the store (one row), so an erasure is seen
    by the next read. Callers keep a key as long as it is safe to (the command runner keeps it
    with the cached aggregate, whose next command reads the stream's newest events first).
    """

    def __init__(
        self, store: KeyStore, masters: MasterKeys, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self.store = store
        self.masters = masters
        self.clock = clock

    def key(self, subject: str, *, create: bool = False) -> StreamKey:
        """The subject's key; :data:`ERASED_KEY` once erased; None when it has none (unless ``create``).

        Raises :class:`~eskit.exceptions.MasterKeyError` when the key was wrapped by a master key
        that is not configured.
        """
        record = self.store.get(subject)
        if record is None:
            if not create:
                return None
            secret = os.urandom(SECRET_BYTES)
            master_id, wrapped = self.masters.wrap(subject, secret)
            record = self.store.create(KeyRecord(subject, master_id, wrapped, self.clock()))
            if record.wrapped == wrapped:
                return DataKey(subject, secret)
        return self.open(record)

    def open(self, record: KeyRecord) -> StreamKey:
        """The key a record holds (:data:`ERASED_KEY` for a tombstone)."""
        if record.erased:
            return ERASED_KEY
        return DataKey(record.subject, self.masters.unwrap(record))

    def erase(self, subject: str, *, at: datetime | None = None) -> KeyRecord:
        """Destroy the subject's key (a tombstone stands for it); idempotent, never undone."""
        return self.store.erase(subject, at or self.clock())

    def rotate(self, *, progress: Callable[[int], None] = lambda _n: None) -> Rewrapped:
        """Rewrap every live key not wrapped by the current master key; tombstones stay as they are.

        Safe while the service runs: a key rewrapped meanwhile, or erased, is left alone.
        """
        rewrapped = current = erased = 0
        after: str | None = None
        while page := self.store.scan(after=after, limit=1000):
            for record in page:
                if record.erased:
                    erased += 1
                elif record.master_id == self.masters.current.id:
                    current += 1
                else:
                    secret = self.masters.unwrap(record)
                    master_id, wrapped = self.masters.wrap(record.subject, secret)
                    rewrapped += self.store.rewrap(record, master_id, wrapped)
            after = page[-1].subject
            progress(len(page))
        return Rewrapped(rewrapped, current, erased)


class KeyCache:
    """Keys a reader of many streams keeps (the read side, the denial log): the newest ``size`` used.

    A stream with no key is not kept (one may be made any time). A live key is kept until it is
    pushed out: a reader that decodes a stream's events in order meets its erasure as an event
    (applications record one) before anything that came after it, so a key kept past its
    erasure only opens what the reader met before the erasure anyway. Call :meth:`forget` when
    this process erases a key.
    """

    def __init__(self, ring: KeyRing, *, size: int = 10_000) -> None:
        self.ring = ring
        self.size = size
        self._keys: OrderedDict[str, StreamKey] = OrderedDict()
        self._lock = threading.Lock()

    def key(self, subject: str, *, create: bool = False) -> StreamKey:
        with self._lock:
            found = self._keys.get(subject)
            if found is not None:
                self._keys.move_to_end(subject)
                return found
        found = self.ring.key(subject, create=create)
        if found is not None:
            with self._lock:
                self._keys[subject] = found
                while len(self._keys) > self.size:
                    self._keys.popitem(last=False)
        return found

    def forget(self, subject: str) -> None:
        with self._lock:
            self._keys.pop(subject, None)
