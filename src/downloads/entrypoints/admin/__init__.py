"""The admin page at ``/admin``: a small client, served by the same process, over the JSON API.

The page holds no data and no secret of its own: it asks for a support or admin
token (kept in the tab's session storage only) and calls the ordinary routes
with it, so the roles are enforced where they always are. Support reads; an
admin also gets buttons that send ordinary commands. The files are plain HTML,
CSS and JavaScript shipped with the package: nothing is built, nothing is
fetched from elsewhere (the content security policy allows this origin only).
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from downloads.entrypoints.pages import packaged_file

__all__ = ["admin_page", "admin_script", "admin_style", "router"]

router = APIRouter(include_in_schema=False)


def _file(name: str) -> Response:
    return packaged_file(__name__, "static", name)


@router.get("/admin")
def admin_page() -> Response:
    return _file("index.html")


@router.get("/admin/app.js")
def admin_script() -> Response:
    return _file("app.js")


@router.get("/admin/app.css")
def admin_style() -> Response:
    return _file("app.css")
