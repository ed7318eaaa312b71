"""ASGI middleware: the gatekeeper (paths and credentials), request size limit, metrics, request ids."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from downloads.adapters.logs import REQUEST_ID
from downloads.adapters.tokens import TokenSigner
from downloads.adapters.tracing import UNTRACED_PATHS, RequestSpans
from downloads.entrypoints.http.deps import authenticate, authorize
from downloads.entrypoints.http.errors import ApiError, error_response
from downloads.entrypoints.http.routing import flat_routes

__all__ = ["BodyLimit", "Gatekeeper", "NoStoreJSON", "RequestContext", "RequestMetrics"]

#: encoded path separators: a proxy's path rules see one path, the router would decode another
_ENCODED_SEPARATORS = (b"%2f", b"%5c", b"\\")


class Gatekeeper:
    """Before any body is read: refuse a raw path with an encoded ``/`` or ``\\`` (400), then check
    the bearer token (401) and its role (403) for the route the request is for.

    The roles are the route's own, read from its role dependency (``allowed_roles``), so they are
    declared once, at the route; the dependency checks them again, cheaply (tokens are cached).
    """

    def __init__(self, app: ASGIApp, *, routes: list[BaseRoute], signer: TokenSigner) -> None:
        self.app = app
        self.routes = list(flat_routes(routes))
        self.signer = signer
        self._roles: dict[int, tuple[str, ...] | None] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        raw = bytes(scope.get("raw_path") or scope.get("path", "").encode()).lower()
        if any(mark in raw for mark in _ENCODED_SEPARATORS):
            response = error_response(
                400, "INVALID_PATH", "paths may not hold an encoded '/' or a '\\'", {"path": raw.decode("latin-1")}
            )
            await response(scope, receive, send)
            return
        roles = self._roles_for(scope)
        if roles is not None:
            refusal = self._check(scope, roles)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _roles_for(self, scope: Scope) -> tuple[str, ...] | None:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                key = id(route)
                if key not in self._roles:
                    self._roles[key] = _allowed_roles(getattr(route, "dependant", None))
                return self._roles[key]
        return None

    def _check(self, scope: Scope, roles: tuple[str, ...]) -> Any:
        try:
            authorize(authenticate(_header(scope, b"authorization") or "", self.signer), roles)
        except ApiError as exc:
            return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)
        return None


def _allowed_roles(dependant: Any) -> tuple[str, ...] | None:
    """The roles a route's dependencies allow (None: the route needs no token)."""
    if dependant is None:
        return None
    for dependency in dependant.dependencies:
        roles = getattr(dependency.call, "allowed_roles", None)
        if roles is not None:
            return tuple(roles)
        found = _allowed_roles(dependency)
        if found is not None:
            return found
    return None


class BodyLimit:
    """Guard request bodies: over ``max_bytes`` is 413 (by header or by counting the stream), a body
    not received whole within ``timeout`` seconds is 408 (a client dripping it holds a worker's
    connection no longer), and a body sent with a media type other than JSON is 415, rather than a
    confusing validation error."""

    def __init__(self, app: ASGIApp, *, max_bytes: int, timeout: float = 10.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0 or declared > self.max_bytes:
                    await self._refuse(scope, receive, send)
                    return
        # Read the body here, before the app: FastAPI turns any error raised while it reads a body into a
        # 400, so an oversized stream must be refused before the app ever sees it.
        buffered: list[Message] = []
        seen = 0
        deadline = asyncio.get_running_loop().time() + self.timeout
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                response = error_response(
                    408,
                    "REQUEST_TIMEOUT",
                    f"the request body did not arrive within {self.timeout:g} seconds",
                    {"timeout_seconds": self.timeout},
                    {"Connection": "close"},
                )
                await response(scope, receive, send)
                return
            buffered.append(message)
            if message["type"] != "http.request":
                break
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        if seen > 0 and _header(scope, b"content-type") is None:
            # The API speaks only JSON: a body sent without a media type is read as JSON.
            scope = {**scope, "headers": [*scope.get("headers", ()), (b"content-type", b"application/json")]}
        if seen > 0 and not _is_json(scope):
            response = error_response(
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                "request bodies must be JSON: send the header Content-Type: application/json",
                {"content_type": _header(scope, b"content-type")},
            )
            await response(scope, receive, send)
            return

        async def replay() -> Message:
            return buffered.pop(0) if buffered else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The rest of the body is never read, so the connection cannot carry another request: say so,
        # or a client reusing it meets a connection closed under it.
        response = error_response(
            413,
            "PAYLOAD_TOO_LARGE",
            f"request bodies are limited to {self.max_bytes} bytes",
            {"limit": self.max_bytes},
            {"Connection": "close"},
        )
        await response(scope, receive, send)


class RequestMetrics:
    """Count requests by route and status and time them; ``observe`` receives each one."""

    def __init__(self, app: ASGIApp, *, observe: Callable[[str, str, int, float], None]) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.observe(scope.get("method", ""), path, status, time.perf_counter() - started)


class NoStoreJSON:
    """Every JSON answer, errors included, says ``Cache-Control: no-store``: account data, tokens' answers
    and errors must not be kept by a browser or a shared cache. Pages and their files are left as they are."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"cache-control"]
                types = [v for k, v in headers if k.lower() == b"content-type"]
                if types and _is_json_type(bytes(types[0]).decode("latin-1")):
                    message = {**message, "headers": [*headers, (b"cache-control", b"no-store")]}
            await send(message)

        await self.app(scope, receive, send_wrapper)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _is_json(scope: Scope) -> bool:
    """``application/json`` or ``application/*+json``."""
    return _is_json_type(_header(scope, b"content-type") or "")


def _is_json_type(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


#: what a client's X-Request-Id may be to be kept (as the route's header check says): else one is made
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,200}")


class RequestContext:
    """Give every request an id: the client's ``X-Request-Id`` when it is a valid one, else a new one.

    The id is current (:data:`~downloads.adapters.logs.REQUEST_ID`) while the request is handled, so
    every log line written for it carries it, and the answer returns it in ``X-Request-Id``. With
    ``spans`` (tracing on), each request but probes and scrapes runs in a server span under the
    caller's ``traceparent`` (see :class:`~downloads.adapters.tracing.RequestSpans`).
    """

    def __init__(self, app: ASGIApp, *, spans: RequestSpans | None = None) -> None:
        self.app = app
        self.spans = spans

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = _header(scope, b"x-request-id")
        request_id = sent if sent is not None and _REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        echoed = (b"x-request-id", request_id.encode())

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), echoed]}
            await send(message)

        if self.spans is None or scope["path"] in UNTRACED_PATHS:
            await self.app(scope, receive, send_wrapper)
        else:
            await self._traced(scope, receive, send_wrapper, request_id)
        # Left set when the app raised: the server-error handler outside still logs with it (the
        # request's task ends right after).
        REQUEST_ID.reset(token)

    async def _traced(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        spans = self.spans
        assert spans is not None
        method = scope["method"]
        with spans.span(method, scope["headers"]) as span:

            async def answer(message: Message) -> None:
                if message["type"] == "http.response.start":
                    route = getattr(scope.get("route"), "path", None)
                    account = (scope.get("path_params") or {}).get("account_id")
                    spans.answered(span, method, route, message["status"], request_id, account)
                await send(message)

            try:
                await self.app(scope, receive, answer)
            except Exception as exc:
                spans.failed(span, exc)
                raise
