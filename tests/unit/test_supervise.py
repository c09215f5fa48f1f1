"""Executing a run's code: in a child process (python) or a thread (remote kinds), with outputs, errors,
crashes, time limits, cancellation, reports and questions for the worker."""

from __future__ import annotations

import time
from typing import Any

import pytest
from runplane.domain.states import Status
from runplane.runnables import builtins  # noqa: F401 - registers echo, sleep, fail
from runplane.runnables.context import RunContext
from runplane.runnables.registry import lookup
from runplane.runnables.supervise import MIN_BEAT_SECONDS, Limits, Verdict, supervise

from tests.fixtures import runnables  # noqa: F401 - registers the fixtures


def context() -> RunContext:
    return RunContext(
        run_id="r",
        account_id="a",
        runnable_id="x",
        attempt=1,
        deadline=time.time() + 60,
        resources={"doc": {"id": "1"}},
    )


def run(
    name: str,
    inputs: dict[str, Any],
    limit: float = 10,
    on_heartbeat=lambda: Verdict.go_on,
    beat: float = 0.1,
    isolated: bool = True,
    grace: float = 0.0,
    answer=lambda question, payload: {"error": {"message": "no", "code": "no"}},
):
    function = lookup(name)
    assert function is not None
    return execute(lambda ctx: function(inputs, ctx), limit, on_heartbeat, beat, isolated, grace, answer)


class Kept:
    """A ProgressSink that keeps what it is sent; nothing is ever due."""

    def __init__(self) -> None:
        self.reports: list[tuple[str, Any]] = []

    def report(self, kind: str, payload: Any) -> None:
        self.reports.append((kind, payload))

    def due(self) -> float | None:
        return None


def execute(
    code,
    limit=5.0,
    on_heartbeat=lambda: Verdict.go_on,
    beat=1.0,
    isolated=True,
    grace=0.0,
    answer=None,
    progress=None,
):
    return supervise(
        code,
        context(),
        isolated=isolated,
        limits=Limits(seconds=limit, reason="too slow", heartbeat_seconds=beat, cancel_grace_seconds=grace),
        on_heartbeat=on_heartbeat,
        answer=answer,
        progress=progress or Kept(),
    )


def test_what_the_code_prints_reaches_the_sink_before_the_end_in_order() -> None:
    def code(ctx):
        import os
        import subprocess

        ctx.set_state({"step": 1})
        print("one")
        os.write(1, b"two, straight to the file descriptor\n")
        subprocess.run(["sh", "-c", "echo three >&2"], check=True)
        print("no newline at the end", end="")
        return {}

    kept = Kept()
    outcome = execute(code, progress=kept)
    assert outcome.status is Status.completed
    assert kept.reports[0] == ("state", {"step": 1})
    lines = [(p["stream"], p["message"]) for kind, p in kept.reports if kind == "log"]
    assert ("stdout", "one") in lines
    assert ("stdout", "two, straight to the file descriptor") in lines
    assert ("stderr", "three") in lines
    assert ("stdout", "no newline at the end") in lines
    assert lines.index(("stdout", "one")) < lines.index(("stdout", "two, straight to the file descriptor"))


@pytest.mark.parametrize("isolated", [True, False], ids=["process", "thread"])
def test_outputs_and_usage_come_back(isolated: bool) -> None:
    outcome = run("llm", {}, isolated=isolated)
    assert outcome.status is Status.completed
    assert outcome.outputs == {"answer": 42, "resources": ["doc"]}
    assert [(u.model, u.prompt_tokens, u.cached_tokens) for u in outcome.usage] == [
        ("gpt-4o", 100, 5),
        ("claude", 50, 0),
    ]


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


@pytest.mark.parametrize("isolated", [True, False], ids=["process", "thread"])
def test_the_time_limit_ends_the_run(isolated: bool) -> None:
    began = time.monotonic()
    outcome = run("sleep", {"seconds": 30}, limit=0.5, isolated=isolated)
    assert time.monotonic() - began < 3
    assert outcome.status is Status.timeout
    assert (outcome.error.code, outcome.error.message) == ("timeout", "too slow")


