"""Asynchronous agents reached through every way a run starts: the lambda kind (an Event invocation through
botocore's Stubber), the intake queue, the Roe AI and Cotool dialects, and a python parent's child run.
In each, the agent is sent the run, the worker returns, and the agent's reports (through the in-process
Api) end it. Time is compressed by the `agents` fixture's settings."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from runplane.adapters import runtimes
from runplane.domain.ids import intake_run_id
from runplane.logic import services
from runplane.logic.keys import CreatedKey

from tests.conftest import Api, drain, make_runnable, working
from tests.integration.test_async_agents import (  # agents: an autouse fixture
    PUBLIC_URL,
    agents,  # noqa: F401
    async_http,
    envelope,
    report,
    start,
    state,
)
from tests.integration.test_kinds import AGENT_ARN, GPT_4O_COST, LLM_USAGE, create
from tests.receiver import Answer, Receiver, receiving


def send_intake(env: dict[str, str], body: dict[str, Any]) -> str:
    """Send a producer's message to the intake queue; its MessageId (the run's id derives from it)."""
    sqs = boto3.client("sqs")
    return sqs.send_message(QueueUrl=env["RUNPLANE_INTAKE_QUEUE_URL"], MessageBody=json.dumps(body))[
        "MessageId"
    ]


def roe_outputs(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Roe's serialized outputs back to values."""
    return {
        item["key"]: json.loads(item["value"]) if item["data_type"] == "application/json" else item["value"]
        for item in items
    }


def wait_until(check: Callable[[], Any], seconds: float = 15) -> Any:
    """Poll `check` until it answers something truthy (and return it)."""
    deadline = time.monotonic() + seconds
    while not (found := check()):
        assert time.monotonic() < deadline, "gave up waiting"
        time.sleep(0.05)
    return found


@pytest.fixture
def agent() -> Iterator[Receiver]:
    """An agent that accepts every run it is sent (202), as test_async_agents' does."""
    with receiving(Answer(status=202, body=b"")) as receiver:
        yield receiver


# --- the lambda kind, mode async ---


