"""API Gateway's two event formats, one per API type the api function may be deployed behind (setting
`api_type`): `http`, an HTTP API's payload format 2.0, and `rest`, a REST API's proxy event (payload format
1.0). The resolver and the logger's correlation path follow the deployed type; what reads the event itself
(before routing) reads it through Powertools' data class of the event's own format."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, APIGatewayRestResolver
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent, APIGatewayProxyEventV2
from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent


class Included:
    """What both resolvers add: the names of the route groups included so far (api.app includes a
    dialect's routes on the first request in that dialect)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.included: set[str] = set()


class HttpResolver(Included, APIGatewayHttpResolver):
    """Powertools' HTTP API resolver routing as its REST one does: a trailing "/" is ignored, in the routes
    and in the path (Roe AI's SDK sends one), so both API types serve the same API."""

    def route(self, rule: str, *args: Any, **kwargs: Any) -> Any:
        return super().route(rule.rstrip("/"), *args, **kwargs)

    @staticmethod
    def _compile_regex(rule: str, base_regex: str = "^{}/*$") -> Any:
        return APIGatewayHttpResolver._compile_regex(rule, base_regex)


class RestResolver(Included, APIGatewayRestResolver):
    """Powertools' REST API resolver."""


Resolver = HttpResolver | RestResolver
RESOLVERS: dict[str, type[Resolver]] = {"http": HttpResolver, "rest": RestResolver}
CORRELATION_PATHS = {"http": correlation_paths.API_GATEWAY_HTTP, "rest": correlation_paths.API_GATEWAY_REST}


def is_http(event: dict[str, Any]) -> bool:
    """Payload 2.0 names its version; a REST event says 1.0 or nothing."""
    return event.get("version") == "2.0"


def read(event: dict[str, Any]) -> BaseProxyEvent:
    """`event` as its format's data class: method, routed path, headers (any case), query, body."""
    return APIGatewayProxyEventV2(event) if is_http(event) else APIGatewayProxyEvent(event)


def as_get(event: dict[str, Any]) -> dict[str, Any]:
    """The same request with the method GET (HEAD is answered as GET without the body)."""
    if not is_http(event):
        return {**event, "httpMethod": "GET"}
    context = event["requestContext"]
    return {**event, "requestContext": {**context, "http": {**context["http"], "method": "GET"}}}
