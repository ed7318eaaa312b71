"""Turning service replies into HTTP responses."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from downloads.application import Reply
from downloads.entrypoints.http.schemas import ErrorOut

__all__ = ["ERRORS", "Body", "json", "reply"]


def json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_UTC_Z), status_code=status, media_type="application/json", headers=headers
    )


#: a JSON-ready answer, checked and serialized by the route's response model
Body = dict[str, Any]


def reply(response: Response, result: Reply) -> Body:
    """The command's answer: 201 when it created something, else 200; replays say so in a header."""
    response.status_code = 201 if result.created else 200
    if result.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return result.body


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text}
    for code, text in {
        401: "missing or bad token",
        403: "the token's role may not do this",
        404: "not found",
        409: "refused by a rule",
        410: "the account was erased (ACCOUNT_ERASED)",
        413: "body too large",
        422: "invalid request",
        503: "store unavailable or account busy",
    }.items()
}
