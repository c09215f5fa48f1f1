"""The api function fed API Gateway's own events: published samples of both API types (tests/fixtures/events:
HTTP API payload 2.0, REST proxy events) get the answers the local gateway's events of the same type get, so
local mode's event shapes are not the only ones it accepts."""

from __future__ import annotations

import hashlib
import importlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from runplane.api import formats
from runplane.api.app import create_app, serve
from runplane.handlers import api as api_handler
from runplane.local.gateway import proxy_event
from runplane.local.lambda_context import LocalLambdaContext
from runplane.logic import services
from runplane.logic.keys import CreatedKey

from tests.conftest import drain, make_runnable

EVENTS = Path(__file__).resolve().parents[1] / "fixtures" / "events"
SAMPLES = sorted(p.name for p in EVENTS.glob("*.json"))
GETS = [name for name in SAMPLES if "-get-" in name]
POSTS = [name for name in SAMPLES if "-post-" in name]
API_TYPES = ("http", "rest")


def api_type_of(name: str) -> str:
    return name.split("-")[1]  # apigateway-<type>-...


def sample(name: str, **values: str) -> dict[str, Any]:
    """A published event with its {PLACEHOLDERS} filled in."""
    text = (EVENTS / name).read_text()
    for placeholder, value in values.items():
        text = text.replace("{" + placeholder + "}", value)
    return json.loads(text)


def local(api_type: str, method: str, path: str, token: str, body: Any = None) -> dict[str, Any]:
    """The event the local gateway makes of the same request for an API of `api_type`."""
    headers = {"Content-Type": ["application/json"], "Authorization": [f"Bearer {token}"]}
    data = json.dumps(body).encode() if body is not None else b""
    return proxy_event(method, path, headers, data, "127.0.0.1", api_type=api_type)


def answer(event: dict[str, Any]) -> dict[str, Any]:
    """The answer of the resolver of the event's own API type."""
    return serve(create_app("http" if formats.is_http(event) else "rest"), event, LocalLambdaContext("api"))


def body(response: dict[str, Any]) -> Any:
    return json.loads(response["body"])


def headers(response: dict[str, Any]) -> dict[str, list[str]]:
    merged = {k: [v] for k, v in (response.get("headers") or {}).items()}
    merged.update(response.get("multiValueHeaders") or {})
    return merged


@pytest.fixture
def completed_run(account: CreatedKey, echo_id: str) -> str:
    created = answer(
        local("http", "POST", f"/v1/runnable/{echo_id}/runs", account.token, {"inputs": {"x": 1}})
    )
    assert created["statusCode"] == 202, created
    drain("worker")
    return body(created)["id"]


@pytest.mark.parametrize("name", GETS)
def test_a_get_of_a_run_answers_exactly_as_through_the_local_gateway(
    account: CreatedKey, completed_run: str, name: str
) -> None:
    """The HTTP sample also has cookies, a header and a query parameter with two values comma-joined."""
    event = sample(name, RUN_ID=completed_run, TOKEN=account.token)
    through_aws = answer(event)
    through_local = answer(local(api_type_of(name), "GET", f"/v1/run/{completed_run}", account.token))
    assert through_aws == through_local
    assert through_aws["statusCode"] == 200
    assert body(through_aws)["result"]["outputs"] == {"x": 1}


@pytest.fixture
def handler_for(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Any]]:
    """The api handler module as Lambda imports it where the deployment says RUNPLANE_API_TYPE=<type>."""

    def load(api_type: str) -> Any:
        with monkeypatch.context() as deployed:
            deployed.setenv("RUNPLANE_API_TYPE", api_type)
            services.reset()
            return importlib.reload(api_handler)

    yield load
    services.reset()
    importlib.reload(api_handler)  # as this environment has it


@pytest.mark.parametrize("name", GETS)
def test_the_lambda_handler_itself_takes_the_published_event_of_its_api_type(
    account: CreatedKey, completed_run: str, name: str, handler_for: Callable[[str], Any]
) -> None:
    """The deployed entry point: its resolver and its logger's correlation id (requestContext.requestId)
    follow the deployment's API type."""
    handler = handler_for(api_type_of(name))
    assert isinstance(handler.app, formats.RESOLVERS[api_type_of(name)])
    event = sample(name, RUN_ID=completed_run, TOKEN=account.token)
    assert handler.lambda_handler(event, LocalLambdaContext("api")) == answer(event)


