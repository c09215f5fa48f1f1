"""What every API request passes before routing: body limits and shape, the API key, its rate limit."""

from __future__ import annotations

import re

from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent

from runplane.api import formats
from runplane.api.forms import JSON, json_object, media_type
from runplane.domain.errors import PayloadTooLarge, UnsupportedMediaType
from runplane.logic import watch_tokens
from runplane.logic.keys import Principal, admit_request, authenticate
from runplane.logic.services import services

PUBLIC_PATHS = frozenset({"/", "/health", "/openapi.json", "/docs"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # a body sent with another method is ignored
API_GATEWAY_MAX_BODY = 10 * 1024 * 1024  # API Gateway refuses larger payloads itself
# Roe AI's single agent runs, which its SDK sends as a form: the route reads the body (api.forms), once it
# has found the agent, so an unknown agent is a 404 whatever the media type
FORM_ROUTES = re.compile(r"/v1/agents/run/[^/]+(?:/versions/[^/]+)?(?:/async)?/?")
# What a watch token (logic.watch_tokens) opens: one run's events, for a browser's EventSource
# What an async agent calls with its run token rather than a key (logic.agent_reports)
RUN_REPORT = re.compile(r"/v1/run/[^/]+/report/?")
EVENT_STREAM = re.compile(r"/v1/run/(?P<run>[0-9a-fA-F-]{36})/events")


def admit(event: dict) -> Principal | None:
    """The caller of `event` (either format; None on a public path), once its body is acceptable: JSON (an
    object), or on FORM_ROUTES anything but malformed JSON."""
    request = formats.read(event)
    body = (request.body or "") if request.http_method in BODY_METHODS else ""
    encoded = bool(request.is_base64_encoded)
    limit = min(services().settings.max_request_bytes, API_GATEWAY_MAX_BODY)
    if body_bytes(body, encoded=encoded) > limit:
        raise PayloadTooLarge(limit)
    path = request.path or "/"
    content_type = request.headers.get("content-type")
    json_body = bool(body) and media_type(content_type) == JSON
    if body and not json_body and not FORM_ROUTES.fullmatch(path):
        raise UnsupportedMediaType(content_type or "")
    if (path.rstrip("/") or "/") in PUBLIC_PATHS:
        return None
    if RUN_REPORT.fullmatch(path):  # the route checks the run token itself
        if json_body:
            json_object(body, encoded=encoded)
        return None
    principal = _caller(request, path)
    admit_request(principal)
    if json_body:
        json_object(body, encoded=encoded)
    return principal


def _caller(request: BaseProxyEvent, path: str) -> Principal:
    """The key in `Authorization`; on a run's event stream, a watch token in `?token=` instead."""
    token = request.query_string_parameters.get("token")
    stream = EVENT_STREAM.fullmatch(path)
    headers = request.headers  # names in any case
    if token and stream and "authorization" not in headers and request.http_method in ("GET", "HEAD"):
        return watch_tokens.authenticate(token, stream["run"].lower())
    return authenticate(headers.get("authorization"))


def body_bytes(body: str, *, encoded: bool) -> int:
    """The size of the body as sent: its bytes once decoded from base64, else its UTF-8 bytes."""
    if encoded:
        return 3 * len(body) // 4 - body[-2:].count("=")
    return len(body.encode(errors="surrogatepass"))
