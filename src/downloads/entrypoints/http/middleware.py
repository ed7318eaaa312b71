"""The ASGI middleware: one layer for request ids and spans, paths, credentials, body limits, no-store and metrics."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from downloads.adapters.logs import REQUEST_ID
from downloads.adapters.tokens import TokenSigner
from downloads.adapters.tracing import UNTRACED_PATHS, RequestSpans
from downloads.entrypoints.http.deps import PRINCIPAL, authenticate, authorize
from downloads.entrypoints.http.errors import ApiError, error_response
from downloads.entrypoints.http.fast import DirectCommands
from downloads.entrypoints.http.routing import flat_routes

__all__ = ["PRINCIPAL", "Edge", "RouteTable"]

#: encoded path separators: a proxy's path rules see one path, the router would decode another
_ENCODED_SEPARATORS = (b"%2f", b"%5c", b"\\")

#: what a client's X-Request-Id may be to be kept (as the route's header check says): else one is made
_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,200}")


class Edge:
    """The one middleware every HTTP request passes, in this order (each step answers in the envelope):

    0. the request gets its id: the client's ``X-Request-Id`` when it is a valid one, else a new one.
       The id is current (:data:`~downloads.adapters.logs.REQUEST_ID`) while the request is handled,
       so every log line written for it carries it, and every answer returns it in ``X-Request-Id``.
       With ``spans`` (tracing on), each request but probes and scrapes runs in a server span under
       the caller's ``traceparent`` (see :class:`~downloads.adapters.tracing.RequestSpans`), which
       wraps every step below, the direct path's command included;
    1. a raw path with an encoded ``/`` or ``\\`` is refused (400);
    2. the route is found in a table built once from the app's routes, and the bearer token (401)
       and its role (403) are checked against the route's roles, before any body is read;
    3. the body is read whole, bounded in size (413) and time (408), and must be JSON (415);
    4. the app answers; every JSON answer says ``Cache-Control: no-store`` (account data, tokens'
       answers and errors must not be kept by a browser or a shared cache);
    5. the request is counted and timed by route template and status (``observe``), however it ended.

    One layer rather than four: each ASGI layer costs a call, a ``send`` wrapper and a scope lookup
    per request.
    The caller's principal is left in the scope (:data:`PRINCIPAL`) for the route's role dependency.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: list[BaseRoute],
        signer: TokenSigner,
        observe: Callable[[str, str, int, float], None],
        max_bytes: int,
        timeout: float = 10.0,
        direct: DirectCommands | None = None,
        spans: RequestSpans | None = None,
    ) -> None:
        self.app = app
        self.spans = spans
        self.table = RouteTable(routes)
        self.direct = direct
        self.signer = signer
        self.observe = observe
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        sent = _header(scope, b"x-request-id")
        request_id = sent if sent is not None and _REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)
        echoed = (b"x-request-id", request_id.encode())
        spans = self.spans
        span: Any = None  # the request's span, once started

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message = _answer_start(message, echoed)
                if span is not None and spans is not None:
                    route = getattr(scope.get("route"), "path", None)
                    account = (scope.get("path_params") or {}).get("account_id")
                    spans.answered(span, scope["method"], route, status, request_id, account)
            await send(message)

        try:
            if spans is None or scope["path"] in UNTRACED_PATHS:
                await self._handle(scope, receive, answer)
            else:
                with spans.span(scope["method"], scope["headers"]) as span:
                    try:
                        await self._handle(scope, receive, answer)
                    except Exception as exc:
                        spans.failed(span, exc)
                        raise
        finally:
            route: Any = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            self.observe(scope.get("method", ""), path, status, time.perf_counter() - started)
        # Left set when the app raised: the server-error handler outside still logs with it (the
        # request's task ends right after).
        REQUEST_ID.reset(token)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = bytes(scope.get("raw_path") or scope.get("path", "").encode()).lower()
        if any(mark in raw for mark in _ENCODED_SEPARATORS):
            response = error_response(
                400, "INVALID_PATH", "paths may not hold an encoded '/' or a '\\'", {"path": raw.decode("latin-1")}
            )
            await response(scope, receive, send)
            return
        found = self.table.find(scope)
        roles = found[1] if found is not None else None
        if roles is not None:
            try:
                principal = authenticate(_header(scope, b"authorization") or "", self.signer)
                scope[PRINCIPAL] = authorize(principal, roles)
            except ApiError as exc:
                await error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)(scope, receive, send)
                return
        await self._with_body(scope, receive, send, found)

    async def _with_body(self, scope: Scope, receive: Receive, send: Send, found: Found | None) -> None:
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
        try:
            async with asyncio.timeout(self.timeout):  # one deadline for the whole body, however it is cut
                while True:
                    message = await receive()
                    buffered.append(message)
                    if message["type"] != "http.request":
                        break
                    seen += len(message.get("body", b""))
                    if seen > self.max_bytes or not message.get("more_body", False):
                        break
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
        if seen > self.max_bytes:
            await self._refuse(scope, receive, send)
            return

        if seen > 0 and _header(scope, b"content-type") is None:
            # The API speaks only JSON: a body sent without a media type is read as JSON.
            # In place, not on a copy: the route the router or the direct path sets must stay visible to
            # the metrics label and the request's span.
            scope["headers"] = [*scope.get("headers", ()), (b"content-type", b"application/json")]
        if seen > 0 and not _is_json(scope):
            response = error_response(
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                "request bodies must be JSON: send the header Content-Type: application/json",
                {"content_type": _header(scope, b"content-type")},
            )
            await response(scope, receive, send)
            return

        if found is not None and self.direct is not None and self.direct.wants(found[0]):
            body = b"".join(m.get("body", b"") for m in buffered if m["type"] == "http.request")
            if await self.direct.answer(scope, found[0], found[2], body, send):
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


