"""The relay's errors (the tree is drawn in :mod:`downloads.errors`)."""

from __future__ import annotations

from downloads.errors import DownloadsError

__all__ = ["BadRelayUrl", "RelayError", "RelayUnavailable", "TopicMissing"]


class RelayError(DownloadsError):
    """The relay could not publish; nothing counts as published, and it tries again after a backoff."""


class BadRelayUrl(RelayError):
    """A relay destination that is not ``kafka://host:port[,host:port...]/topic``."""


class TopicMissing(RelayError):
    """The topic does not exist on the broker, and creating it was not asked for."""


class RelayUnavailable(RelayError):
    """The broker did not answer, or did not acknowledge every event in time."""
