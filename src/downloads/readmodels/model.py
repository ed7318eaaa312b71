"""What a read model of the service is: tables, and a decision per event that yields their effects.

Each read model module (:mod:`~downloads.readmodels.licenses`,
:mod:`~downloads.readmodels.lookup`, :mod:`~downloads.readmodels.reports`,
:mod:`~downloads.readmodels.withdrawal`) declares its tables once and one
*decision*: a generator that, given an event of an account or title stream
(:class:`Seen`) and what the read model knows (its own rows, read through
:class:`~eskit.readmodel.Rows`), yields the writes the event calls for
(:class:`~eskit.readmodel.Put`, :class:`~eskit.readmodel.Delete`) and, where order matters to a reader,
:data:`BARRIER`. The decisions are the same on every store; eskit's backends
only keep the writes, each with its own argument for applying every event once
(see :mod:`eskit.readmodel.tables`). Decisions may depend on a stream's own
order, never on the order of different streams, which the feed of a store
without one commit order does not give.

Erased members (docs/privacy.md): the :class:`Decoder` opens each account's
events with its member's key, so once a member is erased their events decode
with every personal field :data:`~eskit.ERASED` (``Seen.erased``). Every read
model that keeps a member's rows writes nothing for such events (a rebuild
never writes an erased member's rows) and, on ``AccountErased`` (always the
account's last event), deletes the rows it wrote for the account before, then
yields :data:`SCRUB` so the backend keeps no copy of them. The reports keep
their counts: they hold no personal field.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from downloads.domain.events import LicenseIssued
from eskit import DomainEvent, EventCodec, EventMetadata, OperationalError, StoredEvent
from eskit.privacy import KeyCache
from eskit.readmodel import Delete, ProjectionSpec, Put, Rows, Table, Writer

__all__ = [
    "ACCOUNT_PREFIX",
    "BARRIER",
    "SCRUB",
    "TITLES_OF",
    "TITLE_PREFIX",
    "Barrier",
    "Decide",
    "Decoder",
    "Facts",
    "ReadModel",
    "Scrub",
    "Seen",
    "licenses_of",
    "remember_title",
    "title_of",
]

ACCOUNT_PREFIX = "account-"
TITLE_PREFIX = "title-"


class Barrier:
    """Every write yielded before stands before any yielded after (a reader meets them in that order)."""


BARRIER: Final = Barrier()


class Scrub:
    """The rows this event deleted held an erased member's data: the backend must keep no copy of them."""


SCRUB: Final = Scrub()


class Seen(NamedTuple):
    """An event of an account or title stream, as a decision sees it (a tuple: made for every event)."""

    stream_id: str
    #: the account the stream is of; None for a title stream
    account_id: str | None
    #: the event's position in its stream (what Cassandra writes its effects at)
    position: int
    event: DomainEvent
    meta: EventMetadata
    #: facts learnt from events already seen, that never change (a license's title and device)
    facts: Facts

    @property
    def erased(self) -> bool:
        """Whether the account's member was erased: every personal field of the event reads as ERASED."""
        return self.meta.erased


#: a read model's decision: the event and what the read model knows, to the writes it calls for
Decide = Callable[[Seen, Rows], Iterator[Put | Delete | Barrier | Scrub]]


@dataclass(frozen=True)
class ReadModel:
    """A read model: its name, tables and decision; ``layout`` goes up whenever the tables change."""

    name: str
    tables: tuple[Table, ...]
    decide: Decide
    layout: int = 1

    def spec(self, decoder: Decoder) -> ProjectionSpec:
        """The projection that keeps this read model, decoding through ``decoder``."""

        def handle(stream_id: str, stored: StoredEvent, writer: Writer) -> None:
            seen = decoder.seen(stream_id, stored)
            if seen is None:
                return
            for effect in self.decide(seen, writer):
                if isinstance(effect, Put):
                    writer.put(effect.table, effect.key, effect.values)
                elif isinstance(effect, Delete):
                    writer.delete(effect.table, effect.key)
                elif isinstance(effect, Scrub):
                    writer.scrub()
                else:
                    writer.barrier()

        return ProjectionSpec(self.name, self.tables, handle, self.layout)


class Facts:
    """What events say once and for all, kept in memory to spare read models a read: each license's title and device.

    A license's title and device are fixed by its ``LicenseIssued`` and never change, so a fact
    learnt from an event is true whether or not the batch that met it commits: keeping it is
    always safe, and forgetting it (the newest ``keep`` are kept) only costs a read.
    """

    def __init__(self, *, keep: int = 200_000) -> None:
        self.keep = keep
        self._licenses: OrderedDict[tuple[str, str], tuple[str, str]] = OrderedDict()

    def license(self, account_id: str, license_id: str) -> tuple[str, str] | None:
        """``(title_id, device_id)`` of a license seen issued, if still kept."""
        return self._licenses.get((account_id, license_id))

    def issued(self, account_id: str, license_id: str, title_id: str, device_id: str) -> None:
        licenses = self._licenses
        licenses[(account_id, license_id)] = (title_id, device_id)
        if len(licenses) > self.keep:
            with contextlib.suppress(KeyError):  # another thread took the oldest first
                licenses.popitem(last=False)


