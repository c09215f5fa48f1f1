"""The Roe AI dialect's run routes (/v1/agents/run/...), and what its other routes share.

Single runs read their own body, as Roe AI's SDK sends it: a form, multipart with files, or JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlencode
from uuid import UUID

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Query
from pydantic import BaseModel

from runplane.api import forms
from runplane.api import roe_shapes as shapes
from runplane.api.common import Dialect, IdempotencyKey, absolute_url, principal, start_run_as
from runplane.api.errors import error_response, json_response
from runplane.api.openapi import errors, ok, request_body
from runplane.domain.access import Scope
from runplane.domain.errors import InvalidRequest, Issue, NotFound, WrongAccount
from runplane.logic import runnables, runs
from runplane.logic.keys import Principal

router = Router()
TAGS = [Dialect.roe.value]

OrganizationId = Annotated[
    str | None,
    Query(max_length=64, description="The key's organization id when given (also accepted in the body)"),
]
NO_AGENT = (404, "No agent with this id in the organization")
NO_JOB = (404, "No job with this id in the organization")
WRONG_ORG = (403, "`organization_id` is not the key's organization, or the key lacks a permission")
BAD_INPUT = (400, "Invalid input: a field, or inputs that do not match the agent's input schema")
MAX_PAGE = 100  # a page number alone skips the pages before it: deeper pages are reached through `next`
Page = Annotated[
    int,
    Query(
        ge=1,
        description=f"Page number, 1 first; without a `cursor` at most {MAX_PAGE} (`next` links carry one)",
    ),
]
PageSize = Annotated[int, Query(ge=1, le=100)]
Cursor = Annotated[str | None, Query(max_length=2048, description="From `next` (opaque): the page's start")]
REUSED_KEY = (409, "The Idempotency-Key was used with another request")
STILL_RUNNING = (504, "Still running at the end of the wait: `job_id` names the job, which goes on")


def fail(*answers: int | tuple[int, str]) -> dict:
    return errors(shapes.ErrorResponse, *answers)


def caller(organization_id: str | None, *needed: Scope) -> Principal:
    """The caller with `needed`; an `organization_id` other than its organization's is 403."""
    found = principal(*needed)
    check_organization(found, organization_id)
    return found


def check_organization(found: Principal, organization_id: Any) -> None:
    """The organization's UUID (in any case) names the caller's organization; so does its account id."""
    if organization_id is None:
        return
    if not isinstance(organization_id, str):
        raise InvalidRequest(
            "organization_id must be a string",
            "validation_error",
            [Issue("body.organization_id", "not a string")],
        )
    if organization_id.lower() != found.organization_id and organization_id != found.account_id:
        raise WrongAccount()


def page_links(page: int, next_cursor: str | None) -> tuple[str | None, str | None]:
    """The URLs of the next page (its number and cursor) and of the previous one (its number), keeping
    the request's other parameters."""
    event = router.current_event
    asked = {k: v for k, v in (event.query_string_parameters or {}).items() if k not in ("page", "cursor")}

    def url(number: int, cursor: str | None) -> str:
        query = {**asked, "page": str(number), **({"cursor": cursor} if cursor else {})}
        return absolute_url(event, f"{event.path}?{urlencode(query)}")

    following = url(page + 1, next_cursor) if next_cursor else None
    # a page number alone goes up to MAX_PAGE: past it, the way back is the client's own history
    before = url(page - 1, None) if 1 < page <= MAX_PAGE + 1 else None
    return following, before


def page_start(page: int, cursor: str | None, cursor_after: Callable[[str | None], str | None]) -> str | None:
    """Where a page starts: at `cursor` when given (`page` then only numbers it), else after the pages
    before it, skipped one `cursor_after(cursor)` at a time (None: there are not that many)."""
    if cursor is not None or page == 1:
        return cursor
    if page > MAX_PAGE:
        raise InvalidRequest(
            f"Without a cursor, a page number may be at most {MAX_PAGE}: follow `next` to go further",
            "page_too_deep",
            [Issue("query.page", f"over {MAX_PAGE} without a cursor")],
        )
    for _ in range(page - 1):
        cursor = cursor_after(cursor)
        if cursor is None:
            break
    return cursor


RESPONSE_BUDGET = 5_000_000  # bytes of items in one answer: Lambda's response limit is 6 MB, headers included


def fitting(items: list[BaseModel]) -> int:
    """How many of `items`, from the first, fit in one answer (at least one), counted as Lambda counts
    them: JSON with non-ASCII escaped, as the resolver writes it, then escaped again as the response's
    `body` string."""
    used = 0
    for count, item in enumerate(items):
        used += len(json.dumps(json.dumps(item.model_dump(mode="json")))) + 1
        if used > RESPONSE_BUDGET and count:
            return count
    return len(items)


def json_answer(status: int, document: Any, headers: dict[str, str] | None = None) -> Response:
    return json_response(status, json.dumps(document, separators=(",", ":")), headers)


def _job_location(job_id: str) -> dict[str, str]:
    return {"Location": absolute_url(router.current_event, f"/v1/agents/jobs/{job_id}/status/")}


# --- single runs: form, multipart or JSON bodies ---

