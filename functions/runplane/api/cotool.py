"""The Cotool dialect: /api/agents routes. Each route parses, calls the core and maps the answer."""

from __future__ import annotations

from uuid import UUID

from aws_lambda_powertools.event_handler.api_gateway import Router

from runplane.api import cotool_shapes as shapes
from runplane.api.common import Dialect, IdempotencyKey, absolute_url, account, principal, start_run_as
from runplane.api.errors import json_response
from runplane.api.openapi import errors, ok
from runplane.domain.errors import NotFound
from runplane.domain.models import ErrorBody, RunState
from runplane.logic import runnables, runs

router = Router()
TAGS = [Dialect.cotool.value]
MAX_AGENTS = 1000


def _fail(*answers: int | tuple[int, str]) -> dict:
    return errors(ErrorBody, *answers)


NO_AGENT = (404, "No agent with this id in the organization")
NO_RUN = (404, "No run of this agent with this id")
BAD_INPUT = (400, "`ValidationError`: a field, or inputs that do not match the agent's input schema")
DENIED = (403, "`PermissionError`: the key lacks a permission (`missingPerms`)")
REUSED_KEY = (409, "The Idempotency-Key was used with another request")


def _run_of(agent_id: UUID, run_id: UUID, *, with_inputs: bool = False) -> RunState:
    """The caller's run `run_id`, which must be a run of agent `agent_id` (else 404)."""
    state = runs.get_run(account("runs:read"), str(run_id), with_inputs=with_inputs)
    if state.runnable_id != str(agent_id):
        raise NotFound("Run", str(run_id))
    return state


@router.post(
    "/api/agents/<agentId>/run-sync",
    tags=TAGS,
    summary="Run an agent and wait for its result",
    description="Answers the result when the run succeeds within the deployment's wait; 202 with the "
    "`runId` (and `Location`) if it is still running then; 422 if it ended without succeeding.",
    responses={
        200: ok(shapes.AgentRunResult, "The run's result"),
        202: ok(shapes.AgentRunPending, "Still running: poll /run-async/{runId}/status"),
        **_fail(BAD_INPUT, 402, DENIED, NO_AGENT, REUSED_KEY, 422),
    },
)
def run_sync(agentId: UUID, body: shapes.AgentRunRequest, idempotency_key: IdempotencyKey = None):
    caller = principal("runs:write")
    accepted = start_run_as(caller, agentId, shapes.run_request(body), idempotency_key)
    state = runs.answer_sync(accepted)
    if not state.status.terminal:
        pending = shapes.run_pending(state).model_dump_json()
        return json_response(202, pending, _location(agentId, state.id))
    return json_response(200, shapes.run_result(runs.completed(state), body.inputs).model_dump_json())


@router.post(
    "/api/agents/<agentId>/run-async",
    tags=TAGS,
    summary="Start an agent run",
    description="Answers the `runId` at once; poll `/run-async/{runId}/status`, then fetch `/result`.",
    responses={
        200: ok(shapes.AgentRunStarted, "The run's id"),
        **_fail(BAD_INPUT, 402, DENIED, NO_AGENT, REUSED_KEY),
    },
)
def run_async(
    agentId: UUID,
    body: shapes.AgentRunRequest,
    idempotency_key: IdempotencyKey = None,
):
    caller = principal("runs:write")
    accepted = start_run_as(caller, agentId, shapes.run_request(body), idempotency_key)
    run_id = accepted.record.id
    return json_response(
        200, shapes.AgentRunStarted(runId=run_id).model_dump_json(), _location(agentId, run_id)
    )


def _location(agent_id: UUID, run_id: str) -> dict[str, str]:
    return {
        "Location": absolute_url(router.current_event, f"/api/agents/{agent_id}/run-async/{run_id}/status")
    }


@router.get(
    "/api/agents/<agentId>/run-async/<runId>/status",
    tags=TAGS,
    summary="Get a run's status",
    description="`status`: waiting, running, done, error or interrupted, with a `statusMessage`.",
    responses={200: ok(shapes.AgentRunStatus, "The run's status"), **_fail(DENIED, NO_RUN)},
)
def run_status(agentId: UUID, runId: UUID) -> shapes.AgentRunStatus:
    return shapes.run_status(_run_of(agentId, runId))


@router.get(
    "/api/agents/<agentId>/run-async/<runId>/result",
    tags=TAGS,
    summary="Get a run's result",
    description="A done run's result, as run-sync returns it.",
    responses={
        200: ok(shapes.AgentRunResult, "The run's result"),
        **_fail(
            DENIED, NO_RUN, (409, "The run has not ended yet"), (422, "The run ended without succeeding")
        ),
    },
)
def run_result(agentId: UUID, runId: UUID) -> shapes.AgentRunResult:
    state = runs.completed(_run_of(agentId, runId, with_inputs=True))
    return shapes.run_result(state, state.inputs or {})


@router.get(
    "/api/agents",
    tags=TAGS,
    summary="List agents",
    description=f"The organization's agents, at most {MAX_AGENTS} (`GET /v1/runnables` pages through any "
    "number).",
    responses={200: ok(list[shapes.Agent], "The agents"), **_fail(DENIED)},
)
def list_agents() -> list[shapes.Agent]:
    caller = principal("runnables:read")
    agents: list[shapes.Agent] = []
    cursor = None
    while len(agents) < MAX_AGENTS:
        page = runnables.list_runnables(caller.account_id, min(100, MAX_AGENTS - len(agents)), cursor)
        agents += [shapes.agent(runnable, caller.organization_id) for runnable in page.items]
        if not (cursor := page.next_cursor):
            break
    return agents
