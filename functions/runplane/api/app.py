"""Builds the API resolver: routes, authentication, body limit, error mapping, OpenAPI and /docs.

`create_app()` returns a fresh resolver: a resolver holds the current request, so each concurrent
caller (a Lambda execution environment, a local gateway thread) needs its own.
"""

from __future__ import annotations

import base64
import json
import math
from functools import cache

from aws_lambda_powertools.event_handler import APIGatewayRestResolver
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer, Tag

from runplane.api import cotool, errors, roe, v1
from runplane.api.common import Dialect, current_dialect, current_principal, current_request_id, dialect_of
from runplane.domain.documents import MAX_DEPTH, too_deep
from runplane.domain.errors import InvalidRequest, PayloadTooLarge, RunplaneError, UnsupportedMediaType
from runplane.logic.keys import Principal, admit_request, authenticate
from runplane.logic.services import services

TITLE = "Runplane API"
VERSION = "1.0.0"
PUBLIC_PATHS = frozenset({"/openapi.json", "/docs"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # the routes that read a body
SECURITY = {"security_schemes": {"bearerAuth": HTTPBearer()}, "security": [{"bearerAuth": []}]}
TAGS = [
    Tag(name=Dialect.refactor, description="The native API: runnables, runs, callbacks, keys, the account"),
    Tag(name=Dialect.roe, description="Roe AI's agent API: an agent is a runnable, a job is a run"),
    Tag(name=Dialect.cotool, description="Cotool's agent API: an agent is a runnable"),
]
DOCUMENT = {"title": TITLE, "version": VERSION, "tags": TAGS, **SECURITY}


def _admit(event: dict) -> Principal | None:
    """Body size and type, the API key, its rate limit: checked before the resolver parses anything."""
    body = event.get("body") or ""
    limit = services().settings.max_request_bytes
    if len(body) > limit:
        raise PayloadTooLarge(limit)
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    content_type = headers.get("content-type") or "application/json"
    if body and not content_type.lower().startswith("application/json"):
        raise UnsupportedMediaType(content_type)
    if event.get("path") in PUBLIC_PATHS:
        return None
    principal = authenticate(headers.get("authorization"))
    admit_request(principal)
    if body and event.get("httpMethod") in BODY_METHODS:
        _check_json(body, encoded=bool(event.get("isBase64Encoded")))
    return principal


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    if math.isinf(number := float(text)):
        raise ValueError(f"{text} is out of range")
    return number


def _check_json(body: str, *, encoded: bool) -> None:
    """Refuse what Python's parser accepts but JSON, DynamoDB or pydantic do not: NaN, Infinity and numbers
    out of range, lone surrogates (no UTF-8 for them), nesting deeper than MAX_DEPTH. Later each would be
    a failed run or a 500."""
    try:
        text = base64.b64decode(body).decode() if encoded else body
        document = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
        json.dumps(document, ensure_ascii=False).encode()
    except (ValueError, RecursionError):  # UnicodeError and JSONDecodeError are ValueErrors
        raise InvalidRequest("Request body is not valid JSON", "invalid_json") from None
    if too_deep(document):
        raise InvalidRequest(f"Request body nests deeper than {MAX_DEPTH} levels", "invalid_json")


def serve(app: APIGatewayRestResolver, event: dict, context: object) -> dict:
    """One API request: admission, then the resolver with the caller and the dialect in scope."""
    dialect = current_dialect.set(dialect_of(event.get("path") or ""))
    request_id = current_request_id.set(getattr(context, "aws_request_id", None))
    caller = None
    try:
        caller = current_principal.set(_admit(event))
        return app.resolve(event, context)
    except RunplaneError as error:  # refused before routing (the resolver maps its own errors)
        return errors.proxy_response(error)
    except Exception:  # never an invocation error: API Gateway would answer 502
        return errors.proxy_unexpected()
    finally:
        if caller is not None:
            current_principal.reset(caller)
        current_request_id.reset(request_id)
        current_dialect.reset(dialect)


def create_app() -> APIGatewayRestResolver:
    app = APIGatewayRestResolver(enable_validation=True)
    for dialect in (v1, roe, cotool):
        app.include_router(dialect.router)
    app.exception_handler(RunplaneError)(errors.from_domain)
    app.exception_handler(RequestValidationError)(errors.from_validation)
    app.exception_handler(Exception)(errors.from_unexpected)
    app.not_found(lambda _: errors.error_response(404, "No such route", "route_not_found"))

    @app.get("/openapi.json", include_in_schema=False)
    def openapi():
        return errors.json_response(200, _openapi_document(app))

    app.enable_swagger(path="/docs", **DOCUMENT)
    return app


@cache
def _openapi_document(app: APIGatewayRestResolver) -> str:
    return app.get_openapi_json_schema(**DOCUMENT)
