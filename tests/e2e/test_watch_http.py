"""End to end: following a run over real HTTP through `runplane local` — an SSE client (httpx-sse) that
reconnects with Last-Event-ID until `done`, JSON long polls, and the log of a run that printed."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from httpx_sse import connect_sse

from tests.local_stack import Stack, start_stack

pytestmark = pytest.mark.e2e

TEST_ENV = {
    "RUNPLANE_RUNNABLE_PACKAGES": "tests.fixtures.runnables",
    "RUNPLANE_LEASE_SECONDS": "3",
    "RUNPLANE_LOCAL_SWEEP_SECONDS": "0.5",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    started = start_stack(tmp_path_factory.mktemp("stack"), **TEST_ENV)
    started.keep_draining_output()
    yield started
    started.stop()


def client(stack: Stack) -> httpx.Client:
    info = stack.info
    return httpx.Client(
        base_url=info["api_url"], headers={"Authorization": f"Bearer {info['api_key']}"}, timeout=60
    )


def start(stack: Stack, script: list[dict[str, Any]]) -> str:
    reply = stack.start_run("scripted", {"inputs": {"script": script}})
    assert reply.status_code == 202, reply.text
    return reply.json()["id"]


def test_an_event_source_follows_a_run_to_done_across_reconnects_with_last_event_id(
    stack: Stack, tmp_path: Path
) -> None:
    """The client opens each gate when it sees the state before it, so every step of the run comes in an
    answer of its own: the client has to reconnect, and only Last-Event-ID tells the server where it was."""
    gates = [tmp_path / f"gate{i}" for i in range(3)]
    script: list[dict[str, Any]] = []
    for i, gate in enumerate(gates):
        script += [{"state": {"n": i}}, {"log": f"step {i}"}, {"wait": str(gate)}]
    run_id = start(stack, [*script, {"outputs": {"last": True}}])

    events: list[dict[str, Any]] = []
    done: dict[str, Any] | None = None
    last_id: str | None = None
    statuses: list[int] = []
    retry: int | None = None
    deadline = time.monotonic() + 60
    with client(stack) as http:
        while time.monotonic() < deadline:
            headers = {"Last-Event-ID": last_id} if last_id is not None else {}
            with connect_sse(http, "GET", f"/v1/run/{run_id}/events?wait=2", headers=headers) as source:
                statuses.append(source.response.status_code)
                if source.response.status_code == 204:  # the run ended and everything was sent: stop
                    break
                assert source.response.status_code == 200, source.response.read()
                for sse in source.iter_sse():
                    retry = sse.retry if sse.retry is not None else retry
                    if sse.id:
                        last_id = sse.id
                    if sse.event == "done":
                        done = json.loads(sse.data)
                    elif sse.data:  # an answer with nothing new carries only an id
                        event = json.loads(sse.data)
                        assert int(sse.id) == event["seq"]
                        events.append(event)
                        if event["type"] == "state":
                            gates[event["state"]["n"]].touch()
            time.sleep((retry or 0) / 1000)  # as an EventSource waits before it reconnects
        else:
            raise AssertionError(f"not done within 60 s: {events}")

    seqs = [event["seq"] for event in events]
    assert seqs == list(range(1, len(seqs) + 1))  # every event once, in order, across the reconnects
    assert retry == 250
    assert statuses[-1] == 204
    assert set(statuses[:-1]) == {200}
    assert len(statuses) > len(gates) + 1  # one answer per step at least, then the 204
    assert [e["state"] for e in events if e["type"] == "state"] == [{"n": i} for i in range(3)]
    assert [line["message"] for e in events if e["type"] == "logs" for line in e["lines"]] == [
        f"step {i}" for i in range(3)
    ]
    assert events[-1]["reason"] == "ended"
    assert events[-1]["status"] == "completed"
    assert done == {"status": "completed", "last_seq": seqs[-1]}
    assert last_id == str(seqs[-1])


def test_a_json_long_poll_over_http_answers_when_the_state_changes(stack: Stack, tmp_path: Path) -> None:
    release = tmp_path / "release"
    run_id = start(
        stack, [{"state": {"phase": "before"}}, {"wait": str(release)}, {"state": {"phase": "after"}}]
    )
    deadline = time.monotonic() + 30
    while stack.call("GET", f"/v1/run/{run_id}").json()["state"] != {"phase": "before"}:
        assert time.monotonic() < deadline, "the first state never came"
        time.sleep(0.05)
    page = stack.call("GET", f"/v1/run/{run_id}/events").json()
    seen = page["last_seq"]

    began = time.monotonic()
    quiet = stack.call("GET", f"/v1/run/{run_id}/events?after={seen}&wait=1").json()
    assert time.monotonic() - began >= 1  # nothing happened: it answered at the end of its window
    assert quiet == {"events": [], "last_seq": seen, "status": "running", "done": False}

    window, answers = 20, []

    def poll() -> None:
        reply = stack.call("GET", f"/v1/run/{run_id}/events?after={seen}&wait={window}")
        answers.append((time.monotonic(), reply))

    thread = threading.Thread(target=poll)
    thread.start()
    time.sleep(0.5)  # the poll is waiting (longer only makes the check stricter)
    changed = time.monotonic()
    release.touch()
    thread.join(window + 10)
    (answered, reply), *_ = answers
    assert reply.status_code == 200, reply.text
    page = reply.json()
    assert page["events"][0]["seq"] == seen + 1
    assert {"phase": "after"} in [e.get("state") for e in page["events"]]
    assert answered - changed < window / 2  # soon after the change, not at the end of the window
    assert stack.wait_terminal(run_id)["status"] == "completed"


def test_what_a_run_prints_and_its_traceback_are_its_log_over_http(stack: Stack) -> None:
    run_id = start(
        stack,
        [{"print": "to stdout"}, {"print": "to stderr", "stream": "stderr"}, {"raise": "it went wrong"}],
    )
    state = stack.wait_terminal(run_id)
    assert state["result"]["error"] == {"message": "ValueError: it went wrong", "code": "runnable_exception"}
    reply = requests.get(
        f"{stack.info['api_url']}/v1/run/{run_id}/logs",
        headers={"Authorization": f"Bearer {stack.info['api_key']}"},
        timeout=30,
    )
    assert reply.status_code == 200
    page = reply.json()
    assert page["next_cursor"] is None
    lines = [(line["stream"], line["message"]) for line in page["lines"]]
    assert set(lines[:2]) == {("stdout", "to stdout"), ("stderr", "to stderr")}
    assert lines[2][0] == "stderr"
    assert lines[2][1].startswith("Traceback (most recent call last):")
    assert lines[2][1].endswith("ValueError: it went wrong")
