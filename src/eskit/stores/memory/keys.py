"""Streams' keys in memory, beside the in-memory events."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from datetime import datetime

from eskit.privacy.keys import KeyRecord, KeyStore

__all__ = ["InMemoryKeyStore"]


class InMemoryKeyStore(KeyStore):
    """Key records in a dict, behind one lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[str, KeyRecord] = {}

    def get(self, subject: str) -> KeyRecord | None:
        with self._lock:
            return self._records.get(subject)

    def create(self, record: KeyRecord) -> KeyRecord:
        with self._lock:
            return self._records.setdefault(record.subject, record)

    def erase(self, subject: str, at: datetime) -> KeyRecord:
        with self._lock:
            found = self._records.get(subject)
            if found is not None and found.erased:
                return found
            tombstone = KeyRecord.tombstone(subject, at, created_at=found.created_at if found else None)
            self._records[subject] = tombstone
            return tombstone

    def rewrap(self, old: KeyRecord, master_id: str, wrapped: bytes) -> bool:
        with self._lock:
            found = self._records.get(old.subject)
            if found is None or found.erased or found.wrapped != old.wrapped:
                return False
            self._records[old.subject] = dataclasses.replace(found, master_id=master_id, wrapped=wrapped)
            return True

    def scan(self, *, after: str | None = None, limit: int = 1000) -> list[KeyRecord]:
        with self._lock:
            subjects = sorted(s for s in self._records if after is None or s > after)[:limit]
            return [self._records[s] for s in subjects]

    def load(self, records: Sequence[KeyRecord]) -> int:
        changed = 0
        with self._lock:
            for record in records:
                found = self._records.get(record.subject)
                if record.erased:
                    if found is not None and found.erased:
                        continue
                    self._records[record.subject] = record
                    changed += 1
                elif found is None:
                    self._records[record.subject] = record
                    changed += 1
        return changed
