"""Turning service replies into HTTP responses."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from downloads.api.schemas import ErrorOut
from downloads.service import Reply

__all__ = ["ERRORS", "json", "reply"]


def json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_UTC_Z), status_code=status, media_type="application/json", headers=headers
    )


def reply(result: Reply) -> Response:
    """201 when the command created something, else 200; replays say so in a header."""
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return json(result.body, 201 if result.created else 200, headers)


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text}
    for code, text in {
        401: "missing or bad token",
        403: "the token's role may not do this",
        404: "not found",
        409: "refused by a rule",
        413: "body too large",
        422: "invalid request",
        503: "store unavailable or account busy",
    }.items()
}
