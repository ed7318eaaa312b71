"""The read side's routes: a title's licenses, support's lookup, the studios' reports, projections' status."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from downloads.application.presenters import (
    DeviceLicensesOut,
    LookupOut,
    ProjectionsOut,
    ReportOut,
    TitleLicensesOut,
    as_body,
    iso,
)
from downloads.entrypoints.http.deps import Admin, Support
from downloads.entrypoints.http.errors import ApiError
from downloads.entrypoints.http.routes._reply import ERRORS, Body
from downloads.entrypoints.http.schemas import ID_PATTERN, Id
from downloads.readmodels.ports import ReadModels
from downloads.readmodels.reports import ReportTooLarge

__all__ = ["device_licenses", "downloads_report", "lookup", "projections", "router", "title_licenses"]

router = APIRouter(tags=["read side"], responses=ERRORS)

CURSOR_PATTERN = r"^[A-Za-z0-9._:-]{1,128}/[A-Za-z0-9._:-]{1,128}$"


async def _read_side(request: Request) -> ReadModels:
    read_side: ReadModels | None = getattr(request.app.state, "read_side", None)
    if read_side is None:
        raise ApiError(503, "READ_SIDE_UNAVAILABLE", "this deployment's store has no read models yet")
    return read_side


async def _current_read_side(request: Request) -> ReadModels:
    """The read side, for routes that answer from its rows: not while they are another store's."""
    read_side = await _read_side(request)
    if not read_side.belongs():
        raise ApiError(
            503,
            "READ_SIDE_UNAVAILABLE",
            "the read models were built from another store; they are being built again from this one",
        )
    return read_side


ReadSide = Annotated[ReadModels, Depends(_current_read_side)]
Statuses = Annotated[ReadModels, Depends(_read_side)]


@router.get("/v1/titles/{title_id}/licenses", response_model=TitleLicensesOut)
def title_licenses(
    title_id: Id,
    read: ReadSide,
    _: Support,
    status: Annotated[Literal["active", "expired", "released", "revoked"], Query()] = "active",
    after: Annotated[str | None, Query(pattern=CURSOR_PATTERN, description="the `next` of the page before")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> Body:
    account, _slash, license_id = (after or "").partition("/")
    cursor = (account, license_id) if after else None
    return as_body(read.title_licenses(title_id, status=status, after=cursor, limit=limit, now=datetime.now(UTC)))


@router.get("/v1/devices/{device_id}/licenses", response_model=DeviceLicensesOut)
def device_licenses(device_id: Id, read: ReadSide, _: Support) -> Body:
    """The active licenses a device id holds, in any account (support's question when a member calls)."""
    return as_body(read.device_licenses(device_id))


@router.get("/v1/lookup", response_model=LookupOut)
def lookup(
    read: ReadSide,
    _: Support,
    device_id: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=128)] = None,
    license_id: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=128)] = None,
    idempotency_key: Annotated[str | None, Query(max_length=200, pattern=r"^[\x21-\x7e]+$")] = None,
) -> Body:
    given = {
        k: v
        for k, v in {"device_id": device_id, "license_id": license_id, "idempotency_key": idempotency_key}.items()
        if v
    }
    if len(given) != 1:
        raise ApiError(
            422,
            "VALIDATION_ERROR",
            "give exactly one of device_id, license_id, idempotency_key",
            {"given": sorted(given)},
        )
    ((kind, key),) = given.items()
    return as_body(read.lookup(kind, key))


@router.get("/v1/reports/downloads", response_model=ReportOut)
def downloads_report(
    read: ReadSide,
    _: Admin,
    studio: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    title_id: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=128)] = None,
    start: Annotated[date | None, Query(alias="from", description="first day, inclusive")] = None,
    end: Annotated[date | None, Query(alias="to", description="last day, inclusive")] = None,
    granularity: Annotated[Literal["day", "month"], Query()] = "day",
) -> Body:
    if start is not None and end is not None and start > end:
        raise ApiError(422, "VALIDATION_ERROR", "from is after to", {"from": str(start), "to": str(end)})
    try:
        found = read.report(
            granularity=granularity,
            studio=studio,
            title_id=title_id,
            start=start.isoformat() if start else None,
            end=end.isoformat() if end else None,
        )
    except ReportTooLarge as exc:
        raise ApiError(
            422,
            "VALIDATION_ERROR",
            f"{exc}: narrow it by studio, title_id, from and to, or ask for granularity=month",
            {"limit": exc.limit},
        ) from exc
    return as_body(found)


@router.get("/v1/projections", response_model=ProjectionsOut)
def projections(read: Statuses, _: Support) -> Body:
    found: list[dict[str, Any]] = [
        {
            "name": s.name,
            "status": s.status,
            "position": s.position,
            "lag_events": s.lag_events,
            "lag_seconds": round(s.lag_seconds, 3),
            "updated_at": iso(s.updated_at),
            "error": s.error,
            "skipped_streams": s.skipped_streams,
            "skipped_events": s.skipped_events,
        }
        for s in read.status()
    ]
    return {"projections": found}
