"""Dependencies shared by the routers: the service, the caller's role, the request id.

They are ``async`` because they do no I/O: FastAPI runs a plain ``def`` dependency in its thread
pool, and a thread hop per dependency per request costs more than the work itself."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends, Header, Request

from downloads.adapters.logs import REQUEST_ID
from downloads.adapters.tokens import AuthError, Principal, TokenSigner
from downloads.application import DownloadsService
from downloads.entrypoints.http.errors import ApiError

#: the scope key the Edge middleware leaves the checked principal under (see middleware.PRINCIPAL)
PRINCIPAL = "downloads.principal"

__all__ = [
    "Admin",
    "Commander",
    "IdempotencyKey",
    "Reader",
    "RequestId",
    "Service",
    "Support",
    "authenticate",
    "authorize",
]


async def _service(request: Request) -> DownloadsService:
    service: DownloadsService = request.app.state.service
    return service


def authenticate(header: str, signer: TokenSigner) -> Principal:
    """The caller named by an ``Authorization`` header; :class:`ApiError` 401 if there is none."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "UNAUTHENTICATED", "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    try:
        return signer.verify(token.strip())
    except AuthError as exc:
        raise ApiError(401, "UNAUTHENTICATED", str(exc), headers={"WWW-Authenticate": "Bearer"}) from exc


def authorize(principal: Principal, allowed: Sequence[str]) -> Principal:
    """``principal`` if its role is one of ``allowed``; :class:`ApiError` 403 otherwise."""
    if principal.role not in allowed:
        raise ApiError(
            403,
            "FORBIDDEN",
            f"role {principal.role!r} may not do this",
            {"role": principal.role, "allowed": list(allowed)},
        )
    return principal


async def _principal(request: Request) -> Principal:
    # The Edge middleware checked the token for this route already and left who it names here.
    checked: Principal | None = request.scope.get(PRINCIPAL)
    if checked is not None:
        return checked
    return authenticate(request.headers.get("authorization", ""), request.app.state.signer)


def _role(*allowed: str):  # type: ignore[no-untyped-def]
    async def check(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        # Also checked by the Edge middleware before the body is read (it reads ``allowed_roles``).
        return authorize(principal, allowed)

    check.allowed_roles = allowed  # type: ignore[attr-defined]
    return check


async def _idempotency_key(
    idempotency_key: Annotated[str | None, Header(max_length=200, pattern=r"^[\x21-\x7e]+$")] = None,
    x_request_id: Annotated[str | None, Header(max_length=200, pattern=r"^[\x21-\x7e]+$")] = None,
) -> str | None:
    # Only Idempotency-Key identifies a command; X-Request-Id is a tracing id (validated, never a key).
    return idempotency_key


async def _request_id(
    idempotency_key: Annotated[str | None, Header(max_length=200, pattern=r"^[\x21-\x7e]+$")] = None,
) -> str | None:
    # What an erasure records as its request id: the one the Edge gave this request (the client's
    # X-Request-Id when well formed, else a new one), else the client's key.
    return REQUEST_ID.get() or idempotency_key


Service = Annotated[DownloadsService, Depends(_service)]
Reader = Annotated[Principal, Depends(_role("service", "support", "admin"))]
Commander = Annotated[Principal, Depends(_role("service", "admin"))]
Admin = Annotated[Principal, Depends(_role("admin"))]
Support = Annotated[Principal, Depends(_role("support", "admin"))]
IdempotencyKey = Annotated[str | None, Depends(_idempotency_key)]
RequestId = Annotated[str | None, Depends(_request_id)]
