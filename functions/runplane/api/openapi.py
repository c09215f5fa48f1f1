"""The OpenAPI document: what the routes declare, finished with what every operation shares.

A route declares its success answers (`ok`, `no_content`) and the errors its own logic raises (`errors`).
`finish` adds the errors the front door can answer on any operation (bad key, rate limit, body limits,
an internal error), each in the dialect's error schema, and removes the 422 the resolver documents by
default, which this service never sends (validation errors are 400).
"""

from __future__ import annotations

import re
from typing import Any

from runplane.api.common import Dialect, dialect_of

JSON = "application/json"
REF = "#/components/schemas/"
SHARED_ERRORS = {
    400: "Invalid request: the body is not JSON or a parameter is malformed (`issues` names each problem)",
    401: "No API key, or a key that is unknown or revoked",
    413: "The request body is larger than the deployment allows",
    415: "The request body is in a media type the operation does not accept (most accept only JSON)",
    429: "The key's rate limit is exceeded: retry after `Retry-After` seconds",
    500: "Internal error; the message names the request id in the logs",
}


BODY_EXTENSION = "x-request-body"


def request_body(description: str, schemas: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """`openapi_extensions` for a route that reads its own body: `schemas` by media type."""
    content = {media_type: {"schema": schema} for media_type, schema in schemas.items()}
    return {BODY_EXTENSION: {"description": description, "required": False, "content": content}}


def ok(model: Any, description: str) -> dict:
    """A success answer whose body is `model`."""
    return {"description": description, "content": {JSON: {"model": model}}}


def no_content(description: str) -> dict:
    return {"description": description, "content": {}}  # empty content: no body (the resolver adds none)


ROUTE_ERRORS = {
    400: "Invalid request (`issues` names each problem)",
    402: "A credit budget of the account is spent",
    403: "The key lacks a permission this needs (`missingPerms` names it)",
    404: "No such resource in the caller's account",
    409: "Conflicts with the resource's current state",
    422: "The run ended without succeeding",
}


def errors(model: type, *answers: int | tuple[int, str]) -> dict:
    """The errors a route's logic answers, each a status or (status, why), in the dialect's `model`."""
    pairs = (answer if isinstance(answer, tuple) else (answer, ROUTE_ERRORS[answer]) for answer in answers)
    return {status: ok(model, why) for status, why in pairs}


def finish(document: dict[str, Any], error_schema: dict[str, str], public: frozenset[str]) -> dict[str, Any]:
    """`document` with the shared errors added (in `error_schema[tag]`), the resolver's unsent 422
    removed, Roe AI's trailing slashes kept, and the `public` paths marked as needing no key."""
    paths: dict[str, Any] = {}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            schema = {"$ref": REF + error_schema[operation["tags"][0]]}  # every operation has its tag
            _finish_operation(method, operation, schema, secured=path not in public)
        paths[_as_served(path)] = operations
    document["paths"] = paths
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError", "ResponseValidationError"):
        schemas.pop(name, None)
    return document


def _finish_operation(method: str, operation: dict[str, Any], schema: dict, *, secured: bool) -> None:
    if BODY_EXTENSION in operation:  # a route that reads its body itself, in more than one media type
        operation["requestBody"] = operation.pop(BODY_EXTENSION)
    for parameter in operation.get("parameters", []):
        _present_or_absent(parameter["schema"])
    answers = operation["responses"]
    if _is_default_422(answers.get("422")):
        del answers["422"]
    for answer in answers.values():
        if answer.get("content") == {}:
            del answer["content"]
    shared = {500}
    if not secured:
        operation["security"] = []
    else:
        shared |= {401, 429}
    if operation.get("parameters") or operation.get("requestBody"):
        shared.add(400)
    if method in ("post", "put", "patch"):
        shared |= {400, 413, 415}
    for status in sorted(shared):
        answers.setdefault(
            str(status), {"description": SHARED_ERRORS[status], "content": {JSON: {"schema": schema}}}
        )
    operation["responses"] = dict(sorted(answers.items()))


def _present_or_absent(schema: dict[str, Any]) -> None:
    """A parameter is sent or not, never null: `str | None` is documented as a string."""
    branches = [branch for branch in schema.get("anyOf", []) if branch != {"type": "null"}]
    if len(branches) == 1:
        del schema["anyOf"]
        schema.update(branches[0])


def _is_default_422(answer: dict | None) -> bool:
    schema = ((answer or {}).get("content") or {}).get(JSON, {}).get("schema", {})
    return schema.get("$ref") == REF + "HTTPValidationError"


def _as_served(path: str) -> str:
    """Roe AI's paths end with a slash, as its clients send them (the resolver matches either way)."""
    return f"{path}/" if dialect_of(path) is Dialect.roe else path


def for_deployment(
    document: dict[str, Any],
    *,
    functions: list[str],
    lambda_functions: list[str],
    bedrock_models: list[str],
    max_run_seconds: int,
    max_async_run_seconds: int,
) -> dict[str, Any]:
    """`document` with this deployment's limits, so that what it says is valid is accepted: the python
    functions registered, the Lambda functions and Bedrock models it may call (a kind it may not use at
    all is left out), the longest run."""
    schemas = document["components"]["schemas"]
    schemas["PythonConfig"]["properties"]["function"]["enum"] = sorted(functions)
    for model, field, patterns in (
        ("LambdaConfig", "function_arn", lambda_functions),
        ("BedrockConfig", "model_id", bedrock_models),
    ):
        if "*" in patterns or any("[" in pattern for pattern in patterns):
            continue  # anything goes, or a character class the document's regex would read otherwise
        if not patterns:
            _drop_kind(document, model.removesuffix("Config").lower(), model.replace("Config", "Runnable"))
            continue
        alternatives = "|".join(_shell_pattern(pattern) for pattern in patterns)
        schemas[model]["properties"][field]["allOf"] = [{"pattern": f"^(?:{alternatives})$"}]
    # a worker executes python and bedrock runs; http and lambda ones may be async agents' (a run's
    # limit is its runnable's)
    longest = {"PythonRunnable": max_run_seconds, "BedrockRunnable": max_run_seconds}
    for model in ("StartRunRequest", "PythonRunnable", "HttpRunnable", "LambdaRunnable", "BedrockRunnable"):
        if model in schemas:
            maximum = longest.get(model, max(max_run_seconds, max_async_run_seconds))
            schemas[model]["properties"]["timeout_seconds"]["anyOf"][0]["maximum"] = maximum
    return document


def _shell_pattern(pattern: str) -> str:
    """A shell-style pattern (`*`, `?`) as an ECMA regex; every other character stands for itself."""
    return "".join(
        ".*" if c == "*" else "." if c == "?" else re.escape(c) if c in "\\^$.|+()[]{}" else c
        for c in pattern
    )


def _drop_kind(document: dict[str, Any], kind: str, model: str) -> None:
    for operations in document["paths"].values():
        for operation in operations.values():
            schema = operation.get("requestBody", {}).get("content", {}).get(JSON, {}).get("schema", {})
            if schema.get("discriminator", {}).get("propertyName") == "kind":
                schema["oneOf"] = [branch for branch in schema["oneOf"] if branch["$ref"] != REF + model]
                del schema["discriminator"]["mapping"][kind]
    document["components"]["schemas"].pop(model, None)
    document["components"]["schemas"].pop(model.replace("Runnable", "Config"), None)
