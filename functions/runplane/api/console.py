"""The run console's files (runplane/console) at /console/. They need no key: the page asks for one and
calls the public API with it. Served outside the resolver, so no other request imports this module.

Every answer carries a strict Content-Security-Policy (scripts, styles and requests of this origin only,
no inline script, no eval, Trusted Types so no HTML string reaches the DOM) and is revalidated by ETag.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from runplane.api import formats
from runplane.api.errors import framing_error, proxy_unexpected

PREFIX = "/console"
FOLDER = Path(__file__).resolve().parents[1] / "console"
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
NAME = re.compile(r"[a-z0-9][a-z0-9_-]*\.(?:html|js|css|svg)")  # what a file may be called: flat, no dots
ALLOW = "GET, HEAD, OPTIONS"
CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",  # forms are handled by script: none is ever submitted, so no key in a URL
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@dataclass(frozen=True)
class Asset:
    body: str
    etag: str
    content_type: str


@cache
def assets() -> dict[str, Asset]:
    """The console's files by name, read once per execution environment."""
    found = {}
    for path in sorted(FOLDER.iterdir()):
        if path.is_file() and NAME.fullmatch(path.name):
            body = path.read_text(encoding="utf-8")
            etag = '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'
            found[path.name] = Asset(body, etag, TYPES[path.suffix])
    return found


def serve(event: dict[str, Any]) -> dict[str, Any]:
    """The answer to a request for /console or a path under it (either API type's event); HEAD is GET
    without the body."""
    try:
        response = _answer(event)
    except Exception:  # never an invocation error: API Gateway would answer 502
        response = proxy_unexpected()
    return {**response, "body": ""} if formats.read(event).http_method == "HEAD" else response


def _answer(event: dict[str, Any]) -> dict[str, Any]:
    request = formats.read(event)
    path, method = request.path, request.http_method
    if method == "OPTIONS":
        return _reply(204, {"Allow": ALLOW})
    if method not in ("GET", "HEAD"):
        return _error(path, 405, f"{method} is not allowed here; use {ALLOW}", "method_not_allowed")
    name = path.removeprefix(PREFIX)
    if not name:  # relative URLs in the page need the slash; relative here too, to keep a stage's prefix
        return _reply(308, {"Location": "console/", "Cache-Control": "no-cache"})
    asset = assets().get(name.removeprefix("/") or "index.html")  # a lookup: no path reaches the disk
    if asset is None:
        return _error(path, 404, "No such console file", "route_not_found")
    headers = {
        "Content-Type": asset.content_type,
        "Cache-Control": "no-cache",  # kept, but checked each time: the ETag makes that a 304
        "ETag": asset.etag,
        **SECURITY_HEADERS,
    }
    if _matches(request.headers.get("if-none-match"), asset.etag):
        return _reply(304, headers)
    return _reply(200, headers, asset.body)


def _matches(if_none_match: str | None, etag: str) -> bool:
    tags = {tag.strip().removeprefix("W/") for tag in (if_none_match or "").split(",")}
    return etag in tags or "*" in tags


def _reply(status: int, headers: dict[str, str], body: str = "") -> dict[str, Any]:
    return {"statusCode": status, "headers": headers, "body": body, "isBase64Encoded": False}


def _error(path: str, status: int, message: str, code: str) -> dict[str, Any]:
    status, body, headers = framing_error(path, status, message, code)
    headers = {**headers, "X-Content-Type-Options": "nosniff"}
    if status == 405:
        headers["Allow"] = ALLOW
    return _reply(status, headers, body)
