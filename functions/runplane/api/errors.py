"""The one place errors become HTTP responses: `{"error": message, "code": code, "issues": [...]}`,
reshaped for the request's dialect (Roe AI, Cotool) by that dialect's `error_body`."""

from __future__ import annotations

import json
from importlib import import_module
from typing import Any, get_args

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError

from runplane.api.common import Dialect, current_dialect, current_request_id, dialect_of
from runplane.domain.errors import (
    Conflict,
    Forbidden,
    InsufficientCredits,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RunNotSucceeded,
    RunplaneError,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
    WrongAccount,
)
from runplane.domain.models import RESOURCE_FORMS, ErrorBody, RunnableKind
from runplane.observability import logger

RUNNABLE_KINDS = frozenset(get_args(RunnableKind))  # the union members a runnable body is validated as
STATUS_BY_ERROR: dict[type[RunplaneError], int] = {
    InvalidRequest: 400,
    Unauthorized: 401,
    InsufficientCredits: 402,
    Forbidden: 403,
    WrongAccount: 403,
    NotFound: 404,
    Conflict: 409,
    RunNotSucceeded: 422,
    PayloadTooLarge: 413,
    TooManyRequests: 429,
    UnsupportedMediaType: 415,
}


def json_response(status: int, body: str, headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=status, content_type="application/json", body=body, headers=headers)


# the module whose `error_body` reshapes a dialect's errors, imported with the dialect's first error
DIALECT_BODIES = {Dialect.roe: "runplane.api.roe_shapes", Dialect.cotool: "runplane.api.cotool_shapes"}


def _error_parts(
    status: int,
    message: str,
    code: str,
    issues: list[dict[str, str]] | None = None,
    missing_perms: list[str] | None = None,
    started: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[int, str, dict[str, str]]:
    error = ErrorBody(error=message, code=code, issues=issues or [], missingPerms=missing_perms)
    if shapes := DIALECT_BODIES.get(current_dialect.get()):
        error = import_module(shapes).error_body(status, error, started or [])
    body = error.model_dump_json(exclude_none=True)
    if extra:  # fields the dialect's error schema declares for this answer alone
        body = json.dumps({**json.loads(body), **extra}, separators=(",", ":"))
    headers = {"Content-Type": "application/json"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="runplane"'
    return status, body, headers


def _domain_parts(error: RunplaneError) -> tuple[int, str, dict[str, str]]:
    status = next((s for cls, s in STATUS_BY_ERROR.items() if isinstance(error, cls)), 400)
    issues = [{"field": i.field, "message": i.message} for i in error.issues]
    status, body, headers = _error_parts(
        status,
        error.message,
        error.code,
        issues,
        getattr(error, "missing", None),
        error.started,
    )
    if isinstance(error, TooManyRequests):
        headers["Retry-After"] = str(error.retry_after)
    return status, body, headers


def error_response(
    status: int,
    message: str,
    code: str,
    issues: list[dict[str, str]] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    status, body, headers = _error_parts(status, message, code, issues, extra=extra)
    return json_response(status, body, headers)


def framing_error(path: str, status: int, message: str, code: str) -> tuple[int, str, dict[str, str]]:
    """(status, body, headers) of an error the HTTP layer answers before any route runs (a malformed
    request, a URL too long), in the dialect of `path`."""
    dialect = current_dialect.set(dialect_of(path))
    try:
        return _error_parts(status, message, code)
    finally:
        current_dialect.reset(dialect)


def from_domain(error: RunplaneError) -> Response:
    status, body, headers = _domain_parts(error)
    return json_response(status, body, headers)


def proxy_response(error: RunplaneError) -> dict[str, Any]:
    """The same error as an API Gateway proxy response, for requests refused before routing."""
    return _proxy(*_domain_parts(error))


def _proxy(status: int, body: str, headers: dict[str, str]) -> dict[str, Any]:
    return {"statusCode": status, "headers": headers, "body": body, "isBase64Encoded": False}


def from_validation(error: RequestValidationError) -> Response:
    problems: list[dict[str, Any]] = list(error.errors())
    if any(p.get("type") == "json_invalid" for p in problems):
        return error_response(400, "Request body is not valid JSON", "invalid_json")
    issues = [_issue(problem) for problem in problems]
    return error_response(400, "Request validation failed", "validation_error", issues)


def _issue(problem: dict[str, Any]) -> dict[str, str]:
    """A validation problem as an issue. A body with a discriminator (a runnable's `kind`) names the
    discriminator when it is missing or unknown, and never the union member in the location (nor a run
    resource's form)."""
    parts = [str(part) for part in problem.get("loc", ())]
    if len(parts) > 1 and parts[0] == "body" and parts[1] in ("body", "request"):
        parts.pop(1)  # Powertools nests the body model's own name in the location
    if problem.get("type") in ("union_tag_invalid", "union_tag_not_found"):
        discriminator = str(problem["ctx"]["discriminator"]).strip("'")
        return {"field": ".".join([*parts, discriminator]), "message": problem.get("msg", "invalid")}
    if len(parts) > 1 and parts[0] == "body" and parts[1] in RUNNABLE_KINDS:
        parts.pop(1)
    parts = [p for i, p in enumerate(parts) if not (i and parts[i - 1] == "resource" and p in RESOURCE_FORMS)]
    return {"field": ".".join(parts), "message": problem.get("msg", "invalid")}


def _unexpected_parts() -> tuple[int, str, dict[str, str]]:
    logger.exception("unhandled error")
    request_id = current_request_id.get()
    named = f" under request id {request_id}" if request_id else ""
    return _error_parts(500, f"Internal error; it has been logged{named}", "internal_error")


def from_unexpected(error: Exception) -> Response:
    status, body, headers = _unexpected_parts()
    return json_response(status, body, headers)


def proxy_unexpected() -> dict[str, Any]:
    """An unexpected error outside the resolver (an AWS error while authenticating, say) as the JSON 500."""
    return _proxy(*_unexpected_parts())