@pytest.mark.parametrize(
    ("name", "inputs", "location"),
    [
        (
            "apigateway-http-post-run-docs.json",
            {"message": "Hello from Lambda"},
            "/v1/run/",  # no Host header
        ),
        (
            "apigateway-http-post-run-lambda-go.json",
            {"a": 1},  # the base64 body, decoded
            "https://aaaaaaaaaa.execute-api.us-west-2.amazonaws.com/v1/run/",  # the $default stage: no stage
        ),
        (
            "apigateway-rest-post-run-sam.json",
            {"test": "body"},  # the base64 body, decoded
            "https://1234567890.execute-api.us-east-1.amazonaws.com/prod/v1/run/",  # the stage kept
        ),
        (
            "apigateway-rest-post-run-lambda-go.json",
            {"a": 1},
            "https://gy415nuibc.execute-api.us-east-1.amazonaws.com/v1/run/",  # no requestContext.path
        ),
    ],
)
def test_a_post_creates_the_run_the_local_gateway_would(
    account: CreatedKey, echo_id: str, name: str, inputs: dict[str, Any], location: str
) -> None:
    through_aws = answer(sample(name, RUNNABLE_ID=echo_id, TOKEN=account.token))
    through_local = answer(
        local(api_type_of(name), "POST", f"/v1/runnable/{echo_id}/runs", account.token, {"inputs": inputs})
    )
    assert through_aws["statusCode"] == through_local["statusCode"] == 202, through_aws
    aws_id, local_id = body(through_aws)["id"], body(through_local)["id"]
    assert body(through_aws) == {**body(through_local), "id": aws_id}
    assert headers(through_aws)["Location"] == [location + aws_id]
    assert headers(through_local)["Location"] == [f"/v1/run/{local_id}"]  # no Host header locally
    drain("worker")

    def ran(run_id: str) -> dict[str, Any]:
        state = body(answer(local("http", "GET", f"/v1/run/{run_id}", account.token)))
        different = ("id", "created_at", "started_at", "completed_at", "updated_at", "duration_seconds")
        return {k: v for k, v in state.items() if k not in different and k != "result"} | {
            "outputs": state["result"]["outputs"]
        }

    assert ran(aws_id) == ran(local_id)
    assert ran(aws_id)["outputs"] == inputs


def test_the_samples_cover_both_api_types_alike() -> None:
    assert {api_type_of(name) for name in GETS} == {api_type_of(name) for name in POSTS} == set(API_TYPES)


@pytest.mark.parametrize("name", SAMPLES)
def test_a_wrong_token_is_refused_alike_whatever_else_the_event_carries(
    account: CreatedKey, echo_id: str, name: str
) -> None:
    """The lambda-go REST sample carries an authorizer context naming `admin`, the HTTP ones a JWT's claims
    and a client certificate: only the bearer token counts."""
    event = sample(name, RUN_ID=echo_id, RUNNABLE_ID=echo_id, TOKEN="rp_wrong")
    request = formats.read(event)
    path, method = request.path, request.http_method
    through_aws = answer(event)
    through_local = answer(
        local(api_type_of(name), method, path, "rp_wrong", {} if method == "POST" else None)
    )
    assert through_aws["statusCode"] == through_local["statusCode"] == 401
    assert body(through_aws) == body(through_local)


@pytest.mark.parametrize("name", POSTS)
def test_a_body_that_is_not_json_is_refused_alike(account: CreatedKey, echo_id: str, name: str) -> None:
    event = sample(name, RUNNABLE_ID=echo_id, TOKEN=account.token)
    event["body"] = "bm90IGpzb24=" if event.get("isBase64Encoded") else "not json"  # "not json"
    through_local = local(api_type_of(name), "POST", f"/v1/runnable/{echo_id}/runs", account.token)
    through_local["body"] = "not json"
    assert answer(event)["statusCode"] == answer(through_local)["statusCode"] == 400
    assert body(answer(event)) == body(answer(through_local))


# --- what differs between the formats, answered alike ---


@pytest.mark.parametrize("api_type", API_TYPES)
@pytest.mark.parametrize("files", [True, False], ids=["multipart", "urlencoded"])
def test_a_form_reaches_roes_run_route_byte_for_byte_in_either_format(
    account: CreatedKey, api_type: str, files: bool
) -> None:
    """An HTTP API base64-encodes every body that is not text (both forms); a REST API those of its binary
    media types (multipart only). Either way the route reads the same form."""
    data = b"\x00\xff\xfe bytes"
    attached = {"doc": ("doc.bin", data, "application/octet-stream")} if files else None
    path = f"/v1/agents/run/{make_runnable(account.account_id, 'describe_files')}/async/"
    request = httpx.Request("POST", f"https://api.example.com{path}", data={"text": "é"}, files=attached)
    sent = {name: [value] for name, value in request.headers.items() if name != "host"}
    sent["Authorization"] = [f"Bearer {account.token}"]
    event = proxy_event("POST", path, sent, request.read(), "127.0.0.1", api_type=api_type)
    assert event["isBase64Encoded"] is (files or api_type == "http")
    started = answer(event)
    assert started["statusCode"] == 200, started
    drain("worker")
    job = body(started)
    outputs = body(answer(local(api_type, "GET", f"/v1/run/{job}", account.token)))["result"]["outputs"]
    assert outputs["inputs"] == {"text": "é"}
    assert outputs.get("doc", {}).get("sha256") == (hashlib.sha256(data).hexdigest() if files else None)


@pytest.mark.parametrize("api_type", API_TYPES)
def test_a_trailing_slash_and_head_are_served_alike_in_either_format(
    account: CreatedKey, completed_run: str, api_type: str
) -> None:
    """Powertools' HTTP API resolver matches paths exactly, its REST one ignores a trailing slash: both
    types ignore it here (Roe AI's SDK sends one). HEAD is GET without the body."""
    get = answer(local(api_type, "GET", f"/v1/run/{completed_run}", account.token))
    assert answer(local(api_type, "GET", f"/v1/run/{completed_run}/", account.token)) == get
    head = answer(local(api_type, "HEAD", f"/v1/run/{completed_run}", account.token))
    assert (head["statusCode"], head["body"], headers(head)) == (200, "", headers(get))
    assert answer(local(api_type, "GET", "/health/", account.token))["statusCode"] == 200
