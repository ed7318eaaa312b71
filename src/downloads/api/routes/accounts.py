"""Accounts: open, read (also as of a time or version), change plan, close, history."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from downloads.api.deps import Commander, IdempotencyKey, Reader, Service
from downloads.api.errors import ApiError
from downloads.api.routes._links import ACCOUNT_LINKS
from downloads.api.routes._reply import ERRORS, json, reply
from downloads.api.schemas import AccountIn, AccountOut, EventsOut, Id, PlanIn

router = APIRouter(prefix="/v1/accounts", tags=["accounts"], responses=ERRORS)


@router.post("", status_code=201, response_model=None, responses={201: {"model": AccountOut, "links": ACCOUNT_LINKS}})
def open_account(body: AccountIn, service: Service, _: Commander, key: IdempotencyKey) -> Response:
    return reply(service.open_account(body.account_id, body.plan, request_id=key))


@router.get("/{account_id}", response_model=None, responses={200: {"model": AccountOut}})
def get_account(
    account_id: Id,
    service: Service,
    _: Reader,
    as_of: Annotated[datetime | None, Query(description="ISO 8601 time: the state as it was then")] = None,
    version: Annotated[int | None, Query(ge=1, le=2**62, description="the state after this many events")] = None,
) -> Response:
    if as_of is not None and as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    if as_of is not None and as_of.year < 1971:
        raise ApiError(422, "VALIDATION_ERROR", "as_of is before any possible event", {"as_of": str(as_of)})
    return json(service.get_account(account_id, as_of=as_of, version=version))


@router.put("/{account_id}/plan", response_model=None, responses={200: {"model": AccountOut, "links": ACCOUNT_LINKS}})
def change_plan(account_id: Id, body: PlanIn, service: Service, _: Commander, key: IdempotencyKey) -> Response:
    return reply(service.change_plan(account_id, body.plan, request_id=key))


@router.post("/{account_id}/close", response_model=None, responses={200: {"model": AccountOut}})
def close_account(account_id: Id, service: Service, _: Commander, key: IdempotencyKey) -> Response:
    return reply(service.close_account(account_id, request_id=key))


@router.get("/{account_id}/events", response_model=None, responses={200: {"model": EventsOut}})
def account_events(
    account_id: Id,
    service: Service,
    _: Reader,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    return json(service.history(account_id, after=after, limit=limit))
