"""The root of every error the service raises on purpose, and the tree beneath it.

The HTTP layer maps each to a status and a code in the error envelope, the CLI
to ``ErrorName: message`` and an exit status, each in one place; anything
outside this tree (and eskit's :class:`~eskit.EskitError` tree, drawn in
:mod:`eskit.exceptions`) is a bug and shows as one::

    DownloadsError
    ├── DomainError              a rule refused a command; nothing changed      downloads.domain.errors
    │   ├── NotFound             an account, device, license or title is unknown (404)
    │   ├── Denied               a business rule refuses the command (409)
    │   ├── Invalid              the command names something unknown (422)
    │   └── Gone                 the account was erased (410 ACCOUNT_ERASED)
    ├── PolicyError              a policy file or text is unreadable or wrong    downloads.adapters.policy_file
    ├── AuthError                a token is missing, forged or expired           downloads.adapters.tokens
    ├── NoMasterKey              production mode without DOWNLOADS_MASTER_KEY    downloads.adapters.master_keys
    ├── InvalidCursor            a paging cursor no page gave                    downloads.application.ports
    ├── ReportTooLarge           a report has more rows than an answer holds     downloads.readmodels.reports
    ├── RelayNotConfigured       the relay is registered, this process cannot    downloads.readmodels.relay
    ├── RelayError               the relay could not publish (it tries again)    downloads.adapters.relay
    │   ├── BadRelayUrl          a destination that is not kafka://host:port/topic
    │   ├── TopicMissing         the topic does not exist, and was not to be made
    │   └── RelayUnavailable     the broker did not answer or acknowledge in time
    ├── UsageError               the command line was called wrongly             downloads.entrypoints.cli.common
    └── ApiError                 an answer the HTTP layer gives itself           downloads.entrypoints.http.errors
"""

from __future__ import annotations

__all__ = ["DownloadsError"]


class DownloadsError(Exception):
    """Base class of every error the service raises on purpose."""