_TEXT_VALUES = {"type": "object", "additionalProperties": {"type": "string"}}
AGENT_INPUTS = request_body(
    "The agent's inputs by name, plus optional `metadata` (an object, or its JSON text) and "
    "`organization_id`. A form's values are text, typed by the agent's input schema; a multipart file "
    "part becomes a resource of the job, named after its field.",
    {
        "application/json": {"type": "object", "additionalProperties": True},
        "application/x-www-form-urlencoded": _TEXT_VALUES,
        # a part is a text value or a file: bytes either way
        "multipart/form-data": {
            "type": "object",
            "additionalProperties": {"type": "string", "format": "binary"},
            "propertyNames": {"minLength": 1},  # a file part is a resource named after its field
        },
    },
)
SYNC = {
    "summary": "Run an agent and wait for its outputs",
    "description": "Answers the job's outputs when it succeeds within the deployment's wait, 422 if it "
    "ends without succeeding, and 504 naming the job (`job_id`, `Location`) if it is still running "
    "then: the job goes on; poll its status.",
    "responses": {
        200: ok(list[shapes.Output], "The job's outputs"),
        **fail(BAD_INPUT, 402, WRONG_ORG, NO_AGENT, REUSED_KEY, 422, STILL_RUNNING),
    },
    "openapi_extensions": AGENT_INPUTS,
}
ASYNC = {
    "summary": "Start an agent job",
    "description": "The answer is the job id; poll `/v1/agents/jobs/{job_id}/status/`, then fetch "
    "`/result/`.",
    "responses": {200: ok(str, "The job id"), **fail(BAD_INPUT, 402, WRONG_ORG, NO_AGENT, REUSED_KEY)},
    "openapi_extensions": AGENT_INPUTS,
}
VERSION = " The version is the agent itself: its id is the agent's id."


def _start(
    agent_id: UUID, version_id: UUID | None, organization_id: str | None, idempotency_key: str | None
) -> runs.Accepted:
    """Start a job from the request's body: the agent (and version) must exist before the body is read,
    so an unknown agent is 404 whatever the body is."""
    found = caller(organization_id, "runs:write")
    runnable = runnables.get_runnable(found.account_id, str(agent_id))
    if version_id is not None and version_id != agent_id:
        raise NotFound("Version", str(version_id))
    body = forms.read_body(router.current_event)
    check_organization(found, body.values.get("organization_id"))
    request = shapes.run_request(body, runnable.input_schema)
    return start_run_as(found, agent_id, request, idempotency_key, files=body.files, runnable=runnable)


def _answer_sync(accepted: runs.Accepted) -> Response:
    state = runs.answer_sync(accepted)
    if not state.status.terminal:
        still = error_response(
            504,
            f"Job {state.id} is still running after the wait; poll its status",
            "still_running",
            extra={"job_id": state.id},
        )
        still.headers.update(_job_location(state.id))
        return still
    return json_answer(200, [item.model_dump() for item in shapes.outputs(runs.completed(state))])


def _answer_async(accepted: runs.Accepted) -> Response:
    return json_answer(200, accepted.record.id, _job_location(accepted.record.id))


@router.post("/v1/agents/run/<agent_id>/", tags=TAGS, **SYNC)
def run_agent(agent_id: UUID, organization_id: OrganizationId = None, idempotency_key: IdempotencyKey = None):
    return _answer_sync(_start(agent_id, None, organization_id, idempotency_key))


@router.post("/v1/agents/run/<agent_id>/async/", tags=TAGS, **ASYNC)
def run_agent_async(
    agent_id: UUID, organization_id: OrganizationId = None, idempotency_key: IdempotencyKey = None
):
    return _answer_async(_start(agent_id, None, organization_id, idempotency_key))


@router.post(
    "/v1/agents/run/<agent_id>/versions/<version_id>/",
    tags=TAGS,
    **{**SYNC, "summary": "Run an agent version and wait", "description": SYNC["description"] + VERSION},
)
def run_version(
    agent_id: UUID,
    version_id: UUID,
    organization_id: OrganizationId = None,
    idempotency_key: IdempotencyKey = None,
):
    return _answer_sync(_start(agent_id, version_id, organization_id, idempotency_key))


@router.post(
    "/v1/agents/run/<agent_id>/versions/<version_id>/async/",
    tags=TAGS,
    **{**ASYNC, "summary": "Start a job of an agent version", "description": ASYNC["description"] + VERSION},
)
def run_version_async(
    agent_id: UUID,
    version_id: UUID,
    organization_id: OrganizationId = None,
    idempotency_key: IdempotencyKey = None,
):
    return _answer_async(_start(agent_id, version_id, organization_id, idempotency_key))


# --- batches: JSON ---

BatchBody = Annotated[
    dict[str, Any],
    Body(
        description='`{"inputs": [{...}, ...], "metadata"?: {...}}`: one job per item, each with the '
        "batch's `metadata` (an item's own `metadata` is ignored)",
        json_schema_extra={
            "required": ["inputs"],
            "properties": {
                "inputs": {
                    "type": "array",
                    "items": {"type": "object"},
                    "minItems": 1,
                    "maxItems": shapes.MAX_BATCH,
                },
                "metadata": {
                    "anyOf": [{"type": "object"}, {"type": "null"}],
                    "description": "Or its JSON text",
                },
            },
        },
    ),
]


@router.post(
    "/v1/agents/run/<agent_id>/async/many/",
    tags=TAGS,
    summary="Start a batch of agent jobs",
    description=f"One job per item of `inputs` (1 to {shapes.MAX_BATCH}); bad input in any item starts "
    "none. A 402 in the middle names the jobs started before it (`job_ids`).",
    responses={
        200: ok(list[str], "The job ids, in the order of `inputs`"),
        **fail(BAD_INPUT, 402, WRONG_ORG, NO_AGENT, REUSED_KEY),
    },
)
def run_agent_many(
    agent_id: UUID,
    body: BatchBody,
    organization_id: OrganizationId = None,
    idempotency_key: IdempotencyKey = None,
):
    found = caller(organization_id, "runs:write")
    check_organization(found, body.get("organization_id"))
    job_ids = runs.start_runs(
        found.account_id,
        str(agent_id),
        shapes.batch_requests(body),
        created_by=found.key_id,
        idempotency_key=idempotency_key,
    )
    return json_answer(200, job_ids)
