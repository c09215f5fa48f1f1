"""runplane.agent, the agents' helper, against a real loopback receiver standing in for the report endpoint:
what it sends, what it retries (429 with Retry-After, 5xx, run_busy, a refused connection) and what it
raises (a refusal at once, the last problem once the retries are spent)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from runplane.agent import AgentRun, ReportError, lambda_handler_for

from tests.local_stack import free_port
from tests.receiver import Answer, Receiver, receiving

TOKEN = "rpt_" + "a" * 64 + "_acct"
RUNNING = {"run_id": "r1", "status": "running", "cancel_requested": False, "report_by": "soon"}


def answer(**fields: Any) -> Answer:
    """A 200 answer of the report endpoint: the run as RUNNING with `fields` changed."""
    return Answer(status=200, body=json.dumps({**RUNNING, **fields}).encode())


def refusal(status: int, code: str, headers: dict[str, str] | None = None) -> Answer:
    body = json.dumps({"error": f"refused: {code}", "code": code}).encode()
    return Answer(status=status, headers=headers or {}, body=body)


def envelope(url: str) -> dict[str, Any]:
    return {"run_id": "r1", "inputs": {"q": 1}, "report_url": url, "run_token": TOKEN, "heartbeat_seconds": 5}


def sent(receiver: Receiver) -> list[dict[str, Any]]:
    return [json.loads(r.body) for r in receiver.received]


@pytest.fixture
def endpoint() -> Iterator[Receiver]:
    with receiving(answer()) as receiver:
        yield receiver


def test_a_report_is_posted_with_the_run_token_and_returns_the_answer(endpoint: Receiver) -> None:
    run = AgentRun(envelope(endpoint.url))
    got = run.report(state={"step": 1}, metadata=None)
    assert got == RUNNING
    assert run.answer == RUNNING
    assert run.report_by == "soon"
    assert not run.cancel_requested
    assert not run.ended
    [request] = endpoint.received
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["content-type"] == "application/json"
    assert json.loads(request.body) == {"state": {"step": 1}}  # None parts are left out


def test_the_envelope_may_be_the_raw_body(endpoint: Receiver) -> None:
    run = AgentRun(json.dumps(envelope(endpoint.url)).encode())
    assert (run.run_id, run.inputs, run.heartbeat_seconds) == ("r1", {"q": 1}, 5)
    with pytest.raises(ValueError, match="report_url"):
        AgentRun({**envelope(endpoint.url), "report_url": "file:///etc/passwd"})


def test_each_part_has_its_method(endpoint: Receiver) -> None:
    run = AgentRun(envelope(endpoint.url))
    run.heartbeat()
    run.set_state({"a": 1}, b=None)
    run.log("one", {"message": "two", "level": "warning"})
    run.partial({"draft": "x"})
    run.complete({"answer": 42}, usage=[{"provider": "openai", "model": "gpt-4o"}], metadata={"m": 1})
    run.fail("no sources", code="nothing_found")
    run.fail("plain")
    assert sent(endpoint) == [
        {},
        {"state": {"a": 1, "b": None}},  # a key set to None is removed from the run's state
        {"logs": ["one", {"message": "two", "level": "warning"}]},
        {"outputs": {"draft": "x"}, "partial": True},
        {
            "outputs": {"answer": 42},
            "usage": [{"provider": "openai", "model": "gpt-4o"}],
            "metadata": {"m": 1},
        },
        {"error": {"message": "no sources", "code": "nothing_found"}},
        {"error": {"message": "plain"}},
    ]


def test_cancel_requested_and_ended_follow_the_last_answer() -> None:
    with receiving(answer(cancel_requested=True), answer(status="cancelled", cancel_requested=True)) as hook:
        run = AgentRun(envelope(hook.url))
        run.heartbeat()
        assert run.cancel_requested
        assert not run.ended
        run.complete({"partial_answer": 7})
        assert run.ended


def test_429_and_503_are_retried_honoring_retry_after() -> None:
    script = [refusal(429, "rate_limited", {"Retry-After": "1"}), refusal(503, "unavailable"), answer()]
    with receiving(*script) as hook:
        run = AgentRun(envelope(hook.url), backoff=0.01)
        began = time.monotonic()
        assert run.report(logs=["once"]) == RUNNING
        elapsed = time.monotonic() - began
    assert len(hook.received) == 3
    assert {r.body for r in hook.received} == {b'{"logs": ["once"]}'}  # the same report each time
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in hook.received)
    assert 1.0 <= elapsed < 3.0  # Retry-After (1 s), then the short backoff


def test_run_busy_is_sent_again_but_run_terminal_raises_at_once() -> None:
    with receiving(refusal(409, "run_busy"), answer()) as busy:
        assert AgentRun(envelope(busy.url), backoff=0.01).complete({"n": 1}) == RUNNING
        assert len(busy.received) == 2
    with receiving(refusal(409, "run_terminal")) as ended:
        run = AgentRun(envelope(ended.url), backoff=0.01)
        with pytest.raises(ReportError, match="409 run_terminal") as raised:
            run.complete({"n": 1})
        assert len(ended.received) == 1
    assert raised.value.status == 409
    assert raised.value.code == "run_terminal"
    assert raised.value.body == {"error": "refused: run_terminal", "code": "run_terminal"}


@pytest.mark.parametrize(("status", "code"), [(401, "unauthorized"), (404, "not_found"), (400, "bad")])
def test_refusals_raise_with_their_body(status: int, code: str) -> None:
    with receiving(refusal(status, code)) as hook:
        with pytest.raises(ReportError) as raised:
            AgentRun(envelope(hook.url), backoff=0.01).heartbeat()
        assert len(hook.received) == 1
    assert (raised.value.status, raised.value.code) == (status, code)


def test_the_last_problem_is_raised_once_the_retries_are_spent() -> None:
    with receiving(refusal(503, "unavailable")) as hook:
        with pytest.raises(ReportError) as raised:
            AgentRun(envelope(hook.url), retries=2, backoff=0.01).heartbeat()
        assert len(hook.received) == 3
    assert raised.value.status == 503
    nobody = f"http://127.0.0.1:{free_port()}/v1/run/r1/report"
    with pytest.raises(ReportError, match="not delivered") as unreachable:
        AgentRun(envelope(nobody), retries=1, backoff=0.01).heartbeat()
    assert unreachable.value.status is None


def test_a_lambda_handler_reports_what_work_returns_or_raises(endpoint: Receiver) -> None:
    def work(run: AgentRun) -> dict[str, Any]:
        run.log(f"got {run.inputs['q']}")
        if run.inputs["q"] > 1:
            raise RuntimeError("too big")
        return {"doubled": 2 * run.inputs["q"]}

    handler = lambda_handler_for(work)
    assert handler(envelope(endpoint.url), None) == RUNNING
    assert handler({**envelope(endpoint.url), "inputs": {"q": 2}}, None) == RUNNING
    assert sent(endpoint) == [
        {"logs": ["got 1"]},
        {"outputs": {"doubled": 2}},
        {"logs": ["got 2"]},
        {"error": {"message": "RuntimeError: too big"}},
    ]


def test_a_lambda_handler_whose_work_ended_the_run_reports_nothing_more() -> None:
    with receiving(answer(status="completed")) as hook:
        handler = lambda_handler_for(lambda run: run.complete({"done": True}) and None)
        assert handler(envelope(hook.url))["status"] == "completed"
        assert sent(hook) == [{"outputs": {"done": True}}]
