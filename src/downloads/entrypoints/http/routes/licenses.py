"""Licenses: acquire, list, read, play, renew, release; per-title download counts."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query
from starlette.responses import Response

from downloads.application import AcquireLicense, ReleaseLicense, RenewLicense, StartPlayback
from downloads.application.presenters import DownloadsOut, LicenseOut, LicensesOut
from downloads.entrypoints.http.deps import Commander, IdempotencyKey, Reader, Service
from downloads.entrypoints.http.routes._links import LICENSE_LINKS
from downloads.entrypoints.http.routes._reply import ERRORS, Body, blocking, command
from downloads.entrypoints.http.schemas import ID_PATTERN, Id, LicenseIn

__all__ = [
    "acquire_license",
    "get_license",
    "list_licenses",
    "release_license",
    "renew_license",
    "router",
    "start_playback",
    "title_downloads",
]

router = APIRouter(prefix="/v1/accounts/{account_id}", tags=["licenses"], responses=ERRORS)


@router.post(
    "/licenses",
    status_code=201,
    response_model=LicenseOut,
    responses={201: {"links": LICENSE_LINKS}, 200: {"model": LicenseOut, "links": LICENSE_LINKS}},
)
async def acquire_license(
    account_id: Id, body: LicenseIn, service: Service, _: Commander, key: IdempotencyKey, response: Response
) -> Body:
    return await command(service, AcquireLicense(account_id, body.device_id, body.title_id), key, response)


@router.get("/licenses", response_model=LicensesOut)
def list_licenses(
    account_id: Id,
    service: Service,
    _: Reader,
    status: Annotated[Literal["active", "expired", "released", "revoked"] | None, Query()] = None,
    device_id: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=128)] = None,
    after: Annotated[str | None, Query(pattern=ID_PATTERN, max_length=128, description="a license id")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
) -> Body:
    return service.license_page(account_id, status=status, device_id=device_id, after=after, limit=limit)


@router.get("/licenses/{license_id}", response_model=LicenseOut)
async def get_license(account_id: Id, license_id: Id, service: Service, _: Reader) -> Body:
    return await blocking(service.get_license, account_id, license_id)


@router.post("/licenses/{license_id}/play", response_model=LicenseOut, responses={200: {"links": LICENSE_LINKS}})
async def start_playback(
    account_id: Id, license_id: Id, service: Service, _: Commander, key: IdempotencyKey, response: Response
) -> Body:
    return await command(service, StartPlayback(account_id, license_id), key, response)


@router.post("/licenses/{license_id}/renew", response_model=LicenseOut, responses={200: {"links": LICENSE_LINKS}})
async def renew_license(
    account_id: Id, license_id: Id, service: Service, _: Commander, key: IdempotencyKey, response: Response
) -> Body:
    return await command(service, RenewLicense(account_id, license_id), key, response)


@router.delete("/licenses/{license_id}", response_model=LicenseOut)
async def release_license(
    account_id: Id, license_id: Id, service: Service, _: Commander, key: IdempotencyKey, response: Response
) -> Body:
    return await command(service, ReleaseLicense(account_id, license_id), key, response)


@router.get("/titles/{title_id}/downloads", response_model=DownloadsOut)
def title_downloads(account_id: Id, title_id: Id, service: Service, _: Reader) -> Body:
    return service.title_downloads(account_id, title_id)