@pytest.fixture
def events() -> Iterator[tuple[Stubber, list[dict[str, Any]]]]:
    """A Stubber on the Lambda client and the payloads the worker invoked it with (decoded)."""
    client = runtimes.lambda_client()
    sent: list[dict[str, Any]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        sent.append(json.loads(params["Payload"]))

    client.meta.events.register("provide-client-params.lambda.Invoke", record)
    with Stubber(client) as stub:
        yield stub, sent
    client.meta.events.unregister("provide-client-params.lambda.Invoke", record)


def event_accepted(stub: Stubber) -> None:
    stub.add_response(
        "invoke",
        {"StatusCode": 202, "Payload": b"", "ResponseMetadata": {"HTTPStatusCode": 202}},
        {"FunctionName": AGENT_ARN, "InvocationType": "Event", "Payload": ANY},
    )


def test_an_async_lambda_function_is_invoked_as_an_event_and_its_reports_end_the_run(
    api: Api, events: tuple[Stubber, list[dict[str, Any]]]
) -> None:
    stub, sent = events
    event_accepted(stub)
    runnable = create(api, "lambda", {"function_arn": AGENT_ARN, "mode": "async", "heartbeat_seconds": 30})
    run_id = start(api, runnable, inputs={"title": "crash"}, metadata={"ticket": 9})
    drain("worker")  # the worker invoked the function (an event) and returned
    stub.assert_no_pending_responses()
    [document] = sent
    assert (document["run_id"], document["runnable_id"], document["attempt"]) == (run_id, runnable, 1)
    assert (document["inputs"], document["metadata"]) == ({"title": "crash"}, {"ticket": 9})
    assert document["mode"] == "async"
    assert document["report_url"] == f"{PUBLIC_URL}/v1/run/{run_id}/report"
    assert document["run_token"].startswith("rpt_")
    assert document["heartbeat_seconds"] == 30
    assert state(api, run_id)["status"] == "running"
    step = report(api, document, {"state": {"labelled": False}, "logs": ["reading"], "usage": [LLM_USAGE]})
    assert step.status == 200, step.text
    assert step.json()["status"] == "running"
    final = report(api, document, {"outputs": {"label": "bug"}, "metadata": {"model": "x"}})
    assert final.status == 200, final.text
    assert final.json()["status"] == "completed"
    ended = state(api, run_id)
    assert ended["status"] == "completed", ended["result"]
    assert ended["result"]["outputs"] == {"label": "bug"}
    assert ended["result"]["metadata"]["model"] == "x"
    assert ended["state"] == {"labelled": False}
    assert (ended["total_input_tokens"], ended["total_output_tokens"], ended["total_cached_tokens"]) == (
        100,
        20,
        5,
    )
    assert ended["total_token_cost_usd"] == pytest.approx(GPT_4O_COST)
    lines = api.get(f"/v1/run/{run_id}/logs").json()["lines"]
    assert [(line["stream"], line["message"]) for line in lines] == [("agent", "reading")]
    reasons = [e.get("reason") for e in api.get(f"/v1/run/{run_id}/events").json()["events"]]
    assert reasons[:3] == ["accepted", "claimed", "handed_off"]
    assert reasons[-1] == "ended"
    drain("worker")
    assert sent == [document]  # invoked once: nothing sent it again


def test_lambda_refusing_the_async_invocation_fails_the_run_once(
    api: Api, events: tuple[Stubber, list[dict[str, Any]]]
) -> None:
    stub, sent = events
    stub.add_client_error(
        "invoke",
        "TooManyRequestsException",
        "Rate exceeded",
        429,
        expected_params={"FunctionName": AGENT_ARN, "InvocationType": "Event", "Payload": ANY},
    )
    runnable = create(api, "lambda", {"function_arn": AGENT_ARN, "mode": "async"})
    run_id = start(api, runnable)
    drain("worker")
    stub.assert_no_pending_responses()
    ended = state(api, run_id)
    assert ended["status"] == "failed"
    assert ended["result"]["error"]["code"] == "lambda_error"
    assert "TooManyRequestsException" in ended["result"]["error"]["message"]
    [document] = sent
    assert report(api, document, {"outputs": {"late": True}}).status == 409  # the run has ended
    assert state(api, run_id)["status"] == "failed"


# --- the intake queue ---


def test_an_intake_message_starts_an_async_run_that_its_agent_finishes(
    api: Api, agent: Receiver, env: dict[str, str], account: CreatedKey
) -> None:
    runnable = async_http(api, agent, heartbeat_seconds=30)
    message_id = send_intake(
        env,
        {
            "account_id": account.account_id,
            "runnable_id": runnable,
            "inputs": {"via": "sqs"},
            "metadata": {"producer": "batch"},
        },
    )
    drain("intake", "worker")
    run_id = intake_run_id(message_id)
    [received] = agent.received
    sent = json.loads(received.body)
    assert (sent["run_id"], sent["inputs"], sent["metadata"]) == (
        run_id,
        {"via": "sqs"},
        {"producer": "batch"},
    )
    assert sent["report_url"] == f"{PUBLIC_URL}/v1/run/{run_id}/report"
    running = state(api, run_id)
    assert (running["status"], running["created_by"]) == ("running", "intake")
    assert report(api, sent, {"logs": ["working"]}).json()["status"] == "running"
    assert (
        report(api, sent, {"outputs": {"done": "sqs"}, "usage": [LLM_USAGE]}).json()["status"] == "completed"
    )
    ended = state(api, run_id)
    assert ended["status"] == "completed"
    assert ended["result"]["outputs"] == {"done": "sqs"}
    assert ended["total_input_tokens"] == LLM_USAGE["prompt_tokens"]


# --- the dialects ---


def test_a_roe_job_of_an_async_agent_is_started_and_read_in_roes_shape(api: Api, agent: Receiver) -> None:
    runnable = async_http(api, agent)
    started = api.post(f"/v1/agents/run/{runnable}/async/", {"topic": "tides", "metadata": {"team": "a"}})
    assert started.status == 200, started.text
    job_id = started.json()
    assert api.get(f"/v1/agents/jobs/{job_id}/status/").json()["status"] == 0  # PENDING
    drain("worker")
    sent = envelope(agent)
    assert (sent["run_id"], sent["inputs"], sent["metadata"]) == (job_id, {"topic": "tides"}, {"team": "a"})
    assert sent["mode"] == "async"
    assert api.get(f"/v1/agents/jobs/{job_id}/status/").json()["status"] == 1  # STARTED: the agent has it
    assert api.get(f"/v1/agents/jobs/{job_id}/result/").status == 409  # not ended yet
    final = report(api, sent, {"outputs": {"summary": "high", "count": 2}, "usage": [LLM_USAGE]})
    assert final.json()["status"] == "completed"
    status = api.get(f"/v1/agents/jobs/{job_id}/status/").json()
    assert status["status"] == 3  # SUCCESS
    assert "error_message" not in status
    result = api.get(f"/v1/agents/jobs/{job_id}/result/").json()
    assert result["agent_id"] == runnable
    assert roe_outputs(result["outputs"]) == {"summary": "high", "count": 2}
    assert (result["input_tokens"], result["output_tokens"]) == (100, 20)
    assert all(item["cost"] == pytest.approx(GPT_4O_COST) for item in result["outputs"])
    listed = api.get(f"/v1/agents/{runnable}/jobs/").json()["results"]
    assert [job["id"] for job in listed] == [job_id]


def test_a_roe_job_whose_async_agent_reports_an_error_is_failure_with_its_message(
    api: Api, agent: Receiver
) -> None:
    runnable = async_http(api, agent)
    job_id = api.post(f"/v1/agents/run/{runnable}/async/", {"topic": "x"}).json()
    drain("worker")
    failed = report(api, envelope(agent), {"error": {"message": "no sources", "code": "nothing_found"}})
    assert failed.json()["status"] == "failed"
    status = api.get(f"/v1/agents/jobs/{job_id}/status/").json()
    assert (status["status"], status["error_message"]) == (4, "no sources")
    result = api.get(f"/v1/agents/jobs/{job_id}/result/")
    assert result.status == 422
    assert result.json()["code"] == "run_failed"


def test_a_roe_sync_run_of_an_async_agent_answers_its_outputs(api: Api, agent: Receiver) -> None:
    """The sync wait holds while the agent, not a worker, has the run; its final report ends the wait."""
    runnable = async_http(api, agent)

    def finish() -> None:
        sent = wait_until(lambda: agent.received and envelope(agent))
        assert report(api, sent, {"outputs": {"answer": "sync"}}).status == 200

    with working(1):
        reporter = threading.Thread(target=finish)
        reporter.start()
        reply = api.post(f"/v1/agents/run/{runnable}/", {"topic": "x"})
        reporter.join(10)
    assert reply.status == 200, reply.text
    assert roe_outputs(reply.json()) == {"answer": "sync"}


def test_roe_cancels_tell_async_agents_once_each(
    api: Api, agent: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNPLANE_AGENT_CANCEL_GRACE_SECONDS", "30")  # the agents report their ends
    services.reset()
    with receiving() as cancels:
        runnable = async_http(api, agent, cancel_url=cancels.url)
        job_id = api.post(f"/v1/agents/run/{runnable}/async/", {"i": -1}).json()
        batch = api.post(f"/v1/agents/run/{runnable}/async/many/", {"inputs": [{"i": 0}, {"i": 1}]}).json()
        drain("worker")
        by_job = {envelope(agent, i)["run_id"]: envelope(agent, i) for i in range(len(agent.received))}
        assert set(by_job) == {job_id, *batch}
        assert len({sent["run_token"] for sent in by_job.values()}) == 3  # a token per job
        assert api.post(f"/v1/agents/jobs/{job_id}/cancel/").status == 204
        drain("worker")
        assert [json.loads(r.body)["run_id"] for r in cancels.received] == [job_id]
        everything = api.post(f"/v1/agents/{runnable}/jobs/cancel-all/")
        assert everything.status == 200, everything.text
        assert everything.json()["targeted_count"] == 2  # the job already being cancelled is not counted
        drain("worker")
        told = sorted(json.loads(r.body)["run_id"] for r in cancels.received[1:])
        assert told == sorted(batch)
        for job, sent in by_job.items():
            assert report(api, sent, {}).json()["cancel_requested"] is True
            assert report(api, sent, {"outputs": {"stopped": job}}).json()["status"] == "cancelled"
            status = api.get(f"/v1/agents/jobs/{job}/status/").json()
            assert status["status"] == 5  # CANCELLED
        assert len(cancels.received) == 3  # each told once


def test_a_cotool_run_of_an_async_agent_shows_its_reports_and_its_result(api: Api, agent: Receiver) -> None:
    runnable = async_http(api, agent)
    started = api.post(f"/api/agents/{runnable}/run-async", {"inputs": {"question": "why"}})
    assert started.status == 200, started.text
    run_id = started.json()["runId"]
    drain("worker")
    sent = envelope(agent)
    assert (sent["run_id"], sent["inputs"]) == (run_id, {"question": "why"})
    assert report(api, sent, {"logs": ["looking it up"]}).status == 200
    status = api.get(f"/api/agents/{runnable}/run-async/{run_id}/status").json()
    assert (status["status"], status["isStreaming"]) == ("running", True)
    assert status["statusMessage"] == "looking it up"  # the agent's latest log line
    assert api.get(f"/api/agents/{runnable}/run-async/{run_id}/result").status == 409
    assert report(api, sent, {"outputs": {"text": "because"}}).json()["status"] == "completed"
    status = api.get(f"/api/agents/{runnable}/run-async/{run_id}/status").json()
    assert status == {"status": "done", "statusMessage": "Completed", "isStreaming": False}
    result = api.get(f"/api/agents/{runnable}/run-async/{run_id}/result").json()
    assert result["structuredOutputResult"] == {"text": "because"}
    assert result["finalAssistantMessage"] == "because"
    assert result["messages"] == [
        {"role": "user", "content": '{"question":"why"}'},
        {"role": "assistant", "content": "because"},
    ]


def test_a_cancelled_cotool_run_of_an_async_agent_is_interrupted(api: Api, agent: Receiver) -> None:
    runnable = async_http(api, agent)
    run_id = api.post(f"/api/agents/{runnable}/run-async", {"inputs": {}}).json()["runId"]
    drain("worker")
    assert api.post(f"/v1/run/{run_id}/cancel").status == 202
    assert report(api, envelope(agent), {}).json()["cancel_requested"] is True
    assert report(api, envelope(agent), {"outputs": {"text": "stopped"}}).json()["status"] == "cancelled"
    status = api.get(f"/api/agents/{runnable}/run-async/{run_id}/status").json()
    assert (status["status"], status["isStreaming"]) == ("interrupted", False)
    result = api.get(f"/api/agents/{runnable}/run-async/{run_id}/result")
    assert result.status == 422
    assert result.json()["code"] == "run_cancelled"


# --- a child run ---


def test_a_python_parent_waits_for_an_async_child_and_gets_its_agents_outputs(
    api: Api, agent: Receiver, account: CreatedKey
) -> None:
    child = async_http(api, agent, heartbeat_seconds=30)
    parent = make_runnable(account.account_id, "parent", timeout_seconds=60)
    body = {"inputs": {"child": child, "items": [{"n": 1}]}}
    with working(2):
        run_id = start(api, parent, **body)
        sent = wait_until(lambda: agent.received and envelope(agent))
        child_id = sent["run_id"]
        assert child_id != run_id
        assert sent["inputs"] == {"n": 1}
        shown = state(api, child_id)
        assert (shown["status"], shown["parent_run_id"]) == ("running", run_id)
        time.sleep(1.5)  # beyond a worker's lease: the parent still waits, the child is the agent's
        assert state(api, run_id)["status"] == "running"
        assert report(api, sent, {"logs": ["half way"]}).json()["status"] == "running"
        assert report(api, sent, {"outputs": {"n": 1, "by": "agent"}}).json()["status"] == "completed"
        ended = wait_until(lambda: (s := state(api, run_id))["status"] in ("completed", "failed") and s)
    assert ended["status"] == "completed", ended["result"]
    assert ended["result"]["outputs"] == {"children": [child_id], "outputs": [{"n": 1, "by": "agent"}]}
    assert len(agent.received) == 1


def test_cancelling_a_python_parent_cancels_its_async_child_and_tells_the_agent(
    api: Api,
    agent: Receiver,
    account: CreatedKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # long enough for a busy worker to tell the agent before its grace (and lease) ends
    monkeypatch.setenv("RUNPLANE_AGENT_CANCEL_GRACE_SECONDS", "3")
    services.reset()
    with receiving() as cancels:
        child = async_http(api, agent, cancel_url=cancels.url)
        parent = make_runnable(account.account_id, "parent", timeout_seconds=60)
        with working(2):
            run_id = start(api, parent, inputs={"child": child})
            sent = wait_until(lambda: agent.received and envelope(agent))
            wait_until(lambda: state(api, sent["run_id"])["status"] == "running")
            assert api.post(f"/v1/run/{run_id}/cancel").status == 202
            wait_until(lambda: cancels.received)
            assert json.loads(cancels.received[0].body) == {
                "run_id": sent["run_id"],
                "attempt": 1,
                "type": "cancel",
            }
            # the agent says nothing: its run ends cancelled once the grace has passed
            wait_until(lambda: state(api, sent["run_id"])["status"] == "cancelled", seconds=20)
            wait_until(lambda: state(api, run_id)["status"] == "cancelled")
    assert report(api, sent, {"outputs": {"late": True}}).status == 409
    assert len(cancels.received) == 1


# --- what every end of a run does, when a report ends it ---


def test_a_report_that_ends_a_run_frees_its_slot_for_the_next_and_calls_back(
    api: Api, agent: Receiver
) -> None:
    with receiving() as hooks:
        runnable = create(api, "http", {"url": agent.url, "mode": "async"}, max_concurrency=1)
        first = start(api, runnable, callback_url=hooks.url)
        second = start(api, runnable)
        drain("worker")
        assert [envelope(agent, i)["run_id"] for i in range(len(agent.received))] == [first]
        assert state(api, second)["status"] == "waiting"  # queued behind the agent's run
        assert report(api, envelope(agent), {"outputs": {"n": 1}}).json()["status"] == "completed"
        drain("worker", "callbacks")
        assert [envelope(agent, i)["run_id"] for i in range(len(agent.received))] == [first, second]
        assert state(api, second)["status"] == "running"
        [hook] = hooks.received
        called = json.loads(hook.body)
        assert (called["id"], called["status"], called["result"]["outputs"]) == (first, "completed", {"n": 1})


def test_an_async_agents_final_outputs_are_checked_against_the_output_schema(
    api: Api, agent: Receiver
) -> None:
    """docs/runnables.md: any kind may declare an output_schema; a completed run whose outputs do not
    match it ends failed with invalid_output. A sync http agent's answer is checked
    (logic/execute._checked_outputs); an async agent's final report is not (logic/agent_reports._record
    ends the run with the outputs as reported)."""
    schema = {"type": "object", "properties": {"label": {"type": "string"}}, "required": ["label"]}
    with receiving(Answer(body=b'{"outputs": {"label": 5}}')) as sync_agent:
        sync = create(api, "http", {"url": sync_agent.url}, output_schema=schema)
        checked = start(api, sync)
        drain("worker")
    assert state(api, checked)["result"]["error"]["code"] == "invalid_output"  # a sync agent's answer
    runnable = create(api, "http", {"url": agent.url, "mode": "async"}, output_schema=schema)
    run_id = start(api, runnable)
    drain("worker")
    assert report(api, envelope(agent), {"outputs": {"label": 5}}).status == 200
    ended = state(api, run_id)
    assert ended["status"] == "failed", ended["result"]
    assert ended["result"]["error"]["code"] == "invalid_output"
