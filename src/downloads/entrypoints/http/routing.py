"""Looking at the app's routes from outside the router (middleware, error handlers)."""

from __future__ import annotations

from collections.abc import Iterator

from starlette.routing import BaseRoute

__all__ = ["flat_routes"]


def flat_routes(routes: list[BaseRoute]) -> Iterator[BaseRoute]:
    """The app's endpoint routes, looking inside included routers."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            yield from flat_routes(inner.routes)
        else:
            yield route
