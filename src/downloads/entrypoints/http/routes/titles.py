"""The catalog: titles, managed by admins."""

from __future__ import annotations

from datetime import UTC

from fastapi import APIRouter

from downloads.application import SetTitle
from downloads.application.presenters import TitleOut
from downloads.entrypoints.http.deps import Admin, Reader, Service
from downloads.entrypoints.http.routes._links import TITLE_LINKS
from downloads.entrypoints.http.routes._reply import ERRORS, Body, blocking
from downloads.entrypoints.http.schemas import Id, TitleIn

__all__ = ["get_title", "router", "set_title"]

router = APIRouter(prefix="/v1/titles", tags=["titles"], responses=ERRORS)


@router.put("/{title_id}", response_model=TitleOut, responses={200: {"links": TITLE_LINKS}})
async def set_title(title_id: Id, body: TitleIn, service: Service, _: Admin) -> Body:
    until = body.available_until
    if until is not None and until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    return await blocking(service.set_title, SetTitle(title_id, body.studio, body.downloadable, until))


@router.get("/{title_id}", response_model=TitleOut)
async def get_title(title_id: Id, service: Service, _: Reader) -> Body:
    return await blocking(service.get_title, title_id)
