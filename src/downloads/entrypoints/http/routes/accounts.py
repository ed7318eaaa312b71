"""Accounts: open, read (also as of a time or version), change plan, close, history, denials, what-if, erase."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import Field
from starlette.responses import Response

from downloads.adapters.policy_file import PolicyError, policy_from_text
from downloads.application import ChangePlan, CloseAccount, OpenAccount
from downloads.application.presenters import AccountOut, DenialsOut, ErasedOut, EventsOut, WhatIfOut, iso
from downloads.application.whatif import WhatIf, WhatIfLimits
from downloads.entrypoints.http.deps import Admin, Commander, IdempotencyKey, Reader, RequestId, Service, Support
from downloads.entrypoints.http.errors import ApiError
from downloads.entrypoints.http.routes._links import ACCOUNT_LINKS
from downloads.entrypoints.http.routes._reply import ERRORS, Body, command
from downloads.entrypoints.http.schemas import AccountIn, Id, PlanIn, WhatIfIn

__all__ = [
    "account_denials",
    "account_events",
    "change_plan",
    "close_account",
    "erase_account",
    "get_account",
    "open_account",
    "router",
    "what_if",
]

router = APIRouter(prefix="/v1/accounts", tags=["accounts"], responses=ERRORS)


@router.post("", status_code=201, response_model=AccountOut, responses={201: {"links": ACCOUNT_LINKS}})
async def open_account(
    body: AccountIn, service: Service, _: Commander, key: IdempotencyKey, response: Response
) -> Body:
    return await command(service, OpenAccount(body.account_id, body.plan), key, response)


@router.get("/{account_id}", response_model=AccountOut)
def get_account(
    account_id: Id,
    service: Service,
    _: Reader,
    as_of: Annotated[datetime | None, Query(description="ISO 8601 time: the state as it was then")] = None,
    version: Annotated[int | None, Query(ge=1, le=2**62, description="the state after this many events")] = None,
) -> Body:
    if as_of is not None and as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    if as_of is not None and as_of.year < 1971:
        raise ApiError(422, "VALIDATION_ERROR", "as_of is before any possible event", {"as_of": str(as_of)})
    return service.get_account(account_id, as_of=as_of, version=version)


@router.put("/{account_id}/plan", response_model=AccountOut, responses={200: {"links": ACCOUNT_LINKS}})
async def change_plan(
    account_id: Id, body: PlanIn, service: Service, _: Commander, key: IdempotencyKey, response: Response
) -> Body:
    return await command(service, ChangePlan(account_id, body.plan), key, response)


@router.post("/{account_id}/close", response_model=AccountOut)
async def close_account(
    account_id: Id, service: Service, _: Commander, key: IdempotencyKey, response: Response
) -> Body:
    return await command(service, CloseAccount(account_id), key, response)


@router.get("/{account_id}/events", response_model=EventsOut)
def account_events(
    account_id: Id,
    service: Service,
    _: Reader,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    type: Annotated[
        list[Annotated[str, Field(max_length=64, pattern=r"^[A-Za-z]+$")]] | None,
        Query(max_length=20, description="only events of these types (repeatable)"),
    ] = None,
    since: Annotated[datetime | None, Query(alias="from", description="only events recorded at or after")] = None,
    until: Annotated[datetime | None, Query(alias="to", description="only events recorded at or before")] = None,
) -> Body:
    since, until = _utc(since), _utc(until)
    types = frozenset(type) if type else None
    return service.history(account_id, after=after, limit=limit, types=types, since=since, until=until)


def _utc(when: datetime | None) -> datetime | None:
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if when.year < 1971 or when.year > 9998:
        raise ApiError(422, "VALIDATION_ERROR", "the time is out of range", {"time": str(when)})
    return when.astimezone(UTC)


@router.get("/{account_id}/denials", response_model=DenialsOut)
def account_denials(
    account_id: Id,
    service: Service,
    _: Reader,
    after: Annotated[str | None, Query(max_length=64, pattern=r"^[0-9a-f-]+$", description="cursor from next")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Body:
    """The account's refused commands, newest first: when, what was asked, the code and why."""
    return service.list_denials(account_id, after=after, limit=limit)


@router.post("/{account_id}/what-if", response_model=WhatIfOut)
def what_if(account_id: Id, body: WhatIfIn, service: Service, _: Support, request: Request) -> Body:
    """The account's recorded commands re-decided under another policy: what would change. Writes nothing.

    Bounded per request (422 ``WHAT_IF_TOO_LARGE`` past it, with a ``to`` that fits)."""
    try:
        policy = policy_from_text(body.policy)
    except PolicyError as exc:
        raise ApiError(422, "INVALID_POLICY", str(exc), {}) from exc
    settings = request.app.state.context.settings
    limits = WhatIfLimits(commands=settings.what_if_max_commands, answer_bytes=settings.what_if_max_bytes)
    engine = WhatIf(service, policy, limits=limits)
    return engine.present(engine.account(account_id, since=body.since, until=body.until))


@router.post("/{account_id}/erase", response_model=ErasedOut)
def erase_account(account_id: Id, service: Service, admin: Admin, request_id: RequestId) -> Body:
    """Forget the account's member (admins): their key is destroyed, so every personal field of the account
    is unreadable for good, and every route of the account answers 410 ``ACCOUNT_ERASED`` from now on.

    Idempotent: erasing again answers the first erasure's time (and finishes one that was interrupted).
    Recorded without personal data: when, the admin token's subject, and ``X-Request-Id`` (else the
    ``Idempotency-Key``) when the request sends one."""
    done = service.erase(account_id, by=admin.subject or "admin", request_id=request_id)
    return {"account_id": done["account_id"], "erased_at": iso(done["erased_at"])}
