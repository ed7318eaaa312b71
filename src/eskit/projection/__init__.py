"""Projections: following the feed into read models, each accepted event with exactly one effect.

Two ways to follow, one per kind of feed:

* :mod:`eskit.projection.sequence`: a store with one commit order (SQLite) has
  an :class:`~eskit.ports.EventFeed`; a :class:`Projector` applies it in
  batches, each batch and the checkpoint in one atomic step.
* :mod:`eskit.projection.streams`: a store without one (Cassandra, and memory's
  stream feed) has a :class:`~eskit.ports.StreamFeed` of hinted streams; a
  :class:`StreamFollower` brings each stream up from a per-stream checkpoint,
  with effects idempotent in position.

Read models over either are built with :mod:`eskit.readmodel` (tables, a
registry of versions, a runner).
"""

from eskit.projection.sequence import (
    CANNOT_APPLY,
    MAX_SKIPPED_STREAMS,
    CheckpointMoved,
    ProjectionStatus,
    ProjectionTarget,
    Projector,
    SkippedStream,
    TooManySkipped,
    cannot_apply,
    describe_skipped,
)
from eskit.projection.streams import FollowerStats, StreamFollower, StreamTarget

__all__ = [
    "CANNOT_APPLY",
    "MAX_SKIPPED_STREAMS",
    "CheckpointMoved",
    "FollowerStats",
    "ProjectionStatus",
    "ProjectionTarget",
    "Projector",
    "SkippedStream",
    "StreamFollower",
    "StreamTarget",
    "TooManySkipped",
    "cannot_apply",
    "describe_skipped",
]
