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


def silent_run(api: Api, agent: Receiver, monkeypatch: pytest.MonkeyPatch, **fields: Any) -> str:
    runnable = create(api, "http", {"url": agent.url, "mode": "async", "heartbeat_seconds": 1}, **fields)
    run_id = start(api, runnable)
    drain("worker")
    assert len(agent.received) == 1
    return run_id


def test_a_silent_agent_is_given_up_after_its_heartbeat(
    api: Api, agent: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = silent_run(api, agent, monkeypatch, retry_on_worker_lost=False)
    assert "failed" not in sweep()  # the agent's lease still holds
    time.sleep(1.2)
    assert sweep()["failed"] == 1
    ended = state(api, run_id)
    assert ended["status"] == "failed"
    assert ended["result"]["error"]["code"] == "heartbeat_timeout"
    assert "heartbeat_seconds=1" in ended["result"]["error"]["message"]
    assert report(api, envelope(agent)).status == 409  # too late: the run has ended


def test_a_silent_agent_is_sent_the_run_again_with_a_new_token(
    api: Api, agent: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNPLANE_MAX_ATTEMPTS", "2")
    services.reset()
    run_id = silent_run(api, agent, monkeypatch)
    time.sleep(1.2)
    assert sweep()["redispatched"] == 1
    drain("worker")
    first, second = envelope(agent, 0), envelope(agent, 1)
    assert (first["attempt"], second["attempt"]) == (1, 2)
    assert first["run_token"] != second["run_token"]
    assert report(api, first).status == 401  # the earlier attempt's token opens nothing now
    assert report(api, second, {"outputs": {"ok": True}}).status == 200
    assert state(api, run_id)["status"] == "completed"
    assert state(api, run_id)["result"]["metadata"]["attempts"] == 2


def test_reports_keep_a_silent_agent_alive_past_many_heartbeats(api: Api, agent: Receiver) -> None:
    runnable = create(api, "http", {"url": agent.url, "mode": "async", "heartbeat_seconds": 2})
    run_id = start(api, runnable)
    drain("worker")
    sent = envelope(agent)
    for _ in range(10):  # 5 s: two and a half heartbeats' time
        assert report(api, sent).status == 200
        time.sleep(0.5)
        sweep()
    assert state(api, run_id)["status"] == "running"
    assert report(api, sent, {"outputs": {"n": 1}}).status == 200
    assert state(api, run_id)["status"] == "completed"


def test_the_first_end_wins_and_a_repeated_final_report_is_answered_again(api: Api, agent: Receiver) -> None:
    run_id = start(api, async_http(api, agent))
    drain("worker")
    sent = envelope(agent)
    final = {"outputs": {"answer": 1}}
    assert report(api, sent, final).json()["status"] == "completed"
    again = report(api, sent, final)  # its answer was lost: the agent sends it again
    assert again.status == 200
    assert again.json()["status"] == "completed"
    other = report(api, sent, {"error": {"message": "changed my mind"}})
    assert other.status == 409
    assert other.json()["code"] == "run_terminal"
    assert report(api, sent, {"state": {"late": True}}).status == 409
    shown = state(api, run_id)
    assert shown["result"]["outputs"] == {"answer": 1}
    assert shown.get("state") is None


def test_an_error_report_fails_the_run_with_its_code(api: Api, agent: Receiver) -> None:
    run_id = start(api, async_http(api, agent))
    drain("worker")
    answer = report(api, envelope(agent), {"error": {"message": "no sources", "code": "nothing_found"}})
    assert answer.json()["status"] == "failed"
    assert state(api, run_id)["result"]["error"] == {"message": "no sources", "code": "nothing_found"}


def test_an_agent_that_refuses_the_run_fails_it(api: Api) -> None:
    with receiving(Answer(status=503, body=b"busy")) as refusing:
        run_id = start(api, async_http(api, refusing))
        drain("worker")
    error = state(api, run_id)["result"]["error"]
    assert error["code"] == "http_error"
    assert "503" in error["message"]


def test_a_cancelled_agent_is_told_and_its_end_is_cancelled(api: Api, agent: Receiver) -> None:
    with receiving() as cancels:
        run_id = start(api, async_http(api, agent, cancel_url=cancels.url))
        drain("worker")
        assert api.post(f"/v1/run/{run_id}/cancel").status == 202
        drain("worker")  # a worker tells the agent
        assert len(cancels.received) == 1
        told = json.loads(cancels.received[0].body)
        assert told == {"run_id": run_id, "attempt": 1, "type": "cancel"}
        assert cancels.received[0].headers["webhook-id"] == f"{run_id}.1.cancel"
        sent = envelope(agent)
        assert report(api, sent, {"state": {"stopping": True}}).json()["cancel_requested"] is True
        assert report(api, sent, {"outputs": {"partial_answer": 7}}).json()["status"] == "cancelled"
        drain("worker")
        assert len(cancels.received) == 1  # told once
    ended = state(api, run_id)
    assert ended["status"] == "cancelled"
    assert ended["result"]["outputs"] == {"partial_answer": 7}


def test_a_cancelled_agent_that_does_nothing_ends_cancelled_after_the_grace(
    api: Api, agent: Receiver
) -> None:
    run_id = start(api, async_http(api, agent))
    drain("worker")
    assert api.post(f"/v1/run/{run_id}/cancel").status == 202
    assert state(api, run_id)["status"] == "running"
    time.sleep(2.2)  # the grace (1 s) and the delayed dispatch
    drain("worker")
    assert state(api, run_id)["status"] == "cancelled"


def test_tokens_open_their_own_run_only(api: Api, agent: Receiver, account: Any) -> None:
    runnable = async_http(api, agent)
    first, second = start(api, runnable), start(api, runnable)
    drain("worker")
    by_run = {envelope(agent, i)["run_id"]: envelope(agent, i) for i in range(2)}
    mine, theirs = by_run[first], by_run[second]
    crossed = api.post(f"/v1/run/{first}/report", {"outputs": {}}, token=theirs["run_token"])
    assert crossed.status == 401
    forged = "rpt_" + "0" * 64 + "_" + account.account_id
    assert api.post(f"/v1/run/{first}/report", {}, token=forged).status == 401
    assert api.post(f"/v1/run/{first}/report", {}, token=account.token).status == 401  # an API key
    assert api.post(f"/v1/run/{first}/report", {}, token=None).status == 401
    unknown = "00000000-0000-4000-8000-000000000000"
    assert api.post(f"/v1/run/{unknown}/report", {}, token=mine["run_token"]).status == 404
    assert {state(api, first)["status"], state(api, second)["status"]} == {"running"}
    assert report(api, mine, {"outputs": {"mine": True}}).status == 200
    assert state(api, second)["status"] == "running"


def test_a_run_past_its_deadline_refuses_reports_and_times_out(api: Api, agent: Receiver) -> None:
    runnable = async_http(api, agent, heartbeat_seconds=60)
    run_id = start(api, runnable, timeout_seconds=1)
    drain("worker")
    time.sleep(1.2)
    late = report(api, envelope(agent), {"outputs": {"late": True}})
    assert late.status == 401
    assert sweep()["timeout"] == 1
    ended = state(api, run_id)
    assert ended["status"] == "timeout"
    assert ended["result"]["error"]["message"] == "Run exceeded timeout_seconds=1"


def test_an_async_run_outlives_the_workers_maximum(
    api: Api, agent: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNPLANE_MAX_RUN_SECONDS", "1")  # what a worker may hold a run
    services.reset()
    python = api.post(
        "/v1/runnables", {"name": "p", "kind": "python", "config": {"function": "echo"}, "timeout_seconds": 3}
    )
    assert python.status == 400
    assert python.json()["code"] == "timeout_too_long"
    assert "mode async" in python.json()["error"]
    runnable = async_http(api, agent, heartbeat_seconds=5)
    run_id = start(api, runnable, timeout_seconds=10)
    drain("worker")
    for _ in range(5):
        time.sleep(0.5)
        still = report(api, envelope(agent), {"logs": ["still here"]})
        assert still.status == 200, still.text
        sweep()
    assert report(api, envelope(agent), {"outputs": {"after": 2.5}}).status == 200
    ended = state(api, run_id)
    assert ended["status"] == "completed"
    assert ended["result"]["metadata"]["duration_seconds"] > 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"state": {"blob": "x" * 20000}}, "body.state"),
        ({"outputs": {"blob": "x" * 40000}, "partial": True}, "body.outputs"),
        ({"logs": [{"no_message": 1}]}, "body.logs.0"),
        ({"usage": [{"provider": "openai"}]}, "body.usage.0.model"),
        (
            {"usage": [{"provider": "openai", "model": "m", "prompt_tokens": -1}]},
            "body.usage.0.prompt_tokens",
        ),
        ({"usage": [{"provider": "openai", "model": "m", "prompt_tokens": 10**400}]}, "body.usage.0"),
        ({"usage": [{"provider": "p", "model": f"m{i}"} for i in range(51)]}, "body.usage"),
        ({"outputs": {"a": 1}, "error": {"message": "both"}}, "body"),
        ({"logs": ["x" * 8000] * 20}, "body.logs"),
    ],
)
def test_a_bad_report_is_a_400_naming_it_and_records_nothing(
    api: Api, agent: Receiver, body: dict[str, Any], field: str
) -> None:
    run_id = start(api, async_http(api, agent))
    drain("worker")
    before = api.get(f"/v1/run/{run_id}/events").json()["last_seq"]
    refused = report(api, envelope(agent), body)
    assert refused.status == 400, refused.text
    assert any(issue["field"].startswith(field) for issue in refused.json()["issues"]), refused.text
    assert api.get(f"/v1/run/{run_id}/events").json()["last_seq"] == before
    assert report(api, envelope(agent), {"outputs": {"fine": True}}).status == 200


