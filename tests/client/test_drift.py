"""The client's models and endpoints against the `/openapi.json` the local stack serves."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from pydantic import Field
from runplane_client import endpoints, models

from tests.client.drift import answer_problems, endpoint_problems
from tests.local_stack import Stack

pytestmark = pytest.mark.e2e

ANSWERS = [
    m
    for m in vars(models).values()
    if isinstance(m, type) and issubclass(m, models.Answer) and "schema_name" in vars(m)
]


@pytest.fixture(scope="module")
def document(stack: Stack) -> dict[str, Any]:
    reply = requests.get(stack.info["api_url"] + "/openapi.json", timeout=30)
    assert reply.status_code == 200
    return reply.json()


@pytest.mark.parametrize("model", ANSWERS, ids=lambda m: m.__name__)
def test_each_answer_model_mirrors_its_schema(document: dict[str, Any], model: type[models.Answer]) -> None:
    assert answer_problems(document, model) == []


@pytest.mark.parametrize("endpoint", endpoints.ALL, ids=lambda e: f"{e.method} {e.path}")
def test_each_endpoint_the_client_calls_is_in_the_document(
    document: dict[str, Any], endpoint: endpoints.Endpoint
) -> None:
    assert endpoint_problems(document, endpoint) == []


def test_every_answer_model_is_checked_and_every_endpoint_listed() -> None:
    assert len(ANSWERS) == len({m.schema_name for m in ANSWERS}) >= 20
    called = {(e.method, e.path) for e in endpoints.ALL}
    assert len(called) == len(endpoints.ALL)
    assert endpoints.START_RUN in endpoints.ALL
    assert endpoints.REDELIVER_CALLBACK in endpoints.ALL


class Drifted(models.Answer):
    """RunState as it would be if the client had drifted: every kind of mismatch once."""

    schema_name = "RunState"

    id: int  # the document: a string
    account_id: str
    status: models.RunStatus
    runnable_id: str  # required here, optional in the document
    color: str | None = None  # not in the document
    total_token_cost_usd: int | None = None  # the document: any number
    # created_at (required by the document) is missing


class Narrow(models.Request):
    """A run request that sends what the document refuses."""

    inputs: list[str] = Field(default_factory=list)
    telemetry_strategy: str = "default"  # any text: the document has three values
    extra_field: int = 0


def test_drift_is_found(document: dict[str, Any]) -> None:
    problems = answer_problems(document, Drifted)
    assert any(p.startswith("Drifted.id:") for p in problems), problems
    assert "Drifted.runnable_id: required here, optional in the document" in problems
    assert "Drifted.color: not in the document" in problems
    assert any(p.startswith("Drifted.total_token_cost_usd:") for p in problems), problems
    assert "Drifted.created_at: required by the document, not on the model" in problems
    assert not any(p.startswith(("Drifted.status", "Drifted.account_id")) for p in problems)

    run = endpoints.START_RUN
    problems = endpoint_problems(
        document,
        endpoints.Endpoint("POST", run.path, ("mode", "speed"), ("X-Trace",), Narrow, (models.Runnable,)),
    )
    assert f"POST {run.path}: no query parameter speed" in problems
    assert f"POST {run.path}: no header X-Trace" in problems
    assert f"POST {run.path} body.extra_field: not in the document" in problems
    assert any(p.startswith(f"POST {run.path} body.inputs:") for p in problems), problems
    assert any(p.startswith(f"POST {run.path} body.telemetry_strategy:") for p in problems), problems
    assert any("does not answer Runnable" in p for p in problems), problems
    assert endpoint_problems(document, endpoints.Endpoint("PATCH", "/v1/runs")) == [
        "PATCH /v1/runs: not in the document"
    ]
