"""Devices: register, deactivate, sync."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from downloads.api.deps import Commander, IdempotencyKey, Service
from downloads.api.routes._links import DEVICE_LINKS
from downloads.api.routes._reply import ERRORS, reply
from downloads.api.schemas import DeactivatedOut, DeviceIn, DeviceOut, Id, SyncIn, SyncOut

router = APIRouter(prefix="/v1/accounts/{account_id}/devices", tags=["devices"], responses=ERRORS)


@router.post(
    "",
    status_code=201,
    response_model=None,
    responses={201: {"model": DeviceOut, "links": DEVICE_LINKS}, 200: {"model": DeviceOut, "links": DEVICE_LINKS}},
)
def register_device(account_id: Id, body: DeviceIn, service: Service, _: Commander, key: IdempotencyKey) -> Response:
    return reply(service.register_device(account_id, body.device_id, body.model, request_id=key))


@router.delete("/{device_id}", response_model=None, responses={200: {"model": DeactivatedOut}})
def deactivate_device(account_id: Id, device_id: Id, service: Service, _: Commander, key: IdempotencyKey) -> Response:
    return reply(service.deactivate_device(account_id, device_id, request_id=key))


@router.post("/{device_id}/sync", response_model=None, responses={200: {"model": SyncOut}})
def sync_device(
    account_id: Id, device_id: Id, body: SyncIn, service: Service, _: Commander, key: IdempotencyKey
) -> Response:
    return reply(service.sync_device(account_id, device_id, body.license_ids, request_id=key))
