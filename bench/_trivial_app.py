"""A trivial FastAPI app for ``bench_http``: the framework's ceiling on this machine.

Served by the same uvicorn as ``downloads serve`` (``python -m uvicorn
bench._trivial_app:app --workers 2``). Its one route takes the same JSON body as
acquire license, validates it with pydantic, and answers a small JSON object:
no store, no auth check, no middleware. It is a plain ``def`` like the
service's routes, so it pays the same thread-pool hop.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

__all__ = ["app"]


class Body(BaseModel):
    device_id: str
    title_id: str


app = FastAPI()


@app.get("/readyz")
def readyz() -> dict[str, str]:
    return {"status": "ready"}


@app.post("/echo")
def echo(body: Body) -> dict[str, Any]:
    return {"ok": True, "device_id": body.device_id, "title_id": body.title_id}
