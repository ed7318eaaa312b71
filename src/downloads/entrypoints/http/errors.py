"""The one place errors become HTTP: the error envelope for everything.

Every error body is ``{"error": {"code", "message", "details"}}``.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

from downloads.domain import Denied, DomainError, Gone, Invalid, NotFound
from downloads.entrypoints.http.routing import flat_routes
from downloads.errors import DownloadsError
from eskit import ConcurrencyError, OperationalError, StoreError, StoreUnavailable

__all__ = ["ApiError", "error_response", "install_error_handlers"]

log = logging.getLogger(__name__)


class ApiError(DownloadsError):
    """An error raised by the HTTP layer itself (auth, size limits)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = details or {}
        self.headers = headers


def _default(value: Any) -> Any:
    return str(value)


def error_response(
    status: int, code: str, message: str, details: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> Response:
    envelope = {"error": {"code": code, "message": message, "details": details or {}}}
    body = orjson.dumps(envelope, default=_default, option=orjson.OPT_UTC_Z)
    # Also here, not only in the Edge middleware: an unexpected error is answered outside it.
    return Response(
        body,
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def _status_of(exc: DomainError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, Gone):
        return 410
    if isinstance(exc, Denied):
        return 409
    if isinstance(exc, Invalid):
        return 422
    return 400


_HTTP_CODES = {
    400: "BAD_REQUEST",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    406: "NOT_ACCEPTABLE",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
}


def _allowed_methods(routes: list[BaseRoute], scope: Scope) -> list[str]:
    """Every method some route serves at this request's path."""
    return sorted(
        method
        for route in flat_routes(routes)
        for method in getattr(route, "methods", None) or ()
        if route.matches({**scope, "method": method})[0] == Match.FULL
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that turn every exception into the envelope."""

    @app.exception_handler(DomainError)
    async def domain_error(_: Request, exc: DomainError) -> Response:
        return error_response(_status_of(exc), exc.code, exc.message, exc.details)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> Response:
        problems = [
            {"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", "")), "type": err.get("type")}
            for err in exc.errors()
        ]
        cursor = [err for err in exc.errors() if tuple(err.get("loc", ())) == ("query", "after")]
        if cursor and len(cursor) == len(problems):  # a paging cursor no page gave: one code for every route
            details = {"after": str(cursor[0].get("input", "")), "errors": problems}
            return error_response(422, "INVALID_CURSOR", "after is not a cursor a page gave", details)
        return error_response(422, "VALIDATION_ERROR", "the request is not valid", {"errors": problems})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
        message = "no such route" if exc.status_code == 404 else str(exc.detail)
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            # Every method of the path, not only those of the first route that matched it.
            headers["Allow"] = ", ".join(_allowed_methods(app.router.routes, request.scope))
        return error_response(exc.status_code, code, message, {}, headers)

    @app.exception_handler(ConcurrencyError)
    async def conflict(_: Request, exc: ConcurrencyError) -> Response:
        return error_response(
            503, "CONTENDED", "the account is busy, retry with the same Idempotency-Key", {}, {"Retry-After": "1"}
        )

    @app.exception_handler(StoreError)
    async def store_error(_: Request, exc: StoreError) -> Response:
        if isinstance(exc, StoreUnavailable | OperationalError):
            log.warning("store unavailable: %s", exc)
            return error_response(
                503, "STORE_UNAVAILABLE", "the event store is unavailable, retry later", {}, {"Retry-After": "1"}
            )
        log.error("store error: %s", exc)
        return error_response(500, "INTERNAL", "internal error", {})

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, "INTERNAL", "internal error", {})
