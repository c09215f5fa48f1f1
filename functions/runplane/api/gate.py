"""What every API request passes before routing: body limits and shape, the API key, its rate limit."""

from __future__ import annotations

import base64
import json
import math
from typing import Any

from runplane.domain.documents import MAX_DEPTH, too_deep
from runplane.domain.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from runplane.logic.keys import Principal, admit_request, authenticate
from runplane.logic.services import services

PUBLIC_PATHS = frozenset({"/", "/health", "/openapi.json", "/docs"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})  # a body sent with another method is ignored


def admit(event: dict) -> Principal | None:
    """The caller of `event` (None on a public path), once its body is acceptable JSON (an object)."""
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    body = (event.get("body") or "") if event.get("httpMethod") in BODY_METHODS else ""
    limit = services().settings.max_request_bytes
    if len(body) > limit:
        raise PayloadTooLarge(limit)
    content_type = headers.get("content-type") or "application/json"
    if body and content_type.split(";")[0].strip().lower() != "application/json":
        raise UnsupportedMediaType(content_type)
    if ((event.get("path") or "/").rstrip("/") or "/") in PUBLIC_PATHS:
        return None
    principal = authenticate(headers.get("authorization"))
    admit_request(principal)
    if body:
        _check_json(body, encoded=bool(event.get("isBase64Encoded")))
    return principal


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    if math.isinf(number := float(text)):
        raise ValueError(f"{text} is out of range")
    return number


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise _DuplicateKey(key)
        document[key] = value
    return document


def _check_json(body: str, *, encoded: bool) -> None:
    """Refuse what Python's parser accepts but JSON, DynamoDB or pydantic do not: NaN, Infinity and numbers
    out of range, lone surrogates (no UTF-8 for them), nesting deeper than MAX_DEPTH, a key twice in an
    object (last-wins would hide a mistake); and a body that is not an object (null, an array, a scalar)."""
    try:
        text = base64.b64decode(body).decode() if encoded else body
        document = json.loads(
            text, parse_constant=_refuse_constant, parse_float=_finite, object_pairs_hook=_unique_keys
        )
        json.dumps(document, ensure_ascii=False).encode()
    except _DuplicateKey as twice:
        raise InvalidRequest(
            f"Request body has the key {twice.args[0]!r} twice in an object", "invalid_json"
        ) from None
    except (ValueError, RecursionError):  # UnicodeError and JSONDecodeError are ValueErrors
        raise InvalidRequest("Request body is not valid JSON", "invalid_json") from None
    if too_deep(document):
        raise InvalidRequest(f"Request body nests deeper than {MAX_DEPTH} levels", "invalid_json")
    if not isinstance(document, dict):
        raise InvalidRequest(f"Request body must be a JSON object, not {_kind(document)}", "invalid_body")


def _kind(document: Any) -> str:
    if document is None:
        return "null"
    return {list: "an array", str: "a string", bool: "a boolean"}.get(type(document), "a number")
