"""Read models: tables declared once, kept by every backend, followed from the feed by one runner.

* :mod:`eskit.readmodel.tables`: :class:`Table`, the :class:`Rows` a query reads
  and the :class:`Writer` a projection writes its effects with;
* :mod:`eskit.readmodel.store`: the :class:`ReadModelStore` port (tables,
  checkpoints, the registry of versions, the runner lease) that each backend
  adapts (SQLite, Cassandra, memory), opened for a store with
  :func:`open_read_models`;
* :mod:`eskit.readmodel.runner`: the :class:`ProjectionRunner` that keeps them;
* :mod:`eskit.readmodel.sink`: a :class:`Sink`, a follower whose effect is
  events published outside the store (a relay), run by the same runner.
"""

from eskit.readmodel.runner import ProcessManager, ProjectionRunner, ProjectionSpec, RunnerSettings
from eskit.readmodel.sink import Sink
from eskit.readmodel.store import Handler, Progress, ReadModelStore, Version
from eskit.readmodel.tables import Delete, Kind, Put, Row, Rows, Table, TableSet, Writer
from eskit.stores.registry import open_read_models

__all__ = [
    "Delete",
    "Handler",
    "Kind",
    "ProcessManager",
    "Progress",
    "ProjectionRunner",
    "ProjectionSpec",
    "Put",
    "ReadModelStore",
    "Row",
    "Rows",
    "RunnerSettings",
    "Sink",
    "Table",
    "TableSet",
    "Version",
    "Writer",
    "open_read_models",
]
