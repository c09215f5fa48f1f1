"""Builds the API resolver: routes, authentication, body limit, error mapping, OpenAPI and /docs.

`create_app()` returns a fresh resolver: a resolver holds the current request, so each concurrent
caller (a Lambda execution environment, a local gateway thread) needs its own.
"""

from __future__ import annotations

from functools import cache

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer

from runplane.api import errors, v1
from runplane.domain.errors import PayloadTooLarge, RunplaneError
from runplane.logic.keys import authenticate
from runplane.logic.services import services

TITLE = "Runplane API"
VERSION = "1.0.0"
PUBLIC_PATHS = frozenset({"/openapi.json", "/docs"})
SECURITY = {"security_schemes": {"bearerAuth": HTTPBearer()}, "security": [{"bearerAuth": []}]}


def _guard(app: APIGatewayRestResolver, next_middleware: NextMiddleware) -> Response:
    """Every request: body size limit, then the API key, before the route sees anything."""
    event = app.current_event
    limit = services().settings.max_request_bytes
    if event.body and len(event.body) > limit:
        raise PayloadTooLarge(limit)
    if event.path not in PUBLIC_PATHS:
        token = v1.current_principal.set(authenticate(event.headers.get("authorization")))
        try:
            return next_middleware(app)
        finally:
            v1.current_principal.reset(token)
    return next_middleware(app)


def create_app() -> APIGatewayRestResolver:
    app = APIGatewayRestResolver(enable_validation=True)
    app.use(middlewares=[_guard])
    app.include_router(v1.router)
    app.exception_handler(RunplaneError)(errors.from_domain)
    app.exception_handler(RequestValidationError)(errors.from_validation)
    app.exception_handler(Exception)(errors.from_unexpected)
    app.not_found(lambda _: errors.error_response(404, "No such route", "route_not_found"))

    @app.get("/openapi.json", include_in_schema=False)
    def openapi() -> Response:
        return errors.json_response(200, _openapi_document(app))

    app.enable_swagger(path="/docs", title=TITLE, version=VERSION, **SECURITY)
    return app


@cache
def _openapi_document(app: APIGatewayRestResolver) -> str:
    return app.get_openapi_json_schema(title=TITLE, version=VERSION, **SECURITY)
