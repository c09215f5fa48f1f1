"""The paths the fault matrix covers, and running one scenario of a path.

A flow is what a scenario starts from (`prepare`: not recorded, may crash a worker on purpose to leave
the run where the recorded components take over), what starts it (`start`), whose requests are its
injection points (`components`), how it must end (`expect`) and what else it must have done (`check`).
The API → dispatch → worker → callback path is `api_run` (`api_run_progress` with a runnable that
reports progress, its worker's requests); the intake path `intake_run`; the sweeper's
three ways to act and the dead-letter handler each have a flow that leaves them something to do;
`api_redeliver` asks for a pending callback to be attempted now. `api_run_async` is a run of an async
http runnable: its worker sends it to the agent and hands it over, the agent's reports end it
(tests/faults/agent.py); `sweeper_agent_silent` ends a run whose agent never reports.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import astuple, dataclass, field
from functools import cache
from pathlib import Path
from tempfile import TemporaryDirectory

from runplane.domain.models import RunnableFields
from runplane.logic.callbacks import OVERDUE_AFTER_SECONDS
from runplane.logic.runnables import create_runnable

from tests.faults.agent import ScriptedAgent, agent_of
from tests.faults.harness import READS, Expect, Fault, Point, Report, Stack, acting_as
from tests.receiver import Answer


@dataclass(frozen=True)
class Flow:
    name: str
    components: frozenset[str]
    expect: Expect
    start: Callable[[Stack], object]
    prepare: Callable[[Stack], object] = lambda stack: None
    settings: dict[str, str] = field(default_factory=dict)
    check: Callable[[Stack], list[str]] = lambda stack: []

    def __str__(self) -> str:
        return self.name


def _accepted(stack: Stack, **inputs: object) -> None:
    """A run accepted over the API and not executed yet."""
    stack.start_run(inputs=stack.run_inputs(**inputs))


def _worker_lost(where: Callable[[Stack, Point], bool]) -> Callable[[Stack], None]:
    """A run accepted, then its worker died right after the first request `where` accepts."""

    def prepare(stack: Stack) -> None:
        _accepted(stack)
        fault = Fault("crash_after", where=lambda point, params: where(stack, point))
        stack.injector.faults.append(fault)
        stack.deliver_visible()
        if fault.times:
            stack.errors.append("the flow's prelude crash never happened")
        stack.injector.faults.remove(fault)

    return prepare


def _dead_lettered(stack: Stack) -> None:
    """A run accepted whose dispatch message was received maxReceiveCount times and never deleted."""
    _accepted(stack)
    queue, client = stack.queue_url("dispatch"), stack.svc.queues.client
    with acting_as(None):
        for _ in range(6):  # the sixth receive finds it over the limit and moves it to the DLQ
            client.receive_message(QueueUrl=queue, VisibilityTimeout=0, WaitTimeSeconds=0)


def _asked(action: str) -> Callable[[Stack], None]:
    """`POST /v1/run/{id}/{action}` of the flow's run, tried again as a client does until answered 2xx."""

    def start(stack: Stack) -> None:
        run_id = stack.runs()[0]["id"]
        for _ in range(4):
            answer = stack.request("POST", f"/v1/run/{run_id}/{action}")
            if answer.status is not None and answer.status < 300:
                return

    return start


RETRY_SECONDS = 3600  # api_redeliver's schedule: one retry, an hour after the first attempt


def _retry_pending(stack: Stack) -> None:
    """A run that ended, whose callback's first attempt failed: its retry is an hour away."""
    _accepted(stack)
    stack.receiver.script = [Answer(500), Answer(200)]
    stack.deliver_visible()


def _attempted_at_once(stack: Stack) -> list[str]:
    """The receiver got the failed attempt and then one more, made at once: before the sweeper could have
    had to enqueue it, let alone the old schedule (the old round's message is dropped later)."""
    received = stack.receiver.received
    if len(received) != 2:
        return [f"the receiver got {len(received)} requests, expected the failed attempt and one more"]
    if (late := received[1].at - received[0].at) >= OVERDUE_AFTER_SECONDS:
        return [f"the redelivery was attempted {late:.0f} s after the failed attempt"]
    return []


def _at_payload_read(stack: Stack, point: Point) -> bool:  # after the claim, before the body starts
    return point.component == "worker" and point.operation == "GetObject"


def _at_end(stack: Stack, point: Point) -> bool:
    """The worker's first DynamoDB write once the body has run, other than a renewal: the one that ends
    the run."""
    return (
        point.component == "worker"
        and point.service == "dynamodb"
        and point.operation not in READS
        and "renew" not in point.site
        and stack.executions() > 0
    )


# --- asynchronous agents ---

PUBLIC_URL = "https://runplane.example"  # the report URL's origin: the agent posts to its path
AGENT_SETTINGS = {"RUNPLANE_PUBLIC_URL": PUBLIC_URL}
AGENT_HEARTBEAT = 60  # virtual seconds: the scripted agent reports at once, well within it
SILENT_HEARTBEAT = 5
PROGRESS_USAGE = {"provider": "openai", "model": "gpt-4o", "prompt_tokens": 100, "completion_tokens": 20}
FINAL_USAGE = {"provider": "anthropic", "model": "claude", "prompt_tokens": 50, "completion_tokens": 10}
PROGRESS = {"state": {"step": 1}, "logs": ["reading the sources"], "usage": [PROGRESS_USAGE]}


