"""CORS by context `cors_origins`: none by default; given, the api function is told the origins, and an HTTP
API answers preflights itself with the function's own lists while a REST API leaves them to the function."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from runplane.api import cors

from tests.infra.conftest import API_TYPES, resources, synth

pytestmark = pytest.mark.infra

ORIGINS = ["https://app.example.com", "http://localhost:5173"]


def api_environment(template: dict[str, Any]) -> dict[str, Any]:
    [api] = [
        f["Properties"]
        for f in resources(template, "AWS::Lambda::Function").values()
        if f["Properties"]["Handler"] == "runplane.handlers.api.lambda_handler"
    ]
    return api["Environment"]["Variables"]


def other_environments(template: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        f["Properties"]["Environment"]["Variables"]
        for f in resources(template, "AWS::Lambda::Function").values()
        if f["Properties"]["Handler"] != "runplane.handlers.api.lambda_handler"
    ]


def options_methods(template: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        m["Properties"]
        for m in resources(template, "AWS::ApiGateway::Method").values()
        if m["Properties"]["HttpMethod"] == "OPTIONS"
    ]


@pytest.mark.parametrize("api", API_TYPES)
def test_by_default_no_origin_is_allowed(synthesize: Any, api: str) -> None:
    template = synthesize(api)[1]
    assert "RUNPLANE_CORS_ORIGINS" not in api_environment(template)
    for gateway in resources(template, "AWS::ApiGatewayV2::Api").values():
        assert "CorsConfiguration" not in gateway["Properties"]
    assert options_methods(template) == []


def test_an_http_api_answers_preflights_for_the_origins_with_the_functions_lists(tmp_path: Path) -> None:
    stack, template = synth(tmp_path, api="http", cors_origins=",".join(ORIGINS))  # as `-c cors_origins=…`
    [gateway] = resources(template, "AWS::ApiGatewayV2::Api").values()
    assert gateway["Properties"]["CorsConfiguration"] == {
        "AllowOrigins": ORIGINS,
        "AllowMethods": list(cors.ALLOW_METHODS),
        "AllowHeaders": list(cors.ALLOW_HEADERS),
        "ExposeHeaders": list(cors.EXPOSE_HEADERS),
        "MaxAge": cors.MAX_AGE_SECONDS,
        "AllowCredentials": False,
    }
    assert api_environment(template)["RUNPLANE_CORS_ORIGINS"] == ",".join(ORIGINS)
    assert all("RUNPLANE_CORS_ORIGINS" not in env for env in other_environments(template))
    assert nag_findings(stack) == []


def nag_findings(stack: Any) -> list[Any]:
    from aws_cdk.assertions import Annotations, Match

    annotations = Annotations.from_stack(stack)
    rule = Match.string_like_regexp("AwsSolutions-.*")
    return [f.entry.data for f in annotations.find_error("*", rule) + annotations.find_warning("*", rule)]


def test_a_rest_api_passes_preflights_to_the_function(tmp_path: Path) -> None:
    stack, template = synth(tmp_path, api="rest", cors_origins=["*"])
    assert api_environment(template)["RUNPLANE_CORS_ORIGINS"] == "*"
    assert options_methods(template) == []  # no mock OPTIONS methods: the proxy's ANY takes them
    proxies = [m["Properties"] for m in resources(template, "AWS::ApiGateway::Method").values()]
    assert {m["HttpMethod"] for m in proxies} == {"ANY"}
    assert {m["Integration"]["Type"] for m in proxies} == {"AWS_PROXY"}
    assert nag_findings(stack) == []


@pytest.mark.parametrize(
    "value",
    [
        "*,https://app.example.com",
        ["https://app.example.com/"],
        ["https://App.example.com"],
        "https://a.example:443",
        5,
    ],
)
def test_origins_the_function_would_refuse_fail_the_synth(value: Any) -> None:
    from infra.config import Config

    with pytest.raises(ValueError, match="cors_origins"):
        Config(cors_origins=value)


def test_origins_are_read_as_the_function_reads_them() -> None:
    from infra.config import Config

    assert Config().cors_origins == []
    assert Config(cors_origins=" https://app.example.com, http://localhost:5173").cors_origins == ORIGINS
    assert Config(cors_origins=["*"]).cors_origins == ["*"]
