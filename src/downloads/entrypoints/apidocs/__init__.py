"""The API documentation pages, ``/docs`` (Swagger UI) and ``/redoc``, from files the package ships.

FastAPI's own pages load Swagger UI, Redoc and fonts from a public CDN, unpinned,
on the same origin as the support page (which holds a token), and cannot work on
a machine without internet. These pages load the same viewers from the pinned
``fastapi-offline`` package instead, start them with a script of this package (no
inline script), and are served with the support page's security headers, so the
content security policy allows this origin only. Both read ``/openapi.json``.

Redoc writes its styles into ``<style>`` elements: its page's policy also allows
styles that carry a nonce made for that one response (Redoc sets it on each), and
no other inline style.
"""

from __future__ import annotations

import secrets
from importlib import resources

from fastapi import APIRouter
from starlette.responses import Response

from downloads.entrypoints.pages import SECURITY_HEADERS, packaged_file

__all__ = [
    "VIEWERS",
    "redoc_page",
    "redoc_script",
    "redoc_start",
    "router",
    "swagger_page",
    "swagger_script",
    "swagger_start",
    "swagger_style",
]

#: the installed package whose files are the viewers (pinned in pyproject.toml)
VIEWERS = "fastapi_offline"

router = APIRouter(include_in_schema=False)


def _own(name: str) -> Response:
    return packaged_file(__name__, "static", name)


@router.get("/docs")
def swagger_page() -> Response:
    return _own("swagger.html")


@router.get("/docs/swagger-start.js")
def swagger_start() -> Response:
    return _own("swagger-start.js")


@router.get("/docs/swagger-ui-bundle.js")
def swagger_script() -> Response:
    return packaged_file(VIEWERS, "static", "swagger-ui-bundle.js")


@router.get("/docs/swagger-ui.css")
def swagger_style() -> Response:
    return packaged_file(VIEWERS, "static", "swagger-ui.css")


@router.get("/redoc")
def redoc_page() -> Response:
    nonce = secrets.token_urlsafe(18)
    page = resources.files(__name__).joinpath("static", "redoc.html").read_text().replace("{nonce}", nonce)
    policy = SECURITY_HEADERS["Content-Security-Policy"] + f"; style-src 'self' 'nonce-{nonce}'; worker-src blob:"
    headers = {**SECURITY_HEADERS, "Content-Security-Policy": policy, "Cache-Control": "no-store"}
    return Response(page, media_type="text/html; charset=utf-8", headers=headers)


@router.get("/redoc/redoc-start.js")
def redoc_start() -> Response:
    return _own("redoc-start.js")


@router.get("/redoc/redoc.standalone.js")
def redoc_script() -> Response:
    return packaged_file(VIEWERS, "static", "redoc.standalone.js")
