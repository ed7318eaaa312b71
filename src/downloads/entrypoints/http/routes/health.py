"""Liveness, readiness and metrics: no token needed."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from starlette.responses import Response

from downloads.adapters.metrics import CONTENT_TYPE_LATEST, Metrics, projection_metrics
from downloads.entrypoints.http.routes._reply import json
from eskit import QuorumUnreachable, StoreError

__all__ = ["healthz", "metrics", "readyz", "router"]

router = APIRouter(tags=["health"])
log = logging.getLogger(__name__)


@router.get("/healthz")
def healthz() -> Response:
    return json({"status": "ok"})


# HEAD answers like GET (the server sends no body); kept out of the schema, where it would repeat GET.
router.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False, name="healthz_head")


@router.get("/readyz")
def readyz(request: Request) -> Response:
    """Ready when the store answers and, on SQLite, takes a write. Callers learn only the status.

    ``read_only`` (503): the store answers reads but cannot make a write durable from here (a
    Cassandra region cut off from the others); a load balancer should send commands elsewhere.
    """
    try:
        request.app.state.stores.events.ping()
    except QuorumUnreachable as exc:
        log.warning("not ready for commands: %s", exc)
        return json({"status": "read_only"}, 503)
    except StoreError as exc:
        log.warning("not ready: %s", exc)  # the reason goes to the log, not to anonymous callers
        return json({"status": "unavailable"}, 503)
    return json({"status": "ready"})


router.add_api_route("/readyz", readyz, methods=["HEAD"], include_in_schema=False, name="readyz_head")


@router.get("/metrics")
def metrics(request: Request) -> Response:
    registry: Metrics = request.app.state.metrics
    body = registry.render()
    read_side = getattr(request.app.state, "read_side", None)
    if read_side is not None:
        body += projection_metrics(read_side.status())
    return Response(body, media_type=CONTENT_TYPE_LATEST)
