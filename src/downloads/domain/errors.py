"""Domain errors: every refusal carries a stable code, a message and details.

Under the service's root, :class:`~downloads.errors.DownloadsError`::

    DomainError
    ├── NotFound         an account, device, license or title does not exist (HTTP 404)
    ├── Denied           a rule refuses the command (HTTP 409)
    ├── Invalid          the command names something unknown, such as a plan (HTTP 422)
    └── Gone             the account was erased: nothing about it is answered again (HTTP 410)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from downloads.errors import DownloadsError

__all__ = ["Denied", "DomainError", "Gone", "Invalid", "NotFound"]


class DomainError(DownloadsError):
    """A command was refused; nothing was changed."""

    def __init__(self, code: str, message: str, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})


class NotFound(DomainError):
    """The thing a command or query names does not exist."""


class Denied(DomainError):
    """A business rule refuses the command."""


class Invalid(DomainError):
    """The command is well-formed but names something the domain does not know."""


class Gone(DomainError):
    """The account was erased (its member forgotten): every command and query on it is refused for good."""
