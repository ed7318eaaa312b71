"""Licenses: acquire, list, read, play, renew, release; per-title download counts."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from starlette.responses import Response

from downloads.api.deps import Commander, IdempotencyKey, Reader, Service
from downloads.api.routes._links import LICENSE_LINKS
from downloads.api.routes._reply import ERRORS, json, reply
from downloads.api.schemas import ID_PATTERN, DownloadsOut, Id, LicenseIn, LicenseOut, LicensesOut

router = APIRouter(prefix="/v1/accounts/{account_id}", tags=["licenses"], responses=ERRORS)


@router.post(
    "/licenses",
    status_code=201,
    response_model=None,
    responses={201: {"model": LicenseOut, "links": LICENSE_LINKS}, 200: {"model": LicenseOut, "links": LICENSE_LINKS}},
)
def acquire_license(account_id: Id, body: LicenseIn, service: Service, _: Commander, key: IdempotencyKey) -> Response:
    return reply(service.acquire_license(account_id, body.device_id, body.title_id, request_id=key))


@router.get("/licenses", response_model=None, responses={200: {"model": LicensesOut}})
def list_licenses(
    account_id: Id,
    service: Service,
    _: Reader,
    status: Annotated[Literal["active", "expired", "released", "revoked"] | None, Query()] = None,
    device_id: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=128)] = None,
    after: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=128, description="a license id")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> Response:
    licenses, following = service.license_page(account_id, status=status, device_id=device_id, after=after, limit=limit)
    return json({"licenses": licenses, "next": following})


@router.get("/licenses/{license_id}", response_model=None, responses={200: {"model": LicenseOut}})
def get_license(account_id: Id, license_id: Id, service: Service, _: Reader) -> Response:
    return json(service.get_license(account_id, license_id))


@router.post(
    "/licenses/{license_id}/play", response_model=None, responses={200: {"model": LicenseOut, "links": LICENSE_LINKS}}
)
def start_playback(account_id: Id, license_id: Id, service: Service, _: Commander, key: IdempotencyKey) -> Response:
    return reply(service.start_playback(account_id, license_id, request_id=key))


@router.post(
    "/licenses/{license_id}/renew", response_model=None, responses={200: {"model": LicenseOut, "links": LICENSE_LINKS}}
)
def renew_license(account_id: Id, license_id: Id, service: Service, _: Commander, key: IdempotencyKey) -> Response:
    return reply(service.renew_license(account_id, license_id, request_id=key))


@router.delete("/licenses/{license_id}", response_model=None, responses={200: {"model": LicenseOut}})
def release_license(account_id: Id, license_id: Id, service: Service, _: Commander, key: IdempotencyKey) -> Response:
    return reply(service.release_license(account_id, license_id, request_id=key))


@router.get("/titles/{title_id}/downloads", response_model=None, responses={200: {"model": DownloadsOut}})
def title_downloads(account_id: Id, title_id: Id, service: Service, _: Reader) -> Response:
    return json(service.title_downloads(account_id, title_id))
