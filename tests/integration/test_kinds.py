"""Runnable kinds end to end through the api and worker handlers: http agents on a real loopback server,
Lambda functions and Bedrock models through botocore's Stubber (moto runs neither). Per kind: success,
errors, timeouts, cancellation and bad configs."""

from __future__ import annotations

import io
import itertools
import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from runplane.adapters import runtimes
from runplane.logic import services
from standardwebhooks import Webhook

from tests.conftest import Api, drain
from tests.receiver import Answer, receiving

LLM_USAGE = {
    "provider": "openai",
    "model": "gpt-4o",
    "prompt_tokens": 100,
    "completion_tokens": 20,
    "cached_tokens": 5,
}
NUMBERS = itertools.count(1)
GPT_4O_COST = 0.00245  # (95 x 20 + 5 x 10 + 20 x 25) / 1M at the test prices (conftest.TEST_PRICES)


def create(api: Api, kind: str, config: dict[str, Any], **fields: Any) -> str:
    """Register a runnable of `kind`, named `{kind}-{n}` (names are unique within an account)."""
    reply = api.post(
        "/v1/runnables", {"name": f"{kind}-{next(NUMBERS)}", "kind": kind, "config": config, **fields}
    )
    assert reply.status == 201, reply.text
    return reply.json()["id"]


def refused(api: Api, kind: str, config: dict[str, Any], **fields: Any) -> tuple[str, list[str]]:
    reply = api.post("/v1/runnables", {"name": kind, "kind": kind, "config": config, **fields})
    assert reply.status == 400, reply.text
    return reply.json()["code"], [issue["field"] for issue in reply.json()["issues"]]


def run(api: Api, runnable_id: str, **body: Any) -> dict[str, Any]:
    """Start a run, let the worker execute it, and return its RunState."""
    reply = api.post(f"/v1/runnable/{runnable_id}/runs", body)
    assert reply.status == 202, reply.text
    drain("worker")
    return api.get(f"/v1/run/{reply.json()['id']}").json()


def cancel_while_running(api: Api, runnable_id: str, **body: Any) -> tuple[dict[str, Any], float]:
    """Start a run, cancel it once a worker runs it; its RunState and how long the worker took."""
    run_id = api.post(f"/v1/runnable/{runnable_id}/runs", body).json()["id"]
    began = time.monotonic()
    worker = threading.Thread(target=drain, args=("worker",))
    worker.start()
    while api.get(f"/v1/run/{run_id}").json()["status"] != "running":
        assert time.monotonic() - began < 5
        time.sleep(0.05)
    assert api.post(f"/v1/run/{run_id}/cancel").status == 202
    worker.join(10)
    return api.get(f"/v1/run/{run_id}").json(), time.monotonic() - began


