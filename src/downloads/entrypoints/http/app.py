"""The FastAPI application: built by :func:`create_app`, never at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from downloads.adapters.metrics import Metrics
from downloads.adapters.observed import observed_stores
from downloads.adapters.tokens import TokenSigner, parse_max_ttl
from downloads.adapters.tracing import RequestSpans, start_tracing, stop_tracing
from downloads.application import Clock, system_clock
from downloads.bootstrap import Runtime, bootstrap, open_read_side
from downloads.domain import Policy
from downloads.entrypoints import admin, apidocs
from downloads.entrypoints.http.errors import install_error_handlers
from downloads.entrypoints.http.fast import DirectCommands
from downloads.entrypoints.http.middleware import Edge
from downloads.entrypoints.http.routes import accounts, devices, health, licenses, readside, titles
from downloads.entrypoints.http.routing import flat_routes
from downloads.settings import Settings

__all__ = ["create_app", "create_app_from_env"]


def create_app(settings: Settings, *, clock: Clock = system_clock, context: Runtime | None = None) -> FastAPI:
    """Wire the service for ``settings`` and return the ASGI app.

    Raises ``ValueError`` when no auth secret is set (``serve`` generates one)
    and the errors of :func:`~downloads.bootstrap.bootstrap`.
    """
    if not settings.auth_secret:
        raise ValueError("DOWNLOADS_AUTH_SECRET is not set")
    signer = TokenSigner(
        settings.auth_secret,
        previous=settings.auth_previous_secret,
        max_ttl=parse_max_ttl(settings.token_max_ttl),
    )
    metrics = Metrics()
    # Exported over OTLP when the OTEL_* variables ask for it, in each worker (after the fork); else None.
    tracing = start_tracing()
    ctx = context or bootstrap(settings, clock=clock, observer=metrics, wrap_stores=observed_stores(metrics))

    read_side = open_read_side(ctx)
    if settings.read_side == "background":
        # In this process (an application embedding the app); serve runs it in a process of its own instead
        # and starts its workers with it off. Across processes the lease lets one runner apply at a time.
        read_side.start()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        read_side.close()
        ctx.close()
        stop_tracing()  # sends the spans still queued, bounded by the exporter's timeout

    api = FastAPI(
        lifespan=lifespan,
        # A trailing slash is another path (404): a redirect would take its Location from the Host header.
        redirect_slashes=False,
        # Operation ids are the endpoint functions' names: stable, readable, and what the links name.
        generate_unique_id_function=lambda route: route.name,
        title="downloads",
        version="1",
        summary="License accounting for offline downloads, on an event-sourced store.",
        docs_url=None,  # FastAPI's pages load from a CDN: apidocs serves them from the package instead
        redoc_url=None,
        # FastAPI's own telemetry would add spans (and metrics, logs) of its own once a tracer provider is
        # set: the request's span is Edge's, the rest are the service's (docs/operations.md).
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    api.state.service = ctx.service
    api.state.stores = ctx.stores
    api.state.signer = signer
    api.state.metrics = metrics
    api.state.context = ctx
    api.state.read_side = read_side
    for module in (accounts, devices, licenses, titles, readside, health):
        api.include_router(module.router)
    api.include_router(admin.router)
    api.include_router(apidocs.router)
    _document_policy(api, ctx.policy)
    install_error_handlers(api)
    # The one middleware (see Edge): the request's id and span around everything, paths and credentials
    # checked before a body is read, every answer counted.
    api.add_middleware(
        Edge,
        routes=api.router.routes,
        signer=signer,
        observe=metrics.observe_request,
        max_bytes=settings.max_body_bytes,
        timeout=settings.body_timeout,
        direct=DirectCommands(list(flat_routes(api.router.routes)), ctx.service),
        spans=RequestSpans(tracing) if tracing is not None else None,
    )

    return api


def _document_policy(api: FastAPI, policy: Policy) -> None:
    """The schema names the plans and studios this server's policy offers (they come from its file)."""
    plain = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            spec = plain()
            schemas = spec.get("components", {}).get("schemas", {})
            for model, field, values in (
                ("AccountIn", "plan", policy.plans),
                ("PlanIn", "plan", policy.plans),
                ("TitleIn", "studio", policy.studios),
            ):
                prop = schemas.get(model, {}).get("properties", {}).get(field)
                if prop is not None:
                    prop["enum"] = sorted(values)
            api.openapi_schema = spec
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]


def create_app_from_env() -> FastAPI:
    """The factory ``serve`` hands to uvicorn: settings from ``DOWNLOADS_*`` variables."""
    return create_app(Settings())