class Decoder:
    """Decodes each stored event once for every read model (the newest few thousand are kept), account
    events with their member's key from ``keys``.

    Read models' targets may decode from several threads at once: two threads decoding the same
    event both get a right answer, so the cache takes no lock (``keys`` has its own).

    Once any event of a stream was decoded erased, no event of that stream is served from the cache as
    decoded before the erasure: a read model behind another would otherwise see the member half clear
    (an issue decoded erased, so nothing written, then a renewal served clear, written, and never
    deleted, since the erasure's event finds a member's rows through what their issue wrote). With
    ``keys`` a stream's decodes only go from clear to erased, never back, so each read model meets a
    member clear, then erased. The streams met erased are kept as many as the events (``keep``): an
    event cached before a stream was met erased is pushed out by the ``keep`` decodes that come after,
    each of which is counted as the newest, before the stream is forgotten.
    """

    def __init__(self, codec: EventCodec, *, keys: KeyCache | None = None, keep: int = 4096) -> None:
        self.codec, self.keys, self.keep = codec, keys, keep
        self.facts = Facts()
        self._decoded: OrderedDict[object, Seen] = OrderedDict()
        self._erased: OrderedDict[str, None] = OrderedDict()

    def seen(self, stream_id: str, stored: StoredEvent) -> Seen | None:
        """The event as decisions see it; None for a stream that is not an account's or a title's."""
        if stream_id.startswith(ACCOUNT_PREFIX):
            account_id: str | None = stream_id[len(ACCOUNT_PREFIX) :]
        elif stream_id.startswith(TITLE_PREFIX):
            account_id = None
        else:
            return None
        decoded = self._decoded
        found = decoded.get(stored.event_id)
        if (
            found is not None
            and found.position == stored.position
            and found.stream_id == stream_id
            and (found.meta.erased or stream_id not in self._erased)
        ):
            return found
        stream_key = self.keys.key(stream_id) if self.keys is not None and self.codec.seals(stream_id) else None
        event, meta = self.codec.decode(stored, key=stream_key)
        found = Seen(stream_id, account_id, stored.position, event, meta, self.facts)
        if account_id is not None and isinstance(event, LicenseIssued):
            self.facts.issued(account_id, event.license_id, event.title_id, event.device_id)
        if meta.erased:
            _newest(self._erased, stream_id, None, self.keep)
        _newest(decoded, stored.event_id, found, self.keep)
        return found


def _newest(kept: OrderedDict[Any, Any], key: object, value: object, keep: int) -> None:
    """Keep ``value`` under ``key`` as the newest of ``kept``, which holds ``keep`` at most."""
    kept.pop(key, None)
    kept[key] = value
    if len(kept) > keep:
        with contextlib.suppress(KeyError):  # another thread took the oldest first
            kept.popitem(last=False)


#: what a read model that follows licenses past their issue keeps: each license's title
TITLES_OF = Table("titles_of", partition=("account_id",), clustering=("license_id",), values=("title_id",))


def remember_title(seen: Seen, license_id: str, title_id: str) -> Put:
    """The write that remembers a license's title (its ``LicenseIssued``'s), for the license's later events."""
    assert seen.account_id is not None
    return Put(TITLES_OF.name, (seen.account_id, license_id), {"title_id": title_id})


def licenses_of(rows: Rows, seen: Seen) -> list[tuple[str, str]]:
    """The ``(license_id, title_id)`` the read model's ``titles_of`` holds for the event's account."""
    assert seen.account_id is not None
    return [(str(r["license_id"]), str(r["title_id"])) for r in rows.select(TITLES_OF.name, (seen.account_id,))]


def title_of(rows: Rows, seen: Seen, license_id: str) -> str:
    """The title of one of the account's licenses, from the read model's ``titles_of`` table.

    Raises :class:`~eskit.exceptions.OperationalError` when it is not there: the license's
    ``LicenseIssued`` comes first in the stream, so it was applied before; a stream that lacks it
    is damaged, and stays unapplied (with the error in the status) rather than half applied.
    """
    assert seen.account_id is not None
    known = seen.facts.license(seen.account_id, license_id)
    if known is not None:
        return known[0]
    row = rows.get(TITLES_OF.name, (seen.account_id, license_id))
    if row is None or row["title_id"] is None:
        raise OperationalError(f"{seen.stream_id}@{seen.position}: license {license_id!r} was never issued here")
    return str(row["title_id"])
