"""The Roe AI dialect: /v1/agents routes. Each route parses, calls the core and maps the answer."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import urlencode
from uuid import UUID

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Query

from runplane.api import roe_shapes as shapes
from runplane.api.common import (
    Dialect,
    IdempotencyKey,
    Instant,
    absolute_url,
    principal,
    start_run_as,
)
from runplane.api.errors import json_response
from runplane.api.openapi import errors, no_content, ok
from runplane.domain.errors import InvalidRequest, Issue, WrongAccount
from runplane.domain.models import RunQuery, Scope
from runplane.logic import ending, runnables, runs
from runplane.logic.keys import Principal

router = Router()
TAGS = [Dialect.roe.value]

AgentBody = Annotated[dict[str, Any], Body(description="Input keys of the agent, plus optional `metadata`")]
BatchBody = Annotated[
    dict[str, Any],
    Body(
        description='`{"inputs": [{...}, ...]}`: one job per item (an item\'s `metadata` is ignored)',
        json_schema_extra={
            "required": ["inputs"],
            "properties": {
                "inputs": {
                    "type": "array",
                    "items": {"type": "object"},
                    "minItems": 1,
                    "maxItems": shapes.MAX_BATCH,
                }
            },
        },
    ),
]
OrganizationId = Annotated[
    str | None,
    Query(max_length=64, description="Must be the key's account when given (also accepted in the body)"),
]


def _fail(*answers: int | tuple[int, str]) -> dict:
    return errors(shapes.ErrorResponse, *answers)


NO_AGENT = (404, "No agent with this id in the organization")
NO_JOB = (404, "No job with this id in the organization")
WRONG_ORG = (403, "`organization_id` is not the key's organization, or the key lacks a permission")
BAD_INPUT = (400, "Invalid input: a field, or inputs that do not match the agent's input schema")


def _caller(organization_id: str | None, body: dict[str, Any] | None, *needed: Scope) -> Principal:
    """The caller with `needed`; an `organization_id` (query or body) other than its account is 403."""
    caller = principal(*needed)
    in_body = (body or {}).get("organization_id")
    if in_body is not None and not isinstance(in_body, str):
        raise InvalidRequest(
            "organization_id must be a string",
            "validation_error",
            [Issue("body.organization_id", "not a string")],
        )
    if any(name is not None and name != caller.account_id for name in (organization_id, in_body)):
        raise WrongAccount()
    return caller


def _json(status: int, document: Any, headers: dict[str, str] | None = None) -> Response:
    return json_response(status, json.dumps(document, separators=(",", ":")), headers)


def _job_location(job_id: str) -> dict[str, str]:
    return {"Location": absolute_url(router.current_event, f"/v1/agents/jobs/{job_id}/status/")}


@router.post(
    "/v1/agents/run/<agent_id>/",
    tags=TAGS,
    summary="Run an agent and wait for its outputs",
    description="The body's keys are the agent's inputs (`metadata` aside). Answers the job's outputs when "
    "it succeeds within the deployment's wait; 202 with the job id (and `Location`) if it is still "
    "running then; 422 if it ended without succeeding.",
    responses={
        200: ok(list[shapes.Output], "The job's outputs"),
        202: ok(str, "Still running: the job id"),
        **_fail(
            BAD_INPUT,
            402,
            WRONG_ORG,
            NO_AGENT,
            (409, "The Idempotency-Key was used with another request"),
            422,
        ),
    },
)
def run_agent(
    agent_id: UUID,
    body: AgentBody = {},  # noqa: B006
    organization_id: OrganizationId = None,
    idempotency_key: IdempotencyKey = None,
):
    caller = _caller(organization_id, body, "runs:write")
    accepted = start_run_as(caller, agent_id, shapes.run_request(body), idempotency_key)
    state = runs.answer_sync(accepted)
    if not state.status.terminal:
        return _json(202, state.id, _job_location(state.id))
    outputs = shapes.outputs(runs.completed(state))
    return _json(200, [item.model_dump() for item in outputs])


@router.post(
    "/v1/agents/run/<agent_id>/async/",
    tags=TAGS,
    summary="Start an agent job",
    description="The body's keys are the agent's inputs (`metadata` aside). The answer is the job id; poll "
    "`/v1/agents/jobs/{job_id}/status/`, then fetch `/result/`.",
    responses={
        200: ok(str, "The job id"),
        **_fail(
            BAD_INPUT, 402, WRONG_ORG, NO_AGENT, (409, "The Idempotency-Key was used with another request")
        ),
    },
)
def run_agent_async(
    agent_id: UUID,
    body: AgentBody = {},  # noqa: B006
    organization_id: OrganizationId = None,
    idempotency_key: IdempotencyKey = None,
):
    caller = _caller(organization_id, body, "runs:write")
    accepted = start_run_as(caller, agent_id, shapes.run_request(body), idempotency_key)
    return _json(200, accepted.record.id, _job_location(accepted.record.id))


@router.post(
    "/v1/agents/run/<agent_id>/async/many/",
    tags=TAGS,
    summary="Start a batch of agent jobs",
    description=f"One job per item of `inputs` (1 to {shapes.MAX_BATCH}); bad input in any item starts "
    "none. A 402 in the middle names the jobs started before it (`job_ids`).",
    responses={
        200: ok(list[str], "The job ids, in the order of `inputs`"),
        **_fail(
            BAD_INPUT, 402, WRONG_ORG, NO_AGENT, (409, "The Idempotency-Key was used with another request")
        ),
    },
)
def run_agent_many(
    agent_id: UUID,
    body: BatchBody,
    organization_id: OrganizationId = None,
    idempotency_key: IdempotencyKey = None,
):
    caller = _caller(organization_id, body, "runs:write")
    requests = shapes.batch_requests(body)
    job_ids = runs.start_runs(
        caller.account_id, str(agent_id), requests, created_by=caller.key_id, idempotency_key=idempotency_key
    )
    return _json(200, job_ids)


@router.get(
    "/v1/agents/jobs/<job_id>/status/",
    tags=TAGS,
    summary="Get a job's status",
    description="`status`: 0 PENDING, 1 STARTED, 3 SUCCESS, 4 FAILURE, 5 CANCELLED; `timestamp` of the last "
    "change and, for a failure, `error_message`.",
    responses={200: ok(shapes.JobStatus, "The job's status"), **_fail(WRONG_ORG, NO_JOB)},
)
def job_status(job_id: UUID, organization_id: OrganizationId = None) -> shapes.JobStatus:
    caller = _caller(organization_id, None, "runs:read")
    return shapes.job_status(runs.get_run(caller.account_id, str(job_id)))


@router.get(
    "/v1/agents/jobs/<job_id>/result/",
    tags=TAGS,
    summary="Get a job's result",
    description="A successful job's inputs, outputs and token usage.",
    responses={
        200: ok(shapes.JobResult, "The job's result"),
        **_fail(
            WRONG_ORG, NO_JOB, (409, "The job has not ended yet"), (422, "The job ended without succeeding")
        ),
    },
)
def job_result(job_id: UUID, organization_id: OrganizationId = None) -> shapes.JobResult:
    caller = _caller(organization_id, None, "runs:read")
    state = runs.get_run(caller.account_id, str(job_id), with_inputs=True)
    return shapes.job_result(runs.completed(state))


@router.post(
    "/v1/agents/jobs/<job_id>/cancel/",
    tags=TAGS,
    summary="Cancel a job",
    description="A pending job is cancelled at once, a running one shortly after.",
    status_code=204,
    responses={
        204: no_content("Cancelled, or being cancelled"),
        **_fail(WRONG_ORG, NO_JOB, (409, "The job already ended")),
    },
)
def cancel_job(job_id: UUID, organization_id: OrganizationId = None):
    caller = _caller(organization_id, None, "runs:write")
    ending.cancel_run(caller.account_id, str(job_id))
    return Response(status_code=204)


@router.get(
    "/v1/agents/<agent_id>/jobs/",
    tags=TAGS,
    summary="List an agent's jobs",
    description="Newest first; follow `next` (a full URL) for the following page.",
    responses={200: ok(shapes.JobPage, "A page of jobs"), **_fail(400, WRONG_ORG, NO_AGENT)},
)
def list_jobs(
    agent_id: UUID,
    organization_id: OrganizationId = None,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=2048, description="From `next` (opaque)")] = None,
    created_from: Annotated[Instant | None, Query(description="Created at or after (RFC 3339)")] = None,
    created_to: Annotated[Instant | None, Query(description="Created before (RFC 3339)")] = None,
    page: Annotated[int, Query(ge=1, le=1, description="Only 1: pages follow `next`")] = 1,
) -> shapes.JobPage:
    caller = _caller(organization_id, None, "runs:read")
    runnables.get_runnable(caller.account_id, str(agent_id))  # an unknown agent is 404, not an empty list
    query = RunQuery(runnable_id=str(agent_id), created_after=created_from, created_before=created_to)
    found = runs.list_runs(caller.account_id, query, page_size, cursor, with_inputs=True)
    next_page = None
    if found.next_cursor:
        following = {**(router.current_event.query_string_parameters or {}), "cursor": found.next_cursor}
        next_page = absolute_url(router.current_event, f"{router.current_event.path}?{urlencode(following)}")
    return shapes.JobPage(
        count=len(found.items), next=next_page, results=[shapes.job(state) for state in found.items]
    )