def test_malformed_and_oversized_reports_are_refused(api: Api, agent: Receiver) -> None:
    run_id = start(api, async_http(api, agent))
    drain("worker")
    sent = envelope(agent)
    path = urlsplit(sent["report_url"]).path
    assert api.post(path, raw="{not json", token=sent["run_token"]).status == 400
    assert api.post(path, raw="[1]", token=sent["run_token"]).status == 400
    assert api.post(path, {"logs": ["x" * 300_000]}, token=sent["run_token"]).status == 413
    assert state(api, run_id)["status"] == "running"


def test_reports_are_rate_limited_per_run(api: Api, agent: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNPLANE_REPORT_BURST", "3")
    monkeypatch.setenv("RUNPLANE_REPORT_RATE_PER_SECOND", "0.001")  # one window of 50 min: none ends mid-test
    services.reset()
    runnable = async_http(api, agent)
    first, second = start(api, runnable), start(api, runnable)
    drain("worker")
    by_run = {envelope(agent, i)["run_id"]: envelope(agent, i) for i in range(2)}
    answers = [report(api, by_run[first]).status for _ in range(4)]
    assert answers == [200, 200, 200, 429]
    assert report(api, by_run[second]).status == 200  # another run has its own count


def test_timeouts_say_which_kinds_run_longer(api: Api, agent: Receiver) -> None:
    sync = create(api, "http", {"url": agent.url})
    refused = api.post(f"/v1/runnable/{sync}/runs", {"timeout_seconds": 3600})
    assert refused.status == 400
    assert refused.json()["code"] == "timeout_too_long"
    assert "mode async" in refused.json()["error"]
    long = async_http(api, agent)
    assert api.post(f"/v1/runnable/{long}/runs", {"timeout_seconds": 3600}).status == 202
    assert api.post(f"/v1/runnable/{long}/runs", {"timeout_seconds": 86401}).status == 400
    mixed = api.post(
        "/v1/runnables", {"name": "m", "kind": "http", "config": {"url": agent.url, "heartbeat_seconds": 5}}
    )
    assert mixed.status == 400


def test_async_needs_the_deployments_own_url(
    api: Api, agent: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNPLANE_PUBLIC_URL", "")
    services.reset()
    refused = api.post(
        "/v1/runnables", {"name": "a", "kind": "http", "config": {"url": agent.url, "mode": "async"}}
    )
    assert refused.status == 400
    assert refused.json()["code"] == "async_unavailable"


def test_an_async_run_holds_its_slot_and_counts_its_usage_until_it_ends(api: Api, agent: Receiver) -> None:
    runnable = create(
        api, "http", {"url": agent.url, "mode": "async", "heartbeat_seconds": 30}, max_concurrency=1
    )
    first = start(api, runnable)
    drain("worker")
    second = start(api, runnable)
    drain("worker")
    assert len(agent.received) == 1  # the agent's run holds the one slot, though no worker does
    assert state(api, second)["state"]["waiting_for"]["limit"] == 1
    assert report(api, envelope(agent), {"usage": [LLM_USAGE]}).status == 200
    assert report(api, envelope(agent), {"outputs": {"n": 1}, "usage": [LLM_USAGE]}).status == 200
    drain("worker")
    assert len(agent.received) == 2  # the slot went to the waiting run
    assert envelope(agent)["run_id"] == second
    usage = api.get("/v1/account/usage").json()
    assert usage["total_input_tokens"] == 2 * LLM_USAGE["prompt_tokens"]
    assert state(api, first)["total_input_tokens"] == 2 * LLM_USAGE["prompt_tokens"]


def test_a_report_sent_again_is_recorded_once(api: Api, agent: Receiver) -> None:
    run_id = start(api, async_http(api, agent))
    drain("worker")
    sent = envelope(agent)
    progress = {"logs": ["read page 1"], "usage": [LLM_USAGE]}
    assert report(api, sent, progress).status == 200
    assert report(api, sent, progress).status == 200  # its answer was lost: the agent sends it again
    assert report(api, sent, {"logs": ["read page 2"]}).status == 200
    assert report(api, sent, {"outputs": {"pages": 2}}).status == 200
    lines = api.get(f"/v1/run/{run_id}/logs").json()["lines"]
    assert [line["message"] for line in lines] == ["read page 1", "read page 2"]
    assert state(api, run_id)["total_input_tokens"] == LLM_USAGE["prompt_tokens"]