#: a request's route, the roles it allows (None: no token needed) and the path's parameters
Found = tuple[BaseRoute, tuple[str, ...] | None, dict[str, str]]


class RouteTable:
    """The route a request is for and its roles, found without asking every route (built once).

    A route whose path has no parameter is found by its exact path; the others are tried in the
    app's order, only those of the request's method, only those whose literal first segments
    match. The first route that matches wins, as in the router. ``None`` when no route matches
    (the router answers 404 or 405 itself).
    """

    def __init__(self, routes: list[BaseRoute]) -> None:
        #: per method: (literal prefix, compiled path pattern, roles) in the app's order
        self._by_method: dict[str, list[tuple[str, Any, BaseRoute, tuple[str, ...] | None]]] = {}
        #: routes that are not plain method routes (mounts): asked as the router would ask them
        self._others: list[BaseRoute] = []
        for route in flat_routes(routes):
            methods = getattr(route, "methods", None)
            pattern = getattr(route, "path_regex", None)
            if not methods or pattern is None:
                self._others.append(route)
                continue
            roles = _allowed_roles(getattr(route, "dependant", None))
            prefix = str(getattr(route, "path_format", "")).split("{", 1)[0]
            for method in methods:
                self._by_method.setdefault(method, []).append((prefix, pattern, route, roles))

    def find(self, scope: Scope) -> Found | None:
        path = get_route_path(scope)
        for prefix, pattern, route, roles in self._by_method.get(scope.get("method", ""), ()):
            if path.startswith(prefix):
                matched = pattern.match(path)
                if matched is not None:
                    return route, roles, matched.groupdict()
        for route in self._others:
            match, child = route.matches(scope)
            if match == Match.FULL:
                return route, _allowed_roles(getattr(route, "dependant", None)), dict(child.get("path_params", {}))
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


def _answer_start(message: Message, request_id: tuple[bytes, bytes]) -> Message:
    """A response start with the request's id and, when its body is JSON, ``Cache-Control: no-store``
    (pages are left alone)."""
    headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"cache-control"]
    types = [v for k, v in headers if k.lower() == b"content-type"]
    if types and _is_json_type(bytes(types[0]).decode("latin-1")):
        return {**message, "headers": [*headers, (b"cache-control", b"no-store"), request_id]}
    return {**message, "headers": [*message.get("headers", ()), request_id]}


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
