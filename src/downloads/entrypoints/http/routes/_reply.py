"""Turning service replies into HTTP responses."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import os
import queue
import threading
from collections.abc import Callable
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


class _Threads:
    """A fixed set of threads taking calls from one queue, each answer handed back to its event loop.

    Lighter than ``run_in_executor`` (no ``concurrent.futures.Future`` with its lock and condition, no
    future chaining): one queue put, one ``call_soon_threadsafe``. Threads start on first use, in the
    process that uses them (a server forks its workers), and are daemons: a stopping worker does not
    wait for them (SQLite's journal makes an interrupted commit as if never begun).
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self.calls: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.started_in = 0  # the process that started them: threads do not survive a fork
        self.lock = threading.Lock()

    def submit(self, call: Callable[[], Any]) -> asyncio.Future[Any]:
        if self.started_in != os.getpid():
            with self.lock:
                if self.started_in != os.getpid():
                    self.calls = queue.SimpleQueue()
                    for n in range(self.count):
                        threading.Thread(
                            target=self._run, args=(self.calls,), name=f"downloads-request-{n}", daemon=True
                        ).start()
                    self.started_in = os.getpid()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.calls.put((loop, future, call))
        return future

    @staticmethod
    def _run(calls: queue.SimpleQueue[tuple[Any, ...]]) -> None:
        while True:
            loop, future, call = calls.get()
            try:
                outcome: tuple[Any, BaseException | None] = (call(), None)
            except BaseException as exc:  # handed to the awaiting request, which raises it
                outcome = (None, exc)
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (a stopping worker): nobody waits
                loop.call_soon_threadsafe(_settle, future, *outcome)
            del loop, future, call, outcome  # drop the references before blocking on the next call


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


_threads = _Threads(THREADS)


async def blocking(call: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``call(*args, **kwargs)`` in a thread, keeping the event loop free; the request's context
    variables go with it (a trace span started around the request is the call's parent).

    One hand-off per request: an ``async`` route that calls this pays one thread hop where a
    plain ``def`` route with a response model pays two (FastAPI validates its answer in a thread).
    """
    context = contextvars.copy_context()
    result: T = await _threads.submit(functools.partial(context.run, call, *args, **kwargs))
    return result


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
        410: "the account was erased (ACCOUNT_ERASED)",
        413: "body too large",
        422: "invalid request",
        503: "store unavailable or account busy",
    }.items()
}
