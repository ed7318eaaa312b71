"""Devices: register, deactivate, sync."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from downloads.application import DeactivateDevice, RegisterDevice, SyncDevice
from downloads.application.presenters import DeactivatedOut, DeviceOut, SyncOut
from downloads.entrypoints.http.deps import Commander, IdempotencyKey, Service
from downloads.entrypoints.http.routes._links import DEVICE_LINKS
from downloads.entrypoints.http.routes._reply import ERRORS, Body, command
from downloads.entrypoints.http.schemas import DeviceIn, Id, SyncIn

__all__ = ["deactivate_device", "register_device", "router", "sync_device"]

router = APIRouter(prefix="/v1/accounts/{account_id}/devices", tags=["devices"], responses=ERRORS)


@router.post(
    "",
    status_code=201,
    response_model=DeviceOut,
    responses={201: {"links": DEVICE_LINKS}, 200: {"model": DeviceOut, "links": DEVICE_LINKS}},
)
async def register_device(
    account_id: Id, body: DeviceIn, service: Service, _: Commander, key: IdempotencyKey, response: Response
) -> Body:
    return await command(service, RegisterDevice(account_id, body.device_id, body.model), key, response)


@router.delete("/{device_id}", response_model=DeactivatedOut)
async def deactivate_device(
    account_id: Id, device_id: Id, service: Service, _: Commander, key: IdempotencyKey, response: Response
) -> Body:
    return await command(service, DeactivateDevice(account_id, device_id), key, response)


@router.post("/{device_id}/sync", response_model=SyncOut)
async def sync_device(
    account_id: Id, device_id: Id, body: SyncIn, service: Service, _: Commander, key: IdempotencyKey, response: Response
) -> Body:
    return await command(service, SyncDevice(account_id, device_id, tuple(body.license_ids)), key, response)
