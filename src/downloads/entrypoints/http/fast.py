"""The license commands' direct path: acquire, play, renew and release without FastAPI's request handling.

These four are most of a member's requests. For a well-formed request the answer is the
route's own (same service call, same body, status and headers), built with a fraction of the
work: no dependency solving, no second route match, no response re-validation (the presenter
built the answer from its model already). Anything this path does not accept as well-formed
(an identifier, a body or a header FastAPI would refuse or that needs a closer look) is left
to the FastAPI route, which answers it as before (422 and its details), so there is one source
for every refusal of input. Errors raised by the service go to the app's own exception handlers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import Scope, Send

from downloads.application import (
    AccountCommand,
    AcquireLicense,
    DownloadsService,
    ReleaseLicense,
    RenewLicense,
    StartPlayback,
)
from downloads.entrypoints.http.routes import licenses
from downloads.entrypoints.http.routes._reply import blocking
from downloads.entrypoints.http.schemas import ID_PATTERN, LicenseIn

__all__ = ["DirectCommands"]

_ID = re.compile(ID_PATTERN)
_KEY = re.compile(r"^[\x21-\x7e]+$")  # the IdempotencyKey dependency's header pattern

#: builds a command from the path's parameters and the body (None: leave the request to FastAPI)
Build = Callable[[dict[str, str], bytes], AccountCommand | None]


def _ids(params: dict[str, str]) -> bool:
    return all(len(v) <= 128 and _ID.match(v) is not None for v in params.values())


def _acquire(params: dict[str, str], body: bytes) -> AccountCommand | None:
    try:
        checked = LicenseIn.model_validate_json(body)
    except ValidationError:
        return None
    return AcquireLicense(params["account_id"], checked.device_id, checked.title_id)


def _on_license(kind: Callable[[str, str], AccountCommand]) -> Build:
    def build(params: dict[str, str], body: bytes) -> AccountCommand | None:
        return kind(params["account_id"], params["license_id"])

    return build


#: the routes served directly: endpoint function -> how its command is built
_DIRECT: dict[Callable[..., Any], Build] = {
    licenses.acquire_license: _acquire,
    licenses.start_playback: _on_license(StartPlayback),
    licenses.renew_license: _on_license(RenewLicense),
    licenses.release_license: _on_license(ReleaseLicense),
}


class DirectCommands:
    """The routes of :data:`_DIRECT` found among the app's, and how to answer them."""

    def __init__(self, routes: list[BaseRoute], service: DownloadsService) -> None:
        self.service = service
        self.builds: dict[int, Build] = {
            id(route): _DIRECT[endpoint]
            for route in routes
            if (endpoint := getattr(route, "endpoint", None)) in _DIRECT
        }

    def wants(self, route: BaseRoute) -> bool:
        return id(route) in self.builds

    async def answer(self, scope: Scope, route: BaseRoute, params: dict[str, str], body: bytes, send: Send) -> bool:
        """Answer the request and return True, or return False having sent nothing (FastAPI answers)."""
        if not _ids(params):
            return False
        key, key_ok = _header(scope, b"idempotency-key")
        if not key_ok or not _header(scope, b"x-request-id")[1]:
            return False
        command = self.builds[id(route)](params, body)
        if command is None:
            return False
        scope["route"] = route  # what the router would have set: the metrics label
        scope["path_params"] = params
        try:
            reply = await blocking(self.service.handle, command, idempotency_key=key)
        except Exception as exc:
            await (await _handled(scope, exc))(scope, _no_body, send)
            return True
        headers = {"Idempotent-Replayed": "true"} if reply.replayed else None
        response = Response(
            orjson.dumps(reply.body),
            status_code=201 if reply.created else 200,
            media_type="application/json",
            headers=headers,
        )
        await response(scope, _no_body, send)
        return True


def _header(scope: Scope, name: bytes) -> tuple[str | None, bool]:
    """The header's value (None when absent) and whether FastAPI's header check would accept it."""
    for k, v in scope.get("headers", ()):
        if k == name:
            try:
                value = bytes(v).decode("ascii")
            except UnicodeDecodeError:
                return None, False
            return value, len(value) <= 200 and _KEY.match(value) is not None
    return None, True


async def _handled(scope: Scope, exc: Exception) -> Response:
    """The app's exception handler's answer for ``exc`` (the handler of its nearest class)."""
    handlers = scope["app"].exception_handlers
    for cls in type(exc).__mro__:
        handler = handlers.get(cls)
        if handler is not None:
            response: Response = await handler(Request(scope), exc)
            return response
    raise exc


async def _no_body() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}
