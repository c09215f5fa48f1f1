"""Runs you can watch: state, partial outputs, the log and the event stream, through the api handler."""

from __future__ import annotations

from typing import Any

from tests.conftest import Api, drain, make_runnable


def start(api: Api, runnable_id: str, inputs: dict[str, Any], **fields: Any) -> str:
    reply = api.post(f"/v1/runnable/{runnable_id}/runs", {"inputs": inputs, **fields})
    assert reply.status == 202, reply.text
    return reply.json()["id"]


def test_a_failing_runnable_shows_its_progress_log_and_traceback(api: Api, account) -> None:
    runnable = make_runnable(account.account_id, "progress")
    run_id = start(api, runnable, {"fail": True})
    drain()
    state = api.get(f"/v1/run/{run_id}").json()
    assert state["status"] == "failed"
    assert state["state"] == {"step": 2, "phase": "working"}
    assert state["result"]["error"] == {
        "message": "ValueError: boom after progress",
        "code": "runnable_exception",
    }
    logs = api.get(f"/v1/run/{run_id}/logs").json()
    messages = [(line["stream"], line["message"]) for line in logs["lines"]]
    print(messages)
    assert ("stdout", "printed 0") in messages
    assert ("stderr", "to stderr") in messages
    assert ("log", "step done") in messages
    assert messages[-1][0] == "stderr" and messages[-1][1].startswith("Traceback (most recent call last):")
    assert messages[-1][1].endswith("ValueError: boom after progress")
    events = api.get(f"/v1/run/{run_id}/events").json()
    print(events)
    seqs = [e["seq"] for e in events["events"]]
    assert seqs == list(range(1, len(seqs) + 1))
    assert events["done"] is True
