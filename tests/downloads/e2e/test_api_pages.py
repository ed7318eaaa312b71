"""What a browser keeps and loads (issue 18, item 8), against the real server process.

JSON answers, errors included, are never stored by a cache; the API documentation
pages load nothing from another origin, with the support page's security headers;
the support page's sign-in form never sends its token in a URL.
"""

from __future__ import annotations

import re
import socket
from html.parser import HTMLParser

import httpx

from tests.support.server import Server, unique_id

#: headers /admin is served with, and so every page of this origin that runs a script (and its policy, below)
SAME_HEADERS = ("x-content-type-options", "referrer-policy")


class Links(HTMLParser):
    """Every URL a page makes the browser load or send to: sources, links and form actions."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.forms: dict[str, dict[str, str | None]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("src", "href", "action", "spec-url", "data"):
            value = found.get(name)
            if value is not None:
                self.urls.append(value)
        if tag == "form":
            self.forms[found.get("id") or f"form-{len(self.forms)}"] = found


def directives(policy: str) -> dict[str, str]:
    """A content security policy as its directives, name to value."""
    parts = (d.strip().split(" ", 1) for d in policy.split(";") if d.strip())
    return {p[0]: p[1] if len(p) > 1 else "" for p in parts}


def links(html: str) -> Links:
    parser = Links()
    parser.feed(html)
    return parser


def _raw(server: Server, request: bytes) -> bytes:
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_every_json_answer_and_every_error_says_no_store(shared_server: Server) -> None:
    account = unique_id()
    with shared_server.client() as http, shared_server.client(role=None) as anonymous:
        answers = {
            "created": http.post("/v1/accounts", json={"account_id": account, "plan": "basic"}),
            "read": http.get(f"/v1/accounts/{account}"),
            "not found": http.get(f"/v1/accounts/{unique_id()}"),
            "invalid": http.post("/v1/accounts", json={"account_id": account}),
            "refused": http.post("/v1/accounts", json={"account_id": account, "plan": "basic"}),
            "no token": anonymous.get(f"/v1/accounts/{account}"),
            "bad token": anonymous.get(f"/v1/accounts/{account}", headers={"Authorization": "Bearer nope"}),
            "role": http.get("/v1/projections"),
            "no route": http.get("/v1/nowhere"),
            "method": http.delete("/v1/accounts"),
            "too large": http.post("/v1/accounts", content=b"x" * 70_000, headers={"Content-Type": "application/json"}),
            "media type": http.post("/v1/accounts", content=b"a=b", headers={"Content-Type": "text/plain"}),
            "schema": anonymous.get("/openapi.json"),
            "health": anonymous.get("/healthz"),
        }
    for name, answer in answers.items():
        assert answer.headers["content-type"].startswith("application/json"), (name, answer.headers)
        assert answer.headers.get("cache-control") == "no-store", (name, answer.status_code, answer.headers)
    assert {answers[n].status_code for n in ("no token", "bad token", "role", "too large", "media type")} == {
        401,
        403,
        413,
        415,
    }

    encoded = _raw(shared_server, b"GET /v1/accounts/a%2Fb HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head = encoded.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 400 ") and b"\r\ncache-control: no-store" in head, head


def test_the_support_pages_files_may_still_be_cached(shared_server: Server) -> None:
    with httpx.Client(base_url=shared_server.url, timeout=30) as anonymous:
        for path in ("/admin", "/admin/app.js", "/admin/app.css"):
            answer = anonymous.get(path)
            assert answer.status_code == 200
            assert "no-store" not in answer.headers.get("cache-control", ""), (path, answer.headers)


def test_the_api_documentation_pages_load_only_files_this_server_serves(shared_server: Server) -> None:
    with httpx.Client(base_url=shared_server.url, timeout=30) as anonymous:
        admin = anonymous.get("/admin")
        for path in ("/docs", "/redoc"):
            page = anonymous.get(path)
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), path
            for header in SAME_HEADERS:
                assert page.headers.get(header) == admin.headers[header], (path, header, page.headers)
            # The support page's policy, directive by directive; Redoc's page adds only what Redoc needs:
            # its <style> elements with this response's nonce, and its search index in a worker it builds.
            policy = directives(page.headers["content-security-policy"])
            assert policy.items() >= directives(admin.headers["content-security-policy"]).items(), (path, policy)
            added = set(policy) - set(directives(admin.headers["content-security-policy"]))
            if path == "/docs":
                assert added == set(), policy
            else:
                assert added == {"style-src", "worker-src"} and policy["worker-src"] == "blob:", policy
                nonce = re.fullmatch(r"'self' 'nonce-([A-Za-z0-9_-]{16,})'", policy["style-src"])
                assert nonce and nonce[1] != directives(anonymous.get(path).headers["content-security-policy"])[
                    "style-src"
                ].split("nonce-")[1].rstrip("'"), "a nonce is made for each response"
            assert "<script>" not in page.text.replace(" ", ""), "an inline script (the policy would block it)"
            assert not re.search(r"(https?:)?//", page.text), f"{path} names another origin"
            urls = links(page.text).urls
            assert urls, path
            for url in urls:
                assert url.startswith("/") and not url.startswith("//"), (path, url)
                asset = anonymous.get(url)
                assert asset.status_code == 200, (path, url, asset.status_code)
                if url.endswith(".js"):
                    assert asset.headers["content-type"].startswith("text/javascript"), (url, asset.headers)
                    assert asset.headers.get("x-content-type-options") == "nosniff", url
                    assert not re.search(r"""["'`]https?://[^"'`]*\.(js|css|woff2?)\b""", asset.text), url


def test_the_sign_in_form_posts_so_its_token_never_goes_into_a_url(shared_server: Server) -> None:
    with httpx.Client(base_url=shared_server.url, timeout=30) as anonymous:
        page = links(anonymous.get("/admin").text)
    form = page.forms["sign-in-form"]
    assert (form.get("method") or "get").lower() == "post", form
