"""The client against the local stack: starting, waiting for, cancelling and listing runs, their events
and their logs."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from runplane_client import (
    Conflict,
    Runplane,
    RunReference,
    RunState,
    RunStatus,
    WaitTimeout,
)

from tests.client.conftest import FAST_RETRIES, registered, unique
from tests.local_stack import Stack

pytestmark = pytest.mark.e2e


def recording_client(stack: Stack) -> tuple[Runplane, list[requests.PreparedRequest]]:
    """A client whose requests are recorded, in order."""
    sent: list[requests.PreparedRequest] = []
    session = requests.Session()
    session.hooks["response"].append(lambda response, **_: sent.append(response.request))
    made = Runplane(stack.info["api_url"], stack.info["api_key"], retries=FAST_RETRIES, session=session)
    return made, sent


def test_a_run_is_waited_for_whether_its_runnable_is_named_by_name_id_or_model(
    client: Runplane, stack: Stack
) -> None:
    echo_id = stack.info["runnables"]["echo"]
    for runnable in ("echo", echo_id, client.runnables.get(echo_id)):
        state = client.runs.run(runnable, {"said": str(runnable)[:20]}, metadata={"by": "client"})
        assert isinstance(state, RunState)
        assert (state.status, state.runnable_id) == (RunStatus.completed, echo_id)
        assert state.outputs == {"said": str(runnable)[:20]}
        assert state.metadata == {"by": "client"}


def test_a_run_longer_than_the_servers_wait_is_waited_for_by_the_client(stack: Stack) -> None:
    client, sent = recording_client(stack)
    began = time.monotonic()
    state = client.runs.run("sleep", {"seconds": 3.5}, timeout=30)  # the stack waits 2 s at most
    assert state.status is RunStatus.completed
    assert state.outputs["slept"] >= 3.5
    assert time.monotonic() - began >= 3.5
    lookup, start, *rest = sent
    assert (lookup.method, lookup.path_url) == ("GET", "/v1/runnables?name=sleep")
    assert (start.method, start.headers["Prefer"]) == ("POST", "wait=25")
    assert start.path_url.endswith("/runs?mode=sync")
    assert any(request.path_url.startswith(f"/v1/run/{state.id}/events?") for request in rest)


def test_a_run_gives_up_at_the_callers_timeout_and_can_then_be_cancelled(client: Runplane) -> None:
    began = time.monotonic()
    with pytest.raises(WaitTimeout) as late:
        client.runs.run("sleep", {"seconds": 30}, timeout=1.5)
    assert 1.5 <= time.monotonic() - began < 5
    run = late.value.run
    assert isinstance(run, RunState)
    assert run.status in (RunStatus.waiting, RunStatus.running)
    asked = client.runs.cancel(run.id)
    assert asked.status in (RunStatus.cancelled, RunStatus.running)  # running: it ends cancelled shortly
    assert client.runs.wait(run.id, timeout=30).status is RunStatus.cancelled


def test_a_started_run_is_read_then_waited_for(client: Runplane) -> None:
    started = client.runs.start("sleep", {"seconds": 1})
    assert isinstance(started, RunReference)
    assert client.runs.get(started.id).status in (RunStatus.waiting, RunStatus.running)
    ended = client.runs.wait(started.id, timeout=30)
    assert (ended.id, ended.status) == (started.id, RunStatus.completed)
    assert ended.completed_at is not None


def test_an_idempotency_key_gives_one_run_and_refuses_another_request(client: Runplane) -> None:
    key = str(uuid.uuid4())
    first = client.runs.start("echo", {"n": 1}, idempotency_key=key)
    assert client.runs.start("echo", {"n": 1}, idempotency_key=key).id == first.id
    with pytest.raises(Conflict) as reused:
        client.runs.start("echo", {"n": 2}, idempotency_key=key)
    assert reused.value.code == "idempotency_key_reused"
    assert client.runs.start("echo", {"n": 1}).id != first.id  # a key of its own for each call


def test_a_waiting_run_is_cancelled_at_once_and_an_ended_one_not_at_all(client: Runplane) -> None:
    single = client.runnables.create(unique("single"), "python", {"function": "sleep"}, max_concurrency=1)
    busy = client.runs.start(single, {"seconds": 30})
    queued = client.runs.start(single, {"seconds": 0})
    deadline = time.monotonic() + 20
    while not (waiting := client.runs.get(queued.id)).state and time.monotonic() < deadline:
        time.sleep(0.1)  # a worker queues it behind the busy run
    assert waiting.status is RunStatus.waiting
    assert waiting.state == {"waiting_for": {"scope": "runnable", "limit": 1}}
    assert client.runs.get(busy.id).status is RunStatus.running
    cancelled = client.runs.cancel(queued.id)
    assert cancelled.status is RunStatus.cancelled
    assert cancelled.error is not None
    assert cancelled.error.code == "cancelled"
    assert client.runs.cancel(queued.id).status is RunStatus.cancelled  # once more: as it is
    with pytest.raises(Conflict) as ended:
        client.runs.cancel(client.runs.run("echo").id)
    assert (ended.value.status, ended.value.code) == (409, "run_terminal")
    client.runs.cancel(busy.id)
    assert client.runs.wait(busy.id, timeout=30).status is RunStatus.cancelled


def test_a_listing_follows_every_page_and_applies_each_filter(client: Runplane, stack: Stack) -> None:
    mine = client.runnables.create(unique("listed"), "python", {"function": "echo"})
    started = [client.runs.start(mine, {"i": i}).id for i in range(7)]
    states = [client.runs.wait(run_id, timeout=30) for run_id in started]

    pages = list(client.runs.list(runnable=mine, limit=3).pages())
    assert [len(page.items) for page in pages] == [3, 3, 1]
    assert pages[-1].next_cursor is None
    assert all(page.totals.unpriced_usage == 0 for page in pages)
    listed = list(client.runs.list(runnable=mine.name, limit=3))  # by name too
    assert [run.id for run in listed] == started[::-1]  # newest first
    assert all(run.status is RunStatus.completed for run in listed)

    def ids(**filters: Any) -> set[str]:
        return {run.id for run in client.runs.list(runnable=mine.id, limit=2, **filters)}

    middle = states[3].created_at
    assert ids(created_after=middle) == set(started[3:])  # inclusive
    assert ids(created_before=middle) == set(started[:3])  # exclusive
    assert ids(created_after=middle.isoformat(), created_before=states[5].created_at) == set(started[3:5])
    assert ids(status="completed") == set(started)
    assert ids(status=RunStatus.failed) == set()
    with pytest.raises(ValueError, match="time zone"):
        ids(created_after=datetime(2026, 1, 1))

    parent = client.runnables.create(unique("parent"), "python", {"function": "parent"})
    family = client.runs.run(parent, {"child": mine.id, "items": [{"a": 1}, {"a": 2}]}, timeout=60)
    assert family.status is RunStatus.completed, family
    children = client.runs.list(parent=family.id)
    assert {run.id for run in children} == set(family.outputs["children"])
    assert {run.parent_run_id for run in children} == {family.id}


def test_events_follow_a_run_as_it_goes_and_resume_after_a_seq(client: Runplane, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    script = [{"state": {"n": 1}}, {"wait": str(gate)}, {"log": "hello", "fields": {"k": 1}}]
    scripted = registered(client, "scripted")
    run = client.runs.start(scripted, {"script": [*script, {"outputs": {"part": 1}}]})
    seen = []
    for event in client.runs.events(run.id, wait=5):
        seen.append(event)
        if event.type == "state" and event.state == {"n": 1}:
            gate.touch()  # the run goes on only once this client has seen its state
    seqs = [event.seq for event in seen]
    assert seqs == sorted(set(seqs))
    assert (seen[0].type, seen[0].reason) == ("status", "accepted")
    assert (seen[-1].reason, seen[-1].status) == ("ended", RunStatus.completed)
    assert {"status", "state", "logs", "output"} <= {event.type for event in seen}
    logged = [line for event in seen if event.type == "logs" for line in event.lines or []]
    assert [(line.message, line.fields) for line in logged if line.stream == "log"] == [("hello", {"k": 1})]
    assert next(e.outputs for e in seen if e.type == "output") == {"part": 1}

    resumed = list(client.runs.events(run.id, after=seqs[2]))
    assert resumed == seen[3:]
    assert list(client.runs.events(run.id, after=seqs[-1])) == []


def test_logs_are_read_so_far_or_followed_to_the_end(client: Runplane, tmp_path: Path) -> None:
    done = client.runs.run(registered(client, "progress"), {"steps": 2}, timeout=30)
    lines = list(client.runs.logs(done.id))
    by_stream = {s: [line.message for line in lines if line.stream == s] for s in ("log", "stdout", "stderr")}
    assert by_stream == {  # each stream in order (streams interleave as their pipes are read)
        "log": ["step done", "step done"],
        "stdout": ["printed 0", "printed 1"],
        "stderr": ["to stderr"],
    }
    assert len(lines) == 5
    assert [line.fields for line in lines if line.stream == "log"] == [{"step": 0}, {"step": 1}]

    gate = tmp_path / "gate"
    script = [{"log": "before"}, {"wait": str(gate)}, {"log": "after"}]
    going = client.runs.start(registered(client, "scripted"), {"script": script})
    opener = threading.Timer(1.5, gate.touch)
    opener.start()
    try:
        followed = [line.message for line in client.runs.logs(going.id, follow=True, poll=0.2)]
    finally:
        opener.cancel()
    assert followed == ["before", "after"]
    assert client.runs.get(going.id).status is RunStatus.completed


def test_waiting_with_no_time_left_answers_an_ended_run(client: Runplane) -> None:
    ended = client.runs.run("echo", {"n": 1}, timeout=30)
    assert client.runs.wait(ended.id, timeout=0).status == RunStatus.completed
