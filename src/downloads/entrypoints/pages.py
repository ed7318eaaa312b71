"""Files served as pages of this origin (the support page, the API documentation), with one set of headers.

Every page of the origin that runs a script is served with the same security
headers: scripts, styles and images from this origin only (no inline script, no
other host), no framing, no referrer, no content-type guessing. A page that can
hold a token must not run anything another host sent.
"""

from __future__ import annotations

from importlib import resources

from starlette.responses import Response

__all__ = ["SECURITY_HEADERS", "packaged_file"]

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css"}


def packaged_file(package: str, *path: str) -> Response:
    """The file at ``path`` inside installed ``package``, typed by its suffix, with :data:`SECURITY_HEADERS`.

    Raises ``FileNotFoundError`` for a file the package does not hold and ``KeyError`` for an unknown suffix.
    """
    name = path[-1]
    data = resources.files(package).joinpath(*path).read_bytes()
    return Response(data, media_type=_TYPES[name[name.rindex(".") :]], headers=SECURITY_HEADERS)
