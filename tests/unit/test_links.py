"""Absolute links (Location, Roe's `next`) as a caller of each deployment shape sees them."""

from __future__ import annotations

import pytest
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent
from runplane.api.common import absolute_url


def event(routed: str, seen: str, headers: dict[str, str]) -> APIGatewayProxyEvent:
    return APIGatewayProxyEvent({"path": routed, "headers": headers, "requestContext": {"path": seen}})


GATEWAY = {"Host": "abc.execute-api.eu-west-1.amazonaws.com", "X-Forwarded-Proto": "https"}
DOMAIN = {"host": "runs.example.com", "x-forwarded-proto": "https"}


@pytest.mark.parametrize(
    ("seen", "headers", "expected"),
    [
        ("/prod/v1/runs", GATEWAY, "https://abc.execute-api.eu-west-1.amazonaws.com/prod/v1/run/r1"),
        ("/agents-api/v1/runs", DOMAIN, "https://runs.example.com/agents-api/v1/run/r1"),  # base path mapping
        ("/v1/runs", DOMAIN, "https://runs.example.com/v1/run/r1"),
        ("/v1/runs", {"Host": "127.0.0.1:8787"}, "http://127.0.0.1:8787/v1/run/r1"),  # local: no proxy header
        ("/v1/runs", {}, "/v1/run/r1"),
    ],
    ids=["stage", "base-path", "custom-domain", "local", "no-host"],
)
def test_links_keep_what_the_gateway_put_before_the_route(seen: str, headers: dict, expected: str) -> None:
    assert absolute_url(event("/v1/runs", seen, headers), "/v1/run/r1") == expected
