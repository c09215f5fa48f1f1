"""Executing python runnables in a child process: outputs, errors, crashes, time limits, cancellation."""

from __future__ import annotations

import time
from typing import Any

from runplane.domain.states import Status
from runplane.runnables import builtins  # noqa: F401 - registers echo, sleep, fail
from runplane.runnables.python import Verdict, execute
from runplane.runnables.registry import RunContext, lookup

from tests.fixtures import runnables  # noqa: F401 - registers the fixtures


def run(
    name: str,
    inputs: dict[str, Any],
    limit: float = 10,
    on_heartbeat=lambda: Verdict.go_on,
    beat: float = 0.1,
):
    context = RunContext(
        run_id="r", account_id="a", runnable_id="x", attempt=1, resources={"doc": {"id": "1"}}
    )
    function = lookup(name)
    assert function is not None
    return execute(
        function,
        inputs,
        context,
        limit_seconds=limit,
        limit_reason="too slow",
        heartbeat_seconds=beat,
        on_heartbeat=on_heartbeat,
    )


def test_outputs_and_usage_come_back() -> None:
    outcome = run("llm", {})
    assert outcome.status is Status.completed
    assert outcome.outputs == {"answer": 42, "resources": ["doc"]}
    assert [u.prompt_tokens for u in outcome.usage] == [100, 50]
    assert outcome.cost_usd == 0.003


def test_run_failed_sets_message_and_code() -> None:
    outcome = run("fail", {"message": "nope", "code": "E9"})
    assert outcome.status is Status.failed
    assert (outcome.error.message, outcome.error.code) == ("nope", "E9")


def test_an_exception_fails_the_run_with_its_type() -> None:
    outcome = run("boom", {})
    assert outcome.error.code == "runnable_exception"
    assert outcome.error.message.startswith("KeyError")


def test_a_crashing_runnable_fails_the_run_without_taking_the_worker_down() -> None:
    outcome = run("crash", {})
    assert outcome.status is Status.failed
    assert outcome.error.code == "runnable_crashed"
    assert "exit code 3" in outcome.error.message


def test_outputs_must_be_a_json_object() -> None:
    assert run("not_a_dict", {}).error.code == "invalid_output"


def test_the_time_limit_kills_the_runnable() -> None:
    began = time.monotonic()
    outcome = run("sleep", {"seconds": 30}, limit=0.5)
    assert time.monotonic() - began < 3
    assert outcome.status is Status.timeout
    assert (outcome.error.code, outcome.error.message) == ("timeout", "too slow")


def test_a_cancel_verdict_stops_the_runnable() -> None:
    began = time.monotonic()
    outcome = run("sleep", {"seconds": 30}, on_heartbeat=lambda: Verdict.cancel)
    assert time.monotonic() - began < 3
    assert outcome.status is Status.cancelled


def test_a_lost_lease_abandons_the_run_without_an_outcome() -> None:
    assert run("sleep", {"seconds": 30}, on_heartbeat=lambda: Verdict.lost) is None


def test_heartbeats_are_sent_while_the_runnable_works() -> None:
    beats: list[float] = []
    outcome = run(
        "sleep", {"seconds": 0.55}, on_heartbeat=lambda: beats.append(time.monotonic()) or Verdict.go_on
    )
    assert outcome.status is Status.completed
    assert 3 <= len(beats) <= 6
