"""A subscription to an application recorder's notifications: what is stored, then what comes.

It needs no thread of its own: ``next`` returns what it has read, and when it has
nothing it reads the recorder again, waiting between reads until an insert by this
process wakes it or the poll interval passes (inserts by other processes are seen then).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from eventsourcing import persistence as es

if TYPE_CHECKING:
    from eskit.interop.eventsourcing.recorders import SQLiteApplicationRecorder

__all__ = ["FeedSubscription"]

#: notifications read at a time (and so held at most) by one subscription
PAGE = 500


class FeedSubscription(es.Subscription[es.ApplicationRecorder]):
    """Notifications with ids above ``gt`` (of ``topics`` if any), in order, until stopped."""

    def __init__(
        self,
        recorder: SQLiteApplicationRecorder,
        *,
        gt: int | None,
        topics: Sequence[str],
        poll_interval: float,
    ) -> None:
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._source = recorder
        self._poll_interval = poll_interval
        self._waiting: deque[es.Notification] = deque()
        self._woken = threading.Event()
        recorder.listen(self._woken)

    def stop(self) -> None:
        super().stop()
        self._source.unlisten(self._woken)
        self._woken.set()

    def __next__(self) -> es.Notification:
        while not self._has_been_stopped:
            if self._waiting:
                return self._waiting.popleft()
            self._woken.clear()  # before reading: an insert after this read wakes the wait below
            found = self._source.select_notifications(
                start=self._last_notification_id or 0, limit=PAGE, topics=self._topics, inclusive_of_start=False
            )
            if found:
                self._last_notification_id = found[-1].id
                self._waiting.extend(found)
            else:
                self._woken.wait(timeout=self._poll_interval)
        raise StopIteration
