"""The catalog: titles, managed by admins."""

from __future__ import annotations

from datetime import UTC

from fastapi import APIRouter
from starlette.responses import Response

from downloads.api.deps import Admin, Reader, Service
from downloads.api.routes._links import TITLE_LINKS
from downloads.api.routes._reply import ERRORS, json
from downloads.api.schemas import Id, TitleIn, TitleOut

router = APIRouter(prefix="/v1/titles", tags=["titles"], responses=ERRORS)


@router.put("/{title_id}", response_model=None, responses={200: {"model": TitleOut, "links": TITLE_LINKS}})
def set_title(title_id: Id, body: TitleIn, service: Service, _: Admin) -> Response:
    until = body.available_until
    if until is not None and until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    return json(service.set_title(title_id, studio=body.studio, downloadable=body.downloadable, available_until=until))


@router.get("/{title_id}", response_model=None, responses={200: {"model": TitleOut}})
def get_title(title_id: Id, service: Service, _: Reader) -> Response:
    return json(service.get_title(title_id))