def _final(envelope: dict[str, object]) -> dict[str, object]:
    """The agent's final report on the run it was sent (its outputs name the attempt, as tally's do)."""
    outputs = {"answer": 42, "attempt": envelope["attempt"]}
    return {"outputs": outputs, "usage": [FINAL_USAGE], "metadata": {"pages": 3}}


def _async_runnable(stack: Stack, heartbeat: int, **fields: object) -> None:
    """The flow's runnable: an http one in async mode whose agent is the harness's agent receiver."""
    config = {"url": stack.agent.url, "mode": "async", "heartbeat_seconds": heartbeat}
    spec = RunnableFields(name="agent", kind="http", config=config, **fields)
    with acting_as(None):
        stack.runnable_id = create_runnable(stack.account_id, spec).id


def _sent_to_a_reporting_agent(stack: Stack) -> None:
    """A run of an async runnable accepted over the API; the agent it is sent to reports progress (state,
    a log line, usage) and then its end (outputs, more usage, metadata), at once.

    What "nothing runs twice" means here: the agent is sent the run exactly once. The crash rule allows
    one more execution for each worker lost after the body ran, because such a worker leaves a run that
    nobody else would finish. Not so for an async run: a worker lost once the envelope went out had either
    handed the run to the agent already (the agent holds its lease) or still holds the lease itself (30 s),
    and reports are recorded whoever holds the run, so the scripted agent, reporting at once, ends the run
    well within that lease. A second envelope is then the run executed twice (Expect retried_when_lost=
    False). An agent slower than a lost worker's lease would be sent the run again, legitimately (attempt
    2, a new token, the old one refused: the agent drops that run): not this flow."""
    _async_runnable(stack, AGENT_HEARTBEAT)
    stack.actors.append(ScriptedAgent(stack, lambda envelope: [PROGRESS, _final(envelope)]))
    _accepted(stack)


def _agent_ended_it(stack: Stack) -> list[str]:
    """What the agent reported is the run's, each report counted once: the outputs of the attempt that
    ended it, its state, the usage of each progress report answered 200 once and of the final report once, its log
    line once per progress report answered 200, its metadata; and no report was refused or answered 5xx
    unless the scenario's fault hit that very request (agent.ScriptedAgent)."""
    agent = agent_of(stack)
    problems = list(agent.problems)
    run = stack.only_run()
    if run is None or not agent.jobs:
        return [*problems, "no run, or its agent was never sent it"]
    progressed = len(agent.reported(0))
    with acting_as(None):
        state = stack.api.get(f"/v1/run/{run['id']}").json()
        lines = stack.api.get(f"/v1/run/{run['id']}/logs").json()["lines"]
    ending = [job for job in agent.jobs if job.envelope["attempt"] == run.get("attempt")]
    wanted = _final(ending[-1].envelope)["outputs"] if ending else None
    if (state.get("result") or {}).get("outputs") != wanted:
        problems.append(f"outputs {(state.get('result') or {}).get('outputs')}, the agent reported {wanted}")
    if state.get("state") != PROGRESS["state"]:
        problems.append(f"the run's state is {state.get('state')}, the agent reported {PROGRESS['state']}")
    if ((state.get("result") or {}).get("metadata") or {}).get("pages") != 3:
        problems.append(f"metadata {(state.get('result') or {}).get('metadata')} lacks the agent's")
    document = stack.outcome_document(run)
    usage = json.loads(document).get("usage", []) if document else []
    tokens = {entry["model"]: entry.get("prompt_tokens", 0) for entry in usage}
    expected = {
        "gpt-4o": progressed * PROGRESS_USAGE["prompt_tokens"],
        "claude": FINAL_USAGE["prompt_tokens"],
    }
    if {model: count for model, count in tokens.items() if count} != {m: n for m, n in expected.items() if n}:
        problems.append(
            f"the outcome's usage is {tokens} prompt tokens, the agent reported {expected}"
            f" ({progressed} progress report(s) answered 200)"
        )
    logged = [line["message"] for line in lines]
    if logged != PROGRESS["logs"] * progressed:
        problems.append(f"the run's log is {logged}, the agent sent it {progressed} time(s)")
    return problems


def _handed_to_a_silent_agent(stack: Stack) -> None:
    """A run of an async runnable that is not sent again, handed to an agent that never reports."""
    _async_runnable(stack, SILENT_HEARTBEAT, retry_on_worker_lost=False)
    _accepted(stack)
    stack.deliver_visible("worker")
    run = stack.only_run() or {}
    if not str(run.get("lease_owner", "")).startswith("agent:"):
        stack.errors.append(
            f"the run was not handed to its agent: {run.get('status')} {run.get('lease_owner')}"
        )