@pytest.fixture(autouse=True)
def quick_leases(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Heartbeats every 0.33 s, so a cancellation is seen quickly; loopback agents allowed."""
    monkeypatch.setenv("RUNPLANE_LEASE_SECONDS", "1")
    monkeypatch.setenv("RUNPLANE_ALLOW_LOOPBACK", "1")
    monkeypatch.setenv("RUNPLANE_LAMBDA_FUNCTIONS", "arn:aws:lambda:us-east-1:123456789012:function:agent-*")
    monkeypatch.setenv("RUNPLANE_BEDROCK_MODELS", "amazon.nova-*,us.amazon.nova-*")
    services.reset()


def reply(outputs: dict[str, Any], **extra: Any) -> bytes:
    return json.dumps({"outputs": outputs, **extra}).encode()


# --- http ---


def test_an_http_agent_gets_the_signed_run_and_its_answer_is_the_result(api: Api) -> None:
    answer = Answer(body=reply({"sum": 3}, usage=[LLM_USAGE], metadata={"agent_version": "7"}))
    with receiving(answer) as agent:
        runnable = create(api, "http", {"url": agent.url, "headers": {"Authorization": "Bearer agent-key"}})
        state = run(api, runnable, inputs={"a": 1, "b": 2}, metadata={"ticket": 7})
    assert state["status"] == "completed", state["result"]["error"]
    assert state["result"]["outputs"] == {"sum": 3}
    assert state["result"]["metadata"]["agent_version"] == "7"
    assert (state["total_input_tokens"], state["total_output_tokens"], state["total_cached_tokens"]) == (
        100,
        20,
        5,
    )
    assert state["total_token_cost_usd"] == pytest.approx(GPT_4O_COST)
    [request] = agent.received
    secret = api.get("/v1/callbacks/secret").json()["secret"]
    sent = Webhook(secret).verify(request.body, request.headers)
    assert sent["run_id"] == state["id"]
    assert (sent["inputs"], sent["metadata"], sent["attempt"]) == ({"a": 1, "b": 2}, {"ticket": 7}, 1)
    assert datetime.fromisoformat(sent["deadline"]).timestamp() > request.at
    assert request.headers["Authorization"] == "Bearer agent-key"


@pytest.mark.parametrize(
    ("answer", "code", "words"),
    [
        (Answer(status=503, body=b"upstream overloaded"), "http_error", ["503", "upstream overloaded"]),
        (Answer(body=b"<html>not json</html>"), "invalid_reply", ["<html>not json</html>"]),
        (Answer(body=b'{"result": 1}'), "invalid_reply", ["outputs"]),
        (
            Answer(body=b'{"error": {"message": "no stock", "code": "out_of_stock"}}'),
            "out_of_stock",
            ["no stock"],
        ),
    ],
    ids=["non-2xx", "not-json", "no-outputs", "error-report"],
)
def test_an_http_agent_that_answers_badly_fails_the_run_with_what_it_said(
    api: Api, answer: Answer, code: str, words: list[str]
) -> None:
    with receiving(answer) as agent:
        state = run(api, create(api, "http", {"url": agent.url}))
    assert state["status"] == "failed"
    assert state["result"]["error"]["code"] == code
    assert all(word in state["result"]["error"]["message"] for word in words)


def test_the_http_call_timeout_fails_the_run(api: Api) -> None:
    with receiving(Answer(delay=2, body=reply({}))) as agent:
        began = time.monotonic()
        state = run(api, create(api, "http", {"url": agent.url, "timeout_seconds": 0.3}))
        assert time.monotonic() - began < 1.5
    assert state["status"] == "failed"
    assert state["result"]["error"]["code"] == "http_error"
    assert "timed out" in state["result"]["error"]["message"]


def test_the_run_timeout_bounds_the_http_call_and_a_late_answer_changes_nothing(api: Api) -> None:
    with receiving(Answer(delay=2.5, body=reply({"late": True}))) as agent:
        began = time.monotonic()
        state = run(api, create(api, "http", {"url": agent.url}), timeout_seconds=1)
        assert time.monotonic() - began < 2
        time.sleep(2)  # the agent answers meanwhile
        state = api.get(f"/v1/run/{state['id']}").json()
    assert state["status"] == "timeout"
    assert "outputs" not in state["result"]


def test_cancelling_an_http_run_ends_it_at_once_and_its_late_answer_is_dropped(api: Api) -> None:
    with receiving(Answer(delay=3, body=reply({"late": True}))) as agent:
        state, took = cancel_while_running(api, create(api, "http", {"url": agent.url}))
        assert took < 3
        time.sleep(3.2 - took)
        state = api.get(f"/v1/run/{state['id']}").json()
    assert state["status"] == "cancelled"
    assert "outputs" not in state["result"]


@pytest.mark.parametrize(
    ("config", "code", "field"),
    [
        ({"url": "https://10.1.2.3/agent"}, "forbidden_url", "body.config.url"),
        ({"url": "ftp://example.com/agent"}, "validation_error", "body.config.url"),
        ({}, "validation_error", "body.config.url"),
        (
            {"url": "https://example.com/a", "headers": {"Host": "x"}},
            "validation_error",
            "body.config.headers",
        ),
        ({"url": "https://example.com/a", "retries": 3}, "validation_error", "body.config.retries"),
        (
            {"url": "https://example.com/a", "timeout_seconds": 0},
            "validation_error",
            "body.config.timeout_seconds",
        ),
    ],
)
def test_a_bad_http_config_is_refused_naming_the_field(
    api: Api, config: dict[str, Any], code: str, field: str
) -> None:
    assert refused(api, "http", config) == (code, [field])


def test_loopback_agents_need_the_local_switch(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNPLANE_ALLOW_LOOPBACK", "0")
    services.reset()
    assert refused(api, "http", {"url": "http://127.0.0.1:9/agent"}) == ("forbidden_url", ["body.config.url"])


# --- lambda ---

AGENT_ARN = "arn:aws:lambda:us-east-1:123456789012:function:agent-triage"


def payload(document: dict[str, Any]) -> StreamingBody:
    raw = json.dumps(document).encode()
    return StreamingBody(io.BytesIO(raw), len(raw))


@pytest.fixture
def lambda_stub() -> Iterator[Stubber]:
    with Stubber(runtimes.lambda_client()) as stub:
        yield stub


def slow_calls(client: Any, operation: str, seconds: float) -> None:
    def pause(model: Any, **_: Any) -> None:
        if model.name == operation:
            time.sleep(seconds)

    client.meta.events.register_first("before-call.*.*", pause)  # before the Stubber's own handler


def test_a_lambda_function_gets_the_run_and_its_answer_is_the_result(api: Api, lambda_stub: Stubber) -> None:
    sent: list[dict[str, Any]] = []
    runtimes.lambda_client().meta.events.register(
        "provide-client-params.lambda.Invoke", lambda params, **_: sent.append(json.loads(params["Payload"]))
    )
    lambda_stub.add_response(
        "invoke",
        {"StatusCode": 200, "Payload": payload({"outputs": {"label": "bug"}, "usage": [LLM_USAGE]})},
    )
    state = run(api, create(api, "lambda", {"function_arn": AGENT_ARN}), inputs={"title": "crash"})
    assert state["status"] == "completed", state["result"]["error"]
    assert state["result"]["outputs"] == {"label": "bug"}
    assert state["total_token_cost_usd"] == pytest.approx(GPT_4O_COST)
    assert sent[0]["run_id"] == state["id"]
    assert sent[0]["inputs"] == {"title": "crash"}


def test_an_error_raised_by_the_function_is_the_runs_error(api: Api, lambda_stub: Stubber) -> None:
    error = {"errorType": "ValueError", "errorMessage": "no title", "stackTrace": []}
    lambda_stub.add_response(
        "invoke", {"StatusCode": 200, "FunctionError": "Unhandled", "Payload": payload(error)}
    )
    state = run(api, create(api, "lambda", {"function_arn": AGENT_ARN}))
    assert state["status"] == "failed"
    assert state["result"]["error"] == {"message": "ValueError: no title", "code": "function_error"}


def test_lambda_refusing_the_invocation_fails_the_run_once(api: Api, lambda_stub: Stubber) -> None:
    lambda_stub.add_client_error("invoke", "TooManyRequestsException", "Rate exceeded", 429)
    state = run(api, create(api, "lambda", {"function_arn": AGENT_ARN}))
    assert state["status"] == "failed"
    assert state["result"]["error"]["code"] == "lambda_error"
    assert "TooManyRequestsException" in state["result"]["error"]["message"]
    lambda_stub.assert_no_pending_responses()  # not retried: the function may have run


def test_the_run_timeout_bounds_a_lambda_invocation(api: Api, lambda_stub: Stubber) -> None:
    slow_calls(runtimes.lambda_client(), "Invoke", 2)
    lambda_stub.add_response("invoke", {"StatusCode": 200, "Payload": payload({"outputs": {}})})
    began = time.monotonic()
    state = run(api, create(api, "lambda", {"function_arn": AGENT_ARN}), timeout_seconds=1)
    assert time.monotonic() - began < 1.8
    assert state["status"] == "timeout"


def test_cancelling_a_lambda_run_ends_it_at_once(api: Api, lambda_stub: Stubber) -> None:
    slow_calls(runtimes.lambda_client(), "Invoke", 3)
    lambda_stub.add_response("invoke", {"StatusCode": 200, "Payload": payload({"outputs": {"late": 1}})})
    state, took = cancel_while_running(api, create(api, "lambda", {"function_arn": AGENT_ARN}))
    assert took < 3
    assert (state["status"], state["result"].get("outputs")) == ("cancelled", None)


@pytest.mark.parametrize(
    ("config", "code"),
    [
        ({"function_arn": "arn:aws:lambda:us-east-1:123456789012:function:billing"}, "function_not_allowed"),
        ({"function_arn": "agent-triage"}, "validation_error"),
        ({}, "validation_error"),
    ],
)
def test_a_lambda_runnable_may_name_only_allowed_functions(
    api: Api, config: dict[str, Any], code: str
) -> None:
    assert refused(api, "lambda", config) == (code, ["body.config.function_arn"])


# --- bedrock ---

MODEL = "amazon.nova-lite-v1:0"
PROMPT = {"model_id": MODEL, "system": "Answer in {{ style.tone }} words.", "prompt": "Summarise: {{ text }}"}


def converse_reply(content: list[dict[str, Any]], stop: str = "end_turn") -> dict[str, Any]:
    usage = {"inputTokens": 1000, "outputTokens": 200, "totalTokens": 1700, "cacheReadInputTokens": 500}
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": usage,
        "metrics": {"latencyMs": 420},
    }


@pytest.fixture
def bedrock_stub() -> Iterator[Stubber]:
    with Stubber(runtimes.bedrock_client()) as stub:
        yield stub


def test_a_prompt_is_filled_from_inputs_and_the_models_text_is_the_output(
    api: Api, bedrock_stub: Stubber
) -> None:
    expected = {
        "modelId": MODEL,
        "messages": [{"role": "user", "content": [{"text": "Summarise: the sky is blue"}]}],
        "system": [{"text": "Answer in few words."}],
        "inferenceConfig": {"maxTokens": 300},
    }
    bedrock_stub.add_response("converse", converse_reply([{"text": "Blue sky."}]), expected)
    runnable = create(api, "bedrock", {**PROMPT, "max_tokens": 300})
    state = run(api, runnable, inputs={"text": "the sky is blue", "style": {"tone": "few"}})
    assert state["status"] == "completed", state["result"]["error"]
    assert state["result"]["outputs"] == {"text": "Blue sky."}
    assert state["result"]["usage"] == [
        {
            "provider": "bedrock",
            "model": MODEL,
            "prompt_tokens": 1500,
            "completion_tokens": 200,
            "cached_tokens": 500,
        }
    ]
    # (1000 x 1 + 500 x 0.25 + 200 x 4) / 1M at the test price of this model
    assert state["total_token_cost_usd"] == pytest.approx(0.001925)
    assert state["result"]["metadata"]["stop_reason"] == "end_turn"


SENTIMENT = {
    "type": "object",
    "properties": {"sentiment": {"enum": ["positive", "negative"]}},
    "required": ["sentiment"],
}


def test_with_an_output_schema_the_model_answers_through_a_tool_and_is_checked(
    api: Api, bedrock_stub: Stubber
) -> None:
    tool_use = {"toolUse": {"toolUseId": "t1", "name": "respond", "input": {"sentiment": "positive"}}}
    bedrock_stub.add_response("converse", converse_reply([tool_use], "tool_use"))
    bad = {"toolUse": {"toolUseId": "t2", "name": "respond", "input": {"sentiment": "meh"}}}
    bedrock_stub.add_response("converse", converse_reply([bad], "tool_use"))
    runnable = create(api, "bedrock", {"model_id": MODEL, "prompt": "{{ text }}"}, output_schema=SENTIMENT)

    good_state = run(api, runnable, inputs={"text": "great"})
    assert good_state["result"]["outputs"] == {"sentiment": "positive"}
    bad_state = run(api, runnable, inputs={"text": "hmm"})
    assert bad_state["status"] == "failed"
    assert bad_state["result"]["error"]["code"] == "invalid_output"
    assert "outputs.sentiment" in bad_state["result"]["error"]["message"]
    assert bad_state["total_input_tokens"] == 1500  # the call happened: its usage counts


def test_a_run_missing_a_prompt_input_is_refused_before_it_is_accepted(api: Api) -> None:
    runnable = create(api, "bedrock", PROMPT)
    reply = api.post(f"/v1/runnable/{runnable}/runs", {"inputs": {"text": "hi"}})
    assert reply.status == 400
    assert [i["field"] for i in reply.json()["issues"]] == ["body.inputs.style.tone"]


def test_bedrock_refusing_the_call_fails_the_run(api: Api, bedrock_stub: Stubber) -> None:
    bedrock_stub.add_client_error(
        "converse", "AccessDeniedException", "You don't have access to the model", 403
    )
    state = run(api, create(api, "bedrock", {"model_id": MODEL, "prompt": "hi"}))
    assert state["status"] == "failed"
    assert state["result"]["error"]["code"] == "bedrock_error"
    assert "AccessDeniedException" in state["result"]["error"]["message"]


def test_the_run_timeout_and_cancellation_bound_a_model_call(api: Api, bedrock_stub: Stubber) -> None:
    slow_calls(runtimes.bedrock_client(), "Converse", 2.5)
    for _ in range(2):
        bedrock_stub.add_response("converse", converse_reply([{"text": "late"}]))
    runnable = create(api, "bedrock", {"model_id": MODEL, "prompt": "hi"})
    began = time.monotonic()
    assert run(api, runnable, timeout_seconds=1)["status"] == "timeout"
    assert time.monotonic() - began < 1.8
    state, took = cancel_while_running(api, runnable)
    assert (state["status"], took < 2.5) == ("cancelled", True)


@pytest.mark.parametrize(
    ("config", "code", "field"),
    [
        (
            {"model_id": "anthropic.claude-3-haiku-20240307-v1:0", "prompt": "x"},
            "model_not_allowed",
            "body.config.model_id",
        ),
        ({"model_id": MODEL}, "validation_error", "body.config.prompt"),
        ({"model_id": MODEL, "prompt": "x", "temperature": 3}, "validation_error", "body.config.temperature"),
    ],
)
def test_a_bad_bedrock_config_is_refused_naming_the_field(
    api: Api, config: dict[str, Any], code: str, field: str
) -> None:
    assert refused(api, "bedrock", config) == (code, [field])


def test_a_python_runnables_outputs_are_checked_against_its_output_schema(api: Api) -> None:
    runnable = create(api, "python", {"function": "echo"}, output_schema=SENTIMENT)
    assert run(api, runnable, inputs={"sentiment": "negative"})["status"] == "completed"
    failed = run(api, runnable, inputs={"mood": "negative"})
    assert failed["result"]["error"]["code"] == "invalid_output"
