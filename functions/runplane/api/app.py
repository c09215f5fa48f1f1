"""Builds the API resolver: routes, authentication, body limit, error mapping, OpenAPI and /docs.

`create_app()` returns a fresh resolver: a resolver holds the current request, so each concurrent
caller (a Lambda execution environment, a local gateway thread) needs its own.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import import_module

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent

from runplane.api import errors, formats, openapi
from runplane.api.common import (
    REFUSALS,
    Dialect,
    current_dialect,
    current_principal,
    current_request_id,
    dialect_of,
)
from runplane.api.gate import PUBLIC_PATHS, admit
from runplane.domain.errors import RunplaneError
from runplane.logic.services import services
from runplane.settings import Settings, get_settings

# The modules of each dialect's routes (runplane.api.*). A resolver includes them on the first request in
# that dialect: no route of a dialect matches a path of another (tests/unit/test_api_imports.py), so the
# routes of the others are not needed to answer it, a 404 or 405 included.
ROUTES: dict[Dialect, tuple[str, ...]] = {
    Dialect.refactor: ("service", "v1", "callbacks", "resources", "watch", "reports"),
    Dialect.roe: ("roe", "roe_jobs", "roe_agents"),
    Dialect.cotool: ("cotool",),
}
TITLE = "Runplane API"
VERSION = "1.0.0"
DESCRIPTION = (
    "Start runs of your runnables (code, HTTP agents, Lambda functions, Bedrock models), wait for or poll "
    "their results, and receive a signed callback when they end. Three run APIs share one core: "
    "re-factor's (native), Roe AI's and Cotool's. Every operation but the service doors and agents' reports needs "
    "`Authorization: Bearer rpk_…`."
)
ERROR_SCHEMAS = {Dialect.refactor: "ErrorBody", Dialect.roe: "ErrorResponse", Dialect.cotool: "ErrorBody"}


def serve(app: formats.Resolver, event: dict, context: object) -> dict:
    """One API request (an event of `app`'s API type), with CORS headers when the deployment allows other
    origins."""
    request = formats.read(event)
    if f"{request.path}/".startswith("/console/"):  # the console's files: no key, no routes (api.console)
        return import_module("runplane.api.console").serve(event)
    if origins := services().settings.cors_origins:  # browser pages of other origins (api.cors)
        return import_module("runplane.api.cors").serve(
            request, origins, lambda: _answer(app, event, request, context)
        )
    return _answer(app, event, request, context)


def _answer(app: formats.Resolver, event: dict, request: BaseProxyEvent, context: object) -> dict:
    """Admission, then the resolver with the caller and the dialect in scope. HEAD is answered as GET
    without the body."""
    dialect = current_dialect.set(dialect_of(request.path))
    request_id = current_request_id.set(getattr(context, "aws_request_id", None))
    head = request.http_method == "HEAD"
    caller = None
    try:
        caller = current_principal.set(admit(event))
        include(app, current_dialect.get())
        response = app.resolve(formats.as_get(event) if head else event, context)
    except RunplaneError as error:  # refused before routing (the resolver maps its own errors)
        response = errors.proxy_response(error)
    except Exception:  # never an invocation error: API Gateway would answer 502
        response = errors.proxy_unexpected()
    finally:
        if caller is not None:
            current_principal.reset(caller)
        current_request_id.reset(request_id)
        current_dialect.reset(dialect)
    return {**response, "body": "", "isBase64Encoded": False} if head else response


def create_app(api_type: str | None = None) -> formats.Resolver:
    """The resolver of `api_type` (`http` or `rest`; by default the deployment's)."""
    app = formats.RESOLVERS[api_type or get_settings().api_type](enable_validation=True)
    app.exception_handler(RunplaneError)(errors.from_domain)
    app.exception_handler(RequestValidationError)(errors.from_validation)
    app.exception_handler(Exception)(errors.from_unexpected)
    app.not_found(lambda _: _unrouted(app, app.current_event.http_method, app.current_event.path))

    @app.get("/openapi.json", include_in_schema=False)
    def openapi():
        return errors.json_response(200, document_json())

    @app.get("/docs", include_in_schema=False)
    def docs():
        return Response(200, "text/html", swagger_page(document_json()))

    return app


def include(app: formats.Resolver, *dialects: Dialect) -> None:
    """Include the routes of `dialects` in `app`, each dialect once."""
    for dialect in dialects:
        if dialect not in app.included:
            for name in ROUTES[dialect]:
                app.include_router(import_module(f"runplane.api.{name}").router)
            app.included.add(dialect)


def _unrouted(app: formats.Resolver, method: str, path: str) -> Response:
    """404 for a path no route serves; for a known path, OPTIONS lists its methods and any other
    method is 405, both with `Allow`. The routes are matched as the resolver matches them: a path a static
    route serves (`/v1/resources/uploads`) is not also a dynamic route's (`/v1/resources/{id}`)."""
    # the resolver keeps no public list of its routes
    static = [route for route in app._static_routes if route.rule.match(path)]
    routes = static or [route for route in app._dynamic_routes if route.rule.match(path)]
    allowed = sorted({route.method for route in routes if route.func not in REFUSALS})
    if not allowed:
        return errors.error_response(404, "No such route", "route_not_found")
    allow = ", ".join([*allowed, *(["HEAD"] if "GET" in allowed else []), "OPTIONS"])
    if method == "OPTIONS":
        return Response(204, None, "", headers={"Allow": allow})
    response = errors.error_response(405, f"{method} is not allowed here; use {allow}", "method_not_allowed")
    response.headers["Allow"] = allow
    return response


def document_json() -> str:
    """The OpenAPI document of this deployment (the same for every resolver of this process)."""
    return _document(services().settings.model_dump_json())


@cache
def _document(settings_json: str) -> str:
    """Built once per distinct settings (tests and local mode change them; Lambda does not)."""
    from runplane.runnables import registry

    settings = Settings.model_validate_json(settings_json)
    registry.load(settings.runnable_packages)
    finished = openapi.for_deployment(
        _finished(),
        functions=registry.names(),
        lambda_functions=settings.lambda_functions,
        bedrock_models=settings.bedrock_models,
        max_run_seconds=settings.max_run_seconds,
        max_async_run_seconds=settings.max_async_run_seconds,
    )
    return json.dumps(finished, separators=(",", ":"))


def _finished() -> dict:
    """Every dialect's routes as the resolver documents them, with the title, tags and security schemes,
    finished (`openapi.finish`)."""
    from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer, Tag

    from runplane.api import reports, service

    app = create_app()
    include(app, *Dialect)
    tags = [
        Tag(
            name=Dialect.refactor,
            description="re-factor's run API, Runplane's native dialect: runnables (what can run), runs (one "
            "execution each, `RunState`), callbacks, API keys and the account",
        ),
        Tag(name=Dialect.roe, description="Roe AI's agent API: an agent is a runnable, a job is a run"),
        Tag(name=Dialect.cotool, description="Cotool's agent API: an agent is a runnable"),
        Tag(name=service.TAG, description="What needs no key: this service's description and its liveness"),
    ]
    schemes = {
        "bearerAuth": HTTPBearer(),
        reports.SCHEME: HTTPBearer(description="An async agent's run token (`rpt_…`), for its run's reports"),
    }
    document = app.get_openapi_json_schema(
        title=TITLE,
        version=VERSION,
        description=DESCRIPTION,
        tags=tags,
        security_schemes=schemes,
        security=[{"bearerAuth": []}],
    )
    error_schemas = {**ERROR_SCHEMAS, service.TAG: "ErrorBody"}
    return openapi.finish(json.loads(document), error_schemas, PUBLIC_PATHS)


@cache
def swagger_page(document: str) -> str:  # cached: a new document (settings changed) makes a new page
    """Swagger UI over `document`, its script and style inlined (no request leaves for a CDN)."""
    from pathlib import Path

    from aws_lambda_powertools.event_handler.openapi import swagger_ui
    from aws_lambda_powertools.event_handler.openapi.swagger_ui.html import generate_swagger_html

    assets = Path(swagger_ui.__file__).parent
    script = (assets / "swagger-ui-bundle.min.js").read_text(encoding="utf-8")
    style = (assets / "swagger-ui.min.css").read_text(encoding="utf-8")
    return generate_swagger_html(document.replace("</", "<\\/"), script, style, None, None, False)