@pytest.mark.parametrize("isolated", [True, False], ids=["process", "thread"])
def test_a_cancel_verdict_stops_the_run(isolated: bool) -> None:
    began = time.monotonic()
    outcome = run("sleep", {"seconds": 30}, on_heartbeat=lambda: Verdict.cancel, isolated=isolated)
    assert time.monotonic() - began < 3
    assert outcome.status is Status.cancelled
    assert outcome.error.code == "cancelled"


def test_cancelled_code_sees_ctx_cancelled_and_what_it_returns_is_kept() -> None:
    began = time.monotonic()
    outcome = run("sleep", {"seconds": 30}, on_heartbeat=lambda: Verdict.cancel, grace=5)
    assert time.monotonic() - began < 1
    assert outcome.status is Status.cancelled
    assert outcome.outputs["slept"] < 1


def test_code_that_ignores_cancellation_is_stopped_after_the_grace() -> None:
    began = time.monotonic()
    outcome = run(
        "span", {"seconds": 30, "path": "/dev/null"}, on_heartbeat=lambda: Verdict.cancel, grace=0.5
    )
    assert 0.5 <= time.monotonic() - began < 3
    assert outcome.status is Status.cancelled
    assert outcome.outputs is None


def test_a_lost_lease_abandons_the_run_without_an_outcome() -> None:
    assert run("sleep", {"seconds": 30}, on_heartbeat=lambda: Verdict.lost) is None


def test_heartbeats_are_sent_while_the_runnable_works() -> None:
    beats: list[float] = []
    outcome = run(
        "sleep", {"seconds": 0.55}, on_heartbeat=lambda: beats.append(time.monotonic()) or Verdict.go_on
    )
    assert outcome.status is Status.completed
    assert 3 <= len(beats) <= 6


def test_metadata_added_by_the_code_is_in_the_outcome() -> None:
    def annotate(ctx: RunContext) -> dict[str, Any]:
        ctx.add_metadata(step="one", tries=2)
        return {}

    outcome = execute(annotate, answer=lambda q, p: {})
    assert outcome.metadata == {"step": "one", "tries": 2}


def test_the_worker_answers_questions_from_a_child_process() -> None:
    asked: list[tuple[str, dict]] = []

    def answer(question: str, payload: dict[str, Any]) -> dict[str, Any]:
        asked.append((question, payload))
        if question == "start_child":
            return {"id": "child-1"}
        return {"id": "child-1", "status": "completed", "result": {"outputs": {"n": 2}}}

    def parent(ctx: RunContext) -> dict[str, Any]:
        state = ctx.run("other", {"n": 1})
        return {"child": state["result"]["outputs"]}

    outcome = execute(parent, answer=answer)
    assert outcome.outputs["child"] == {"n": 2}
    assert [q for q, _ in asked] == ["start_child", "get_run"]
    assert asked[0][1] == {
        "sequence": 1,
        "runnable_id": "other",
        "inputs": {"n": 1},
        "metadata": {},
        "timeout_seconds": None,
    }


def test_an_error_answer_fails_the_code_that_asked() -> None:
    def parent(ctx: RunContext) -> dict[str, Any]:
        ctx.run("missing")
        return {}

    outcome = execute(
        parent,
        answer=lambda q, p: {
            "error": {"message": "Runnable missing not found", "code": "runnable_not_found"}
        },
    )
    assert outcome.status is Status.failed
    assert (outcome.error.code, outcome.error.message) == ("runnable_not_found", "Runnable missing not found")


class AlwaysDue(Kept):
    """Progress whose write keeps failing: it is due all the time."""

    def due(self) -> float | None:
        return 0.0


def test_progress_always_due_does_not_make_heartbeats_spin() -> None:
    beats: list[float] = []
    outcome = execute(
        lambda ctx: time.sleep(1.0) or {},
        on_heartbeat=lambda: beats.append(time.monotonic()) or Verdict.unsure,
        beat=10.0,
        progress=AlwaysDue(),
    )
    assert outcome.status is Status.completed
    assert 2 <= len(beats) <= 1.0 / MIN_BEAT_SECONDS + 2  # about four a second, not thousands
