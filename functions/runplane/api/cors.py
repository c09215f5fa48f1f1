"""CORS, for browser pages on the origins of setting `cors_origins` (none by default: the api function
imports this module only when there are some). Every answer varies by `Origin`; an allowed origin's
answers name it, with the headers a page may read, and its preflights are answered before the key is
checked (a browser sends none with them). A preflight from another origin is an ordinary OPTIONS. No
credentials: a caller sends its key itself.

Behind a REST API and in the local stack this module answers; behind an HTTP API the gateway does, from the
same lists (infra/api.py), and ignores these headers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent

ANY = "*"
ALLOW_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE")
# what callers send beyond the safelisted headers (Accept, Content-Language, …)
ALLOW_HEADERS = (
    "Authorization",
    "Content-Type",
    "Idempotency-Key",
    "If-None-Match",
    "Last-Event-ID",
    "Prefer",
)
# what pages may read beyond the safelisted ones (Content-Type, Cache-Control, …)
EXPOSE_HEADERS = ("ETag", "Idempotent-Replayed", "Location", "Retry-After", "WWW-Authenticate")
MAX_AGE_SECONDS = 3600  # how long a browser keeps a preflight's answer (Chromium: at most 2 h)


def allowed_origin(origin: str | None, origins: Sequence[str]) -> str | None:
    """What `Access-Control-Allow-Origin` says to a request from `origin`; None: nothing."""
    if not origin:
        return None
    if ANY in origins:
        return ANY
    return origin if origin in origins else None


def serve(
    request: BaseProxyEvent, origins: Sequence[str], answer: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """`answer()` (the API's proxy response to `request`) with CORS headers, or an allowed preflight's."""
    allowed = allowed_origin(request.headers.get("origin"), origins)
    if allowed and request.http_method == "OPTIONS" and request.headers.get("access-control-request-method"):
        headers = {
            "Access-Control-Allow-Origin": allowed,
            "Access-Control-Allow-Methods": ", ".join(ALLOW_METHODS),
            "Access-Control-Allow-Headers": ", ".join(ALLOW_HEADERS),
            "Access-Control-Max-Age": str(MAX_AGE_SECONDS),
            "Vary": "Origin",
        }
        return {"statusCode": 204, "headers": headers, "body": "", "isBase64Encoded": False}
    added = {"Vary": "Origin"}
    if allowed:
        added |= {
            "Access-Control-Allow-Origin": allowed,
            "Access-Control-Expose-Headers": ", ".join(EXPOSE_HEADERS),
        }
    return _with_headers(answer(), added)


def _with_headers(response: dict[str, Any], added: dict[str, str]) -> dict[str, Any]:
    """`response` (either format) with `added`; a `Vary` it has already keeps its values."""
    if "multiValueHeaders" in response:  # a REST resolver's answer
        multi = dict(response["multiValueHeaders"])
        for name, value in added.items():
            multi[name] = [*multi.get(name, []), value] if name == "Vary" else [value]
        return {**response, "multiValueHeaders": multi}
    headers = dict(response.get("headers") or {})
    if "Vary" in headers:
        added = {**added, "Vary": f"{headers['Vary']}, {added['Vary']}"}
    return {**response, "headers": {**headers, **added}}
