"""What commands know of the catalog: each title's info from memory, kept fresh in the background.

Reading a title before every acquire, play or renew costs a store round trip per command (two on
Cassandra: the title's snapshot and its events). The cache answers from memory instead, and a
title used after ``ttl`` seconds is read again in the background while the command goes on with
what the cache holds. A title held longer than ``max_age`` is read before the command.

How stale can a cached title be, and why that is safe:

- A process's own catalog changes (``PUT /v1/titles/...``) are in its cache at once.
- A change made elsewhere is seen within ``ttl`` plus one read while the title is in use, and
  never later than ``max_age``. A cross-aggregate decision was never linearizable anyway: without
  the cache, a title change committed between a command's read of the title and its append is
  missed the same way; the cache widens that window from one command to about a second.
- Only titles that can be licensed are cached. A title that is absent or not downloadable is read
  for every command, so a refusal because of the title is never the cache's doing; and a refusal
  decided with cached titles is decided again on the titles as stored (the service does that), so
  a stale studio cannot refuse either.
- What staleness can do is grant: a license issued or renewed just after its title was withdrawn.
  The withdrawal process manager revokes exactly those (it revokes any license of a withdrawn
  title issued or renewed after the withdrawal, see ``docs/read-side.md``), and its revocations
  are decided on the title as stored (``RevokeLicense`` never uses the cache), so no license stays
  active on a withdrawn title.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from downloads.domain import TitleInfo

log = logging.getLogger(__name__)

__all__ = ["TitleCache"]


@dataclass(frozen=True)
class _Entry:
    info: TitleInfo
    at: float  # when it was read (monotonic)


class TitleCache:
    """Titles that can be licensed, by id, read through ``load`` and refreshed after ``ttl`` seconds.

    ``ttl`` 0 turns the cache off (every call reads). At most ``size`` titles are held, least
    recently used dropped first, so memory stays bounded whatever titles commands name.
    """

    def __init__(
        self,
        load: Callable[[str], TitleInfo | None],
        *,
        ttl: float = 1.0,
        max_age: float = 10.0,
        size: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self.ttl = ttl
        self.max_age = max(max_age, ttl)
        self.size = size
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._refreshing: set[str] = set()
        self._pool: ThreadPoolExecutor | None = None

    def get(self, title_id: str) -> TitleInfo | None:
        """The title's info as the cache holds it (see the module docstring), or as read now."""
        if self.ttl <= 0:
            return self._load(title_id)
        now = self._clock()
        with self._lock:
            entry = self._entries.get(title_id)
            if entry is not None:
                self._entries.move_to_end(title_id)
        if entry is None or now - entry.at > self.max_age:
            return self._read(title_id)
        if now - entry.at > self.ttl:
            self._refresh_later(title_id)
        return entry.info

    def put(self, title_id: str, info: TitleInfo | None) -> None:
        """Hold what this process just made the title (or forget it when it cannot be licensed)."""
        with self._lock:
            self._store(title_id, info, self._clock())

    def _read(self, title_id: str) -> TitleInfo | None:
        started = self._clock()
        info = self._load(title_id)
        with self._lock:
            self._store(title_id, info, started)
        return info

    def _store(self, title_id: str, info: TitleInfo | None, at: float) -> None:
        held = self._entries.get(title_id)
        if held is not None and held.at > at:
            return  # a read that started before the entry was put (by this process's own change) is older
        if info is None or not info.downloadable:  # only titles that can be licensed are held
            self._entries.pop(title_id, None)
            return
        self._entries[title_id] = _Entry(info, at)
        self._entries.move_to_end(title_id)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def _refresh_later(self, title_id: str) -> None:
        with self._lock:
            if title_id in self._refreshing:
                return
            self._refreshing.add(title_id)
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="downloads-catalog")
            pool = self._pool
        pool.submit(self._refresh, title_id)

    def _refresh(self, title_id: str) -> None:
        try:
            self._read(title_id)
        except Exception as exc:  # the entry stays until max_age; the next use tries again
            log.warning("title %s not refreshed: %s", title_id, exc)
        finally:
            with self._lock:
                self._refreshing.discard(title_id)

    def close(self) -> None:
        """Stop the background reader (waiting for a read in flight)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
