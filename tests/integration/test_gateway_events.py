"""The api function fed API Gateway's own events: published REST proxy samples (tests/fixtures/events) get
the answers the local gateway's events get, so local mode's event shape is not the only one it accepts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from runplane.api.app import create_app, serve
from runplane.handlers import api as api_handler
from runplane.local.gateway import proxy_event
from runplane.local.lambda_context import LocalLambdaContext
from runplane.logic.keys import CreatedKey

from tests.conftest import drain

EVENTS = Path(__file__).resolve().parents[1] / "fixtures" / "events"
SAMPLES = sorted(p.name for p in EVENTS.glob("*.json"))
POSTS = [name for name in SAMPLES if "-post-" in name]


def sample(name: str, **values: str) -> dict[str, Any]:
    """A published event with its {PLACEHOLDERS} filled in."""
    text = (EVENTS / name).read_text()
    for placeholder, value in values.items():
        text = text.replace("{" + placeholder + "}", value)
    return json.loads(text)


def local(method: str, path: str, token: str, body: Any = None) -> dict[str, Any]:
    """The event the local gateway makes of the same request."""
    headers = {"Content-Type": ["application/json"], "Authorization": [f"Bearer {token}"]}
    data = json.dumps(body).encode() if body is not None else b""
    return proxy_event(method, path, headers, data, "127.0.0.1")


def answer(event: dict[str, Any]) -> dict[str, Any]:
    return serve(create_app(), event, LocalLambdaContext("api"))


def body(response: dict[str, Any]) -> Any:
    return json.loads(response["body"])


def headers(response: dict[str, Any]) -> dict[str, list[str]]:
    merged = {k: [v] for k, v in (response.get("headers") or {}).items()}
    merged.update(response.get("multiValueHeaders") or {})
    return merged


@pytest.fixture
def completed_run(account: CreatedKey, echo_id: str) -> str:
    created = answer(local("POST", f"/v1/runnable/{echo_id}/runs", account.token, {"inputs": {"x": 1}}))
    assert created["statusCode"] == 202, created
    drain("worker")
    return body(created)["id"]


def test_a_get_of_a_run_answers_exactly_as_through_the_local_gateway(
    account: CreatedKey, completed_run: str
) -> None:
    event = sample("apigateway-rest-get-run.json", RUN_ID=completed_run, TOKEN=account.token)
    through_aws, through_local = (
        answer(event),
        answer(local("GET", f"/v1/run/{completed_run}", account.token)),
    )
    assert through_aws == through_local
    assert through_aws["statusCode"] == 200
    assert body(through_aws)["result"]["outputs"] == {"x": 1}


def test_the_lambda_handler_itself_takes_the_published_event(account: CreatedKey, completed_run: str) -> None:
    """The deployed entry point (its logger takes the correlation id from requestContext.requestId)."""
    event = sample("apigateway-rest-get-run.json", RUN_ID=completed_run, TOKEN=account.token)
    assert api_handler.lambda_handler(event, LocalLambdaContext("api")) == answer(event)


@pytest.mark.parametrize(
    ("name", "inputs", "location"),
    [
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
    through_local = answer(local("POST", f"/v1/runnable/{echo_id}/runs", account.token, {"inputs": inputs}))
    assert through_aws["statusCode"] == through_local["statusCode"] == 202, through_aws
    aws_id, local_id = body(through_aws)["id"], body(through_local)["id"]
    assert body(through_aws) == {**body(through_local), "id": aws_id}
    assert headers(through_aws)["Location"] == [location + aws_id]
    assert headers(through_local)["Location"] == [f"/v1/run/{local_id}"]  # no Host header locally
    drain("worker")

    def ran(run_id: str) -> dict[str, Any]:
        state = body(answer(local("GET", f"/v1/run/{run_id}", account.token)))
        different = ("id", "created_at", "started_at", "completed_at", "updated_at", "duration_seconds")
        return {k: v for k, v in state.items() if k not in different and k != "result"} | {
            "outputs": state["result"]["outputs"]
        }

    assert ran(aws_id) == ran(local_id)
    assert ran(aws_id)["outputs"] == inputs


@pytest.mark.parametrize("name", SAMPLES)
def test_a_wrong_token_is_refused_alike_whatever_else_the_event_carries(
    account: CreatedKey, echo_id: str, name: str
) -> None:
    """The lambda-go sample carries an authorizer context naming `admin`: only the bearer token counts."""
    event = sample(name, RUN_ID=echo_id, RUNNABLE_ID=echo_id, TOKEN="rp_wrong")
    path, method = event["path"], event["httpMethod"]
    through_aws = answer(event)
    through_local = answer(local(method, path, "rp_wrong", {} if method == "POST" else None))
    assert through_aws["statusCode"] == through_local["statusCode"] == 401
    assert body(through_aws) == body(through_local)


@pytest.mark.parametrize("name", POSTS)
def test_a_body_that_is_not_json_is_refused_alike(account: CreatedKey, echo_id: str, name: str) -> None:
    event = sample(name, RUNNABLE_ID=echo_id, TOKEN=account.token)
    event["body"] = "bm90IGpzb24=" if event.get("isBase64Encoded") else "not json"  # "not json"
    through_local = local("POST", f"/v1/runnable/{echo_id}/runs", account.token)
    through_local["body"] = "not json"
    assert answer(event)["statusCode"] == answer(through_local)["statusCode"] == 400
    assert body(answer(event)) == body(answer(through_local))
