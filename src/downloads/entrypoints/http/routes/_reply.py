"""Turning service replies into HTTP responses."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import orjson
from starlette.responses import Response

from downloads.application import AccountCommand, DownloadsService, Reply
from downloads.entrypoints.http.schemas import ErrorOut

__all__ = ["ERRORS", "Body", "blocking", "command", "json", "reply"]

T = TypeVar("T")

#: threads that run the service's blocking calls: as many as anyio's default, so as many commands
#: as before can wait on the store's commit at once (and share it)
THREADS = 40
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:  # made on first use: a pool made before the server forks its workers would not run
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="downloads-request")
        return _pool


async def blocking(call: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``call(*args, **kwargs)`` in a thread, keeping the event loop free; the request's context
    variables go with it (a trace span started around the request is the call's parent).

    One hand-off per request: an ``async`` route that calls this pays one thread hop where a
    plain ``def`` route with a response model pays two (FastAPI validates its answer in a thread).
    """
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(
        _executor(), functools.partial(context.run, call, *args, **kwargs)
    )


async def command(service: DownloadsService, cmd: AccountCommand, key: str | None, response: Response) -> Body:
    """Run an account command in a thread and shape its answer with :func:`reply`."""
    return reply(response, await blocking(service.handle, cmd, idempotency_key=key))


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
        413: "body too large",
        422: "invalid request",
        503: "store unavailable or account busy",
    }.items()
}
