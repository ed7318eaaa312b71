"""Idempotency: a command sent again under its ``Idempotency-Key`` gets its first answer and writes nothing.

In one place: the command's fingerprint, the key record written once with the
command's first event (a command that changed nothing writes one ``RequestAnswered``
event to hold it), the check of a key the account already remembers, and reading
the first answer back. The account's index of keys is the domain's
(:mod:`downloads.domain.requests`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import uuid
from datetime import datetime, timedelta
from typing import Any

import orjson

from downloads.application.commands import AccountCommand
from downloads.application.presenters import jsonable
from downloads.domain import AcceptedRequest, Account, Invalid
from downloads.domain.requests import reply_record
from eskit import EventMetadata, Repository

__all__ = ["command_metadata", "fingerprint", "original_body", "remembered"]


def fingerprint(command: AccountCommand) -> str:
    """What identifies a command and its arguments, whatever key it is sent under."""
    identity = [command.name, command.account_id, command.arguments()]
    return hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()


def remembered(account: Account, key: str, command: AccountCommand, now: datetime) -> AcceptedRequest | None:
    """The account's record of ``key`` if it accepted it before (and keeps it at ``now``).

    Raises :class:`~downloads.domain.Invalid` ``IDEMPOTENCY_KEY_REUSED`` when the
    key was used for another command or other arguments.
    """
    prior = account.accepted(key, now)
    if prior is not None and prior.fingerprint != fingerprint(command):
        raise Invalid(
            "IDEMPOTENCY_KEY_REUSED", "this Idempotency-Key was used for a different request", {"idempotency_key": key}
        )
    return prior


def command_metadata(
    command: AccountCommand,
    *,
    arguments: dict[str, Any],
    key: str | None,
    at: datetime,
    events: int,
    body: dict[str, Any],
    created: bool,
    keep: timedelta,
) -> list[EventMetadata]:
    """The metadata of a command's ``events`` events.

    Every event names the command; the first also holds ``arguments`` (its recorded arguments, what
    a re-decision under another policy needs) and, under a key, the key record with what the
    command keeps of its reply.
    """
    each = EventMetadata(recorded_at=at, request_id=key or f"auto-{uuid.uuid4().hex}", command=command.name)
    arguments = jsonable(arguments)
    if key is None:
        return [dataclasses.replace(each, extra={"args": arguments})] + [each] * (events - 1)
    record = {
        "fingerprint": fingerprint(command),
        "created": created,
        "body": command.reply_to_keep(body),
        "keep_seconds": keep.total_seconds(),
    }
    return [dataclasses.replace(each, extra={"args": arguments, "reply": record})] + [each] * (events - 1)


def original_body(accounts: Repository[Account], command: AccountCommand, prior: AcceptedRequest) -> dict[str, Any]:
    """The answer a remembered command gave, read from the event that holds its key record.

    ``command`` is the retry, which has the original's fingerprint: what the record left out of the
    reply is rebuilt from it.
    """
    found = accounts.history(command.account_id, gt=prior.position - 1, lte=prior.position)
    record = reply_record(found[0].metadata.extra) if found else None
    if record is None:  # the index points at the record it was built from: this is a bug
        raise RuntimeError(f"no key record at position {prior.position} of account {command.account_id!r}")
    return command.reply_kept(record.get("body") or {})
