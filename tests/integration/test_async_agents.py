"""Asynchronous agents (http and lambda runnables with `mode: async`): the worker sends the run and
returns; the agent, a real loopback server here, reports to the run's report URL with its run token until
it reports the end. Time is compressed through the settings (lease, heartbeat, grace, maximums)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from runplane.logic import services
from runplane.logic.sweep import sweep

from tests.conftest import Api, drain
from tests.integration.test_kinds import LLM_USAGE, create
from tests.receiver import Answer, Receiver, receiving

PUBLIC_URL = "https://runplane.example"


@pytest.fixture(autouse=True)
def agents(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "RUNPLANE_PUBLIC_URL": PUBLIC_URL,
        "RUNPLANE_LEASE_SECONDS": "1",
        "RUNPLANE_ALLOW_LOOPBACK": "1",
        "RUNPLANE_AGENT_CANCEL_GRACE_SECONDS": "1",
        "RUNPLANE_LAMBDA_FUNCTIONS": "arn:aws:lambda:us-east-1:123456789012:function:agent-*",
    }.items():
        monkeypatch.setenv(name, value)
    services.reset()


@pytest.fixture
def agent() -> Iterator[Receiver]:
    with receiving(Answer(status=202, body=b"")) as receiver:
        yield receiver


def start(api: Api, runnable_id: str, **body: Any) -> str:
    reply = api.post(f"/v1/runnable/{runnable_id}/runs", body)
    assert reply.status == 202, reply.text
    return reply.json()["id"]


def envelope(agent: Receiver, index: int = -1) -> dict[str, Any]:
    return json.loads(agent.received[index].body)


def report(api: Api, sent: dict[str, Any], body: Any = None, token: str | None = None, **kw: Any):
    """POST a report as the agent that was `sent` the envelope does (to its report URL, with its token)."""
    path = urlsplit(sent["report_url"]).path
    return api.post(path, {} if body is None else body, token=token or sent["run_token"], **kw)


def state(api: Api, run_id: str) -> dict[str, Any]:
    return api.get(f"/v1/run/{run_id}").json()


def async_http(api: Api, agent: Receiver, **config: Any) -> str:
    return create(api, "http", {"url": agent.url, "mode": "async", **config})


def test_an_async_agent_finishes_long_after_the_worker_returned(api: Api, agent: Receiver) -> None:
    runnable = async_http(api, agent, heartbeat_seconds=30)
    run_id = start(api, runnable, inputs={"topic": "tides"})
    drain("worker")  # the worker sent the run and returned
    sent = envelope(agent)
    assert sent["inputs"] == {"topic": "tides"}
    assert sent["mode"] == "async"
    assert sent["report_url"] == f"{PUBLIC_URL}/v1/run/{run_id}/report"
    assert sent["run_token"].startswith("rpt_")
    assert sent["heartbeat_seconds"] == 30
    headers = {k.lower(): v for k, v in agent.received[0].headers.items()}
    running = state(api, run_id)
    assert running["status"] == "running"
    time.sleep(1.5)  # beyond the worker's lease: the agent's lease is what holds the run
    sweep()
    answer = report(api, sent, {"state": {"step": 1}, "logs": ["reading"], "usage": [LLM_USAGE]})
    assert answer.status == 200, answer.text
    assert answer.json()["status"] == "running"
    assert answer.json()["cancel_requested"] is False
    assert answer.json()["report_by"]
    assert answer.json()["deadline"]
    assert report(api, sent, {"outputs": {"draft": "a"}, "partial": True}).status == 200
    assert report(api, sent).status == 200  # a heartbeat
    shown = state(api, run_id)
    assert shown["state"] == {"step": 1}
    assert shown["result"]["outputs"] == {"draft": "a"}
    final = report(api, sent, {"outputs": {"answer": 42}, "metadata": {"pages": 3}, "usage": [LLM_USAGE]})
    assert final.status == 200, final.text
    assert final.json()["status"] == "completed"
    ended = state(api, run_id)
    assert ended["status"] == "completed", ended
    assert ended["result"]["outputs"] == {"answer": 42}
    assert ended["result"]["metadata"]["pages"] == 3
    assert ended["total_input_tokens"] == 2 * LLM_USAGE["prompt_tokens"]
    lines = api.get(f"/v1/run/{run_id}/logs").json()["lines"]
    assert [(line["stream"], line["message"]) for line in lines] == [("agent", "reading")]
    reasons = [e.get("reason") for e in api.get(f"/v1/run/{run_id}/events").json()["events"]]
    assert reasons[:3] == ["accepted", "claimed", "handed_off"]
    assert reasons[-1] == "ended"
    assert "webhook-signature" in headers