def _given_up(stack: Stack) -> list[str]:
    run = stack.only_run()
    document = stack.outcome_document(run) if run else None
    message = ((json.loads(document) if document else {}).get("error") or {}).get("message", "")
    if f"heartbeat_seconds={SILENT_HEARTBEAT}" not in message:
        return [f"the error does not say the agent was silent: {message!r}"]
    return []


FLOWS = (
    Flow(
        "api_run",
        frozenset({"api", "worker", "callbacks", "sweeper"}),
        Expect(accepted=True),
        start=lambda stack: stack.start_run(inputs=stack.run_inputs(seconds=0.15)),
    ),
    Flow(
        "api_run_progress",  # the worker's progress writes: the run item's, then the events'
        frozenset({"worker"}),
        Expect(accepted=True),
        start=lambda stack: stack.start_run(inputs=stack.run_inputs(seconds=0.15, report=True)),
    ),
    Flow("intake_run", frozenset({"intake"}), Expect(), start=lambda stack: stack.send_intake()),
    Flow(
        "api_cancel_waiting",
        frozenset({"api", "worker"}),
        Expect(status="cancelled", code="cancelled", executions=0, accepted=True),
        start=_asked("cancel"),
        prepare=_accepted,
    ),
    Flow(
        "sweeper_redispatch",
        frozenset({"sweeper"}),
        Expect(accepted=True),
        start=lambda stack: None,
        prepare=_worker_lost(_at_payload_read),
    ),
    Flow(
        "sweeper_worker_lost",
        frozenset({"sweeper"}),
        Expect(status="failed", code="worker_lost", executions=0, accepted=True),
        start=lambda stack: None,
        prepare=_worker_lost(_at_payload_read),
        settings={"RUNPLANE_MAX_ATTEMPTS": "1"},
    ),
    Flow(
        "sweeper_settle",
        frozenset({"sweeper"}),
        Expect(accepted=True),
        start=lambda stack: None,
        prepare=_worker_lost(_at_end),
    ),
    Flow(
        "dead_letter",
        frozenset({"dead_letters"}),
        Expect(status="failed", code="dispatch_failed", executions=0, accepted=True),
        start=lambda stack: None,
        prepare=_dead_lettered,
    ),
    Flow(
        "api_redeliver",
        frozenset({"api"}),
        Expect(),
        start=_asked("callbacks/redeliver"),
        prepare=_retry_pending,
        settings={"RUNPLANE_CALLBACK_SCHEDULE": str(RETRY_SECONDS)},
        check=_attempted_at_once,
    ),
    Flow(
        # the worker's requests and the report endpoint's: sent to the agent once (see its prepare)
        "api_run_async",
        frozenset({"worker", "api"}),
        Expect(accepted=True, retried_when_lost=False),
        start=lambda stack: None,
        prepare=_sent_to_a_reporting_agent,
        settings=AGENT_SETTINGS,
        check=_agent_ended_it,
    ),
    Flow(
        "sweeper_agent_silent",
        frozenset({"sweeper"}),
        Expect(status="failed", code="heartbeat_timeout", retried_when_lost=False, accepted=True),
        start=lambda stack: None,
        prepare=_handed_to_a_silent_agent,
        settings=AGENT_SETTINGS,
        check=_given_up,
    ),
)
FLOW = {flow.name: flow for flow in FLOWS}

# Scenarios that show a defect not fixed yet (scenario id -> what goes wrong): they run, expected to fail
# (strict: once the defect is fixed they pass, and their entry must go).
KNOWN_DEFECTS: dict[str, str] = {}


def run(
    flow: Flow, tmp: Path, point: Point | None = None, mode: str | None = None
) -> tuple[Report, list[Point]]:
    """One scenario: `mode` at `point` (None: the clean run). The report and the points recorded."""
    started = time.monotonic()
    with Stack(tmp, flow.settings) as stack:
        flow.prepare(stack)
        stack.injector.begin(flow.components)
        fault = Fault(mode, point) if point is not None and mode is not None else None
        if fault:
            stack.injector.faults.append(fault)
        flow.start(stack)
        stack.drive()
        violations = stack.violations(flow.expect) + flow.check(stack)
        fired = fault is not None and fault.times == 0
        if fault is not None and not fired:
            violations.append(f"the fault never fired: the flow made no request {point.id}")
        report = Report(flow.name, point and point.id, mode, fired, violations, time.monotonic() - started)
        return report, list(dict.fromkeys(stack.injector.points))


@cache
def points(name: str) -> tuple[Point, ...]:
    """The injection points of a flow, from a clean run (recorded once per process). How often a lease
    is renewed depends on how long the body takes: only the first renewal is a point."""
    with TemporaryDirectory() as tmp:
        _, recorded = run(FLOW[name], Path(tmp))
    return tuple(point for point in recorded if point.nth == 1 or "renew" not in point.site)


def all_points() -> dict[str, list[list[object]]]:
    """Every flow's points as plain data: what pytest-xdist's controller hands its workers, so that each
    collects the same scenarios (the order of a clean run's requests can differ between two runs: the
    sweeper reads in parallel)."""
    return {flow.name: [list(astuple(point)) for point in points(flow.name)] for flow in FLOWS}
