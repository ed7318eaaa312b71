"""Read-model tables: one declaration, kept the same way by every backend.

A read model declares its :class:`Table` s once: columns that find a row
(the *partition* key, then the *clustering* key that orders rows within a
partition) and value columns. Projections write rows with :meth:`Writer.put`
and queries read them with :class:`Rows`, in the access patterns every backend
serves cheaply (a row by key, a partition in clustering order, a whole table
page by page), so a read model is written once and runs on SQLite, Cassandra
and in memory alike.

What a backend guarantees when a projection writes (see its module):

* SQLite: every write of a batch, and the checkpoint, in one transaction;
* Cassandra and memory: every write *idempotent in position* (each cell keeps
  the write of the highest stream position), so an event applied twice has one
  effect and an older one applied late cannot undo a newer one.

Either way, a read made while applying an event sees every write made before
it (read-your-writes), and rows written by one stream's events only are what a
projection may change (rows many streams touch hold keys only).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, NamedTuple

__all__ = ["Delete", "Kind", "Put", "Row", "Rows", "Table", "TableSet", "Writer"]

#: column kinds: text, a 64-bit integer, a boolean
Kind = Literal["text", "int", "bool"]

#: a row as read: every key and value column by name (a value never written is None)
Row = dict[str, Any]


@dataclass(frozen=True)
class Table:
    """A table of a read model: rows found by ``partition``, ordered within it by ``clustering``."""

    name: str
    partition: tuple[str, ...]
    clustering: tuple[str, ...] = ()
    values: tuple[str, ...] = ()
    #: column -> kind (text when not named)
    kinds: Mapping[str, Kind] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, ...]:
        return self.partition + self.clustering

    @property
    def columns(self) -> tuple[str, ...]:
        return self.key + self.values

    def kind(self, column: str) -> Kind:
        return self.kinds.get(column, "text")

    def check(self, key: Sequence[Any], values: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` for a key of the wrong length or a column the table does not have."""
        if len(key) != len(self.key):
            raise ValueError(f"table {self.name}: a key has {len(self.key)} columns, got {len(key)}")
        unknown = set(values) - set(self.values)
        if unknown:
            raise ValueError(f"table {self.name}: no value column {', '.join(sorted(unknown))}")


_NO_VALUES: Mapping[str, Any] = MappingProxyType({})


class Put(NamedTuple):
    """A write: set ``values`` (some or all value columns) of the row at ``key``, creating the row if need be.

    (A tuple: decisions make one or more for every event.)
    """

    table: str
    key: tuple[Any, ...]
    values: Mapping[str, Any] = _NO_VALUES


class Delete(NamedTuple):
    """A write: remove the row at ``key`` (as of the event being applied: a later event may write it again)."""

    table: str
    key: tuple[Any, ...]


class Rows(abc.ABC):
    """Port: reading one projection version's tables."""

    @abc.abstractmethod
    def get(self, table: str, key: Sequence[Any]) -> Row | None:
        """The row at ``key`` (every key column given), or None."""

    @abc.abstractmethod
    def select(
        self,
        table: str,
        partition: Sequence[Any],
        *,
        after: Sequence[Any] | None = None,
        low: Any = None,
        high: Any = None,
        limit: int | None = None,
    ) -> list[Row]:
        """The rows of one partition in clustering order.

        ``after`` is a whole clustering key: only rows after it. ``low`` and ``high`` bound the first
        clustering column, both inclusive (None: unbounded). ``limit`` caps the rows returned.
        """

    @abc.abstractmethod
    def scan(self, table: str, *, after: Sequence[Any] | None = None, limit: int = 1000) -> list[Row]:
        """A page of every row of the table, in the backend's order, after the row whose whole key is ``after``.

        Walking page by page, each page after the last row of the one before, meets every row once.
        """


class Writer(Rows):
    """What a projection writes with while it applies one event (reads see every write made before them)."""

    @abc.abstractmethod
    def put(self, table: str, key: Sequence[Any], values: Mapping[str, Any] | None = None) -> None:
        """Set ``values`` of the row at ``key`` (see :class:`Put`), as an effect of the event being applied."""

    @abc.abstractmethod
    def delete(self, table: str, key: Sequence[Any]) -> None:
        """Remove the row at ``key``, as an effect of the event being applied (see :class:`Delete`)."""

    def barrier(self) -> None:
        """Every write made before stands before any made after is sent (a reader meets them in that order)."""

    def scrub(self) -> None:
        """The rows this event deleted held personal data (a member was erased): keep no copy of them.

        SQLite zeroes deleted rows anyway (``secure_delete``) and, after the batch commits, empties its
        write-ahead log; Cassandra's deletes are tombstones, whose shadowed cells leave the disks at
        compaction (see docs/privacy.md); memory keeps nothing.
        """


class TableSet(Rows):
    """One projection version's tables in a backend: made, dropped, read, and written outside the feed.

    Writes through :meth:`put` and :meth:`delete` are a process manager's own (not effects of an
    event): on Cassandra and in memory a delete wins over every write an event made, however late
    that event is applied again.
    """

    #: the tables' names start with this (``rm_<name>_v<version>_``)
    prefix: str
    tables: Mapping[str, Table]

    @abc.abstractmethod
    def create(self) -> None:
        """Create the tables (and their checkpoints); creating them again changes nothing."""

    @abc.abstractmethod
    def drop(self) -> None:
        """Remove the tables and their checkpoints."""

    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether the tables were created."""

    @abc.abstractmethod
    def put(self, table: str, key: Sequence[Any], values: Mapping[str, Any] | None = None) -> None:
        """Write a row now (a process manager's write)."""

    @abc.abstractmethod
    def delete(self, table: str, key: Sequence[Any]) -> None:
        """Remove the row at ``key`` (a process manager's write)."""
