"""The Roe AI dialect's job routes (/v1/agents/jobs/..., /v1/agents/{id}/jobs/...): a job is a run."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query
from pydantic import Field

from runplane.api import roe_agent_shapes as agent_shapes
from runplane.api import roe_shapes as shapes
from runplane.api.common import ZonelessInstant
from runplane.api.openapi import no_content, ok
from runplane.api.roe import (
    MAX_PAGE,
    NO_AGENT,
    NO_JOB,
    TAGS,
    WRONG_ORG,
    Cursor,
    OrganizationId,
    Page,
    PageSize,
    caller,
    fail,
    fitting,
    page_links,
    page_start,
)
from runplane.domain.models import RunQuery, Strict
from runplane.domain.states import Status
from runplane.logic import ending, runnables, runs

router = Router()

MAX_JOB_IDS = 1000


class JobIds(Strict):
    job_ids: list[UUID] = Field(min_length=1, max_length=MAX_JOB_IDS)


@router.get(
    "/v1/agents/jobs/<job_id>/status/",
    tags=TAGS,
    summary="Get a job's status",
    description="`status`: 0 PENDING, 1 STARTED, 3 SUCCESS, 4 FAILURE, 5 CANCELLED; `timestamp` of the last "
    "change and, for a failure, `error_message`.",
    responses={200: ok(shapes.JobStatus, "The job's status"), **fail(WRONG_ORG, NO_JOB)},
)
def job_status(job_id: UUID, organization_id: OrganizationId = None) -> shapes.JobStatus:
    account_id = caller(organization_id, "runs:read").account_id
    # read consistently: a job polled right after it was started is there
    return shapes.job_status(runs.get_run(account_id, str(job_id), consistent=True))


@router.get(
    "/v1/agents/jobs/<job_id>/result/",
    tags=TAGS,
    summary="Get a job's result",
    description="A successful job's inputs, outputs and token usage.",
    responses={
        200: ok(shapes.JobResult, "The job's result"),
        **fail(
            WRONG_ORG, NO_JOB, (409, "The job has not ended yet"), (422, "The job ended without succeeding")
        ),
    },
)
def job_result(job_id: UUID, organization_id: OrganizationId = None) -> shapes.JobResult:
    account_id = caller(organization_id, "runs:read").account_id
    # read consistently: a caller that has just seen the job end gets its result
    state = runs.get_run(account_id, str(job_id), consistent=True, with_inputs=True)
    return shapes.job_result(runs.completed(state))


@router.post(
    "/v1/agents/jobs/statuses/",
    tags=TAGS,
    summary="Get the statuses of many jobs",
    description=f"One item per id, in the order asked (1 to {MAX_JOB_IDS} ids); a job the organization "
    "does not have is an item with null fields but its id.",
    responses={200: ok(list[shapes.JobStatusItem], "The jobs' statuses"), **fail(400, WRONG_ORG)},
)
def job_statuses(body: JobIds, organization_id: OrganizationId = None) -> list[shapes.JobStatusItem]:
    account_id = caller(organization_id, "runs:read").account_id
    ids = [str(job_id) for job_id in body.job_ids]
    found = runs.get_runs(account_id, ids)
    return [shapes.job_status_item(job_id, found.get(job_id)) for job_id in ids]


@router.post(
    "/v1/agents/jobs/results/",
    tags=TAGS,
    summary="Get the results of many jobs",
    description=f"One item per id, in the order asked (1 to {MAX_JOB_IDS} ids), as many as fit in 5 MB (ask "
    "again for the rest): `result` holds a successful job's outputs and is null otherwise; a job the "
    "organization does not have is an item with null fields but its id.",
    responses={200: ok(list[shapes.JobResultItem], "The jobs' results"), **fail(400, WRONG_ORG)},
)
def job_results(body: JobIds, organization_id: OrganizationId = None) -> list[shapes.JobResultItem]:
    account_id = caller(organization_id, "runs:read").account_id
    ids = [str(job_id) for job_id in body.job_ids]
    found = runs.get_runs(account_id, ids, with_inputs=True)
    items = [shapes.job_result_item(job_id, found.get(job_id)) for job_id in ids]
    return items[: fitting(items)]


@router.post(
    "/v1/agents/jobs/<job_id>/cancel/",
    tags=TAGS,
    summary="Cancel a job",
    description="A pending job is cancelled at once, a running one shortly after.",
    status_code=204,
    responses={
        204: no_content("Cancelled, or being cancelled"),
        **fail(WRONG_ORG, NO_JOB, (409, "The job already ended")),
    },
)
def cancel_job(job_id: UUID, organization_id: OrganizationId = None):
    account_id = caller(organization_id, "runs:write").account_id
    ending.cancel_run(account_id, str(job_id))
    return Response(status_code=204)


@router.post(
    "/v1/agents/<agent_id>/jobs/cancel-all/",
    tags=TAGS,
    summary="Cancel an agent's waiting and running jobs",
    description=f"Within the request, newest first, up to {ending.MAX_CANCEL_ALL} jobs; `note` says when "
    "more may remain (call again).",
    responses={200: ok(agent_shapes.CancelAll, "How many jobs were cancelled"), **fail(WRONG_ORG, NO_AGENT)},
)
def cancel_all_jobs(agent_id: UUID, organization_id: OrganizationId = None) -> agent_shapes.CancelAll:
    account_id = caller(organization_id, "runs:write").account_id
    runnables.get_runnable(account_id, str(agent_id))  # an unknown agent is 404
    count, more = ending.cancel_runs_of(account_id, str(agent_id))
    note = "More jobs may remain: call again" if more else "Every waiting and running job was cancelled"
    return agent_shapes.CancelAll(targeted_count=count, note=note)


def statuses(status_code: str | None) -> frozenset[Status] | None:
    """`status_code` as statuses (None: any): Roe's codes, comma-separated. FAILURE is both failed and
    timed out; RETRY and CACHED match nothing (no job is ever reported so)."""
    if status_code is None:
        return None
    wanted: set[Status] = set()
    for part in status_code.split(","):  # digits only: the parameter's pattern says so
        wanted |= {status for status, code in shapes.STATUS_CODES.items() if code == int(part)}
    return frozenset(wanted)


@router.get(
    "/v1/agents/<agent_id>/jobs/",
    tags=TAGS,
    summary="List an agent's jobs",
    description="Newest first. `next` and `previous` are full URLs; a page number skips the pages before "
    f"it (pages up to {MAX_PAGE}), a `cursor` (from `next`) starts the page directly. `status_code` "
    "filters by Roe status codes (comma-separated). Roe's `limit`, `search`, `ordering` and review "
    "filters are ignored.",
    responses={200: ok(shapes.JobPage, "A page of jobs"), **fail(400, WRONG_ORG, NO_AGENT)},
)
def list_jobs(
    agent_id: UUID,
    organization_id: OrganizationId = None,
    page: Page = 1,
    page_size: PageSize = 20,
    cursor: Cursor = None,
    created_from: Annotated[
        ZonelessInstant | None, Query(description="Created at or after (ISO 8601; UTC without a zone)")
    ] = None,
    created_to: Annotated[
        ZonelessInstant | None, Query(description="Created before (ISO 8601; UTC without a zone)")
    ] = None,
    status_code: Annotated[
        str | None,
        Query(max_length=64, pattern=r"^\d{1,2}(,\d{1,2})*$", description="Roe status codes: `3`, `3,4`"),
    ] = None,
) -> shapes.JobPage:
    account_id = caller(organization_id, "runs:read").account_id
    runnables.get_runnable(account_id, str(agent_id))  # an unknown agent is 404, not an empty list
    wanted = statuses(status_code)
    query = RunQuery(
        runnable_id=str(agent_id),
        statuses=wanted or frozenset(),
        created_after=created_from,
        created_before=created_to,
    )
    start = page_start(page, cursor, lambda at: runs.cursor_after(account_id, query, page_size, at))
    if wanted == frozenset() or (start is None and page > 1):  # no status asked for, or past the end
        return shapes.JobPage(count=0, next=None, previous=page_links(page, None)[1], results=[])
    found = runs.list_runs(account_id, query, page_size, start, with_inputs=True)
    jobs = [shapes.job(state) for state in found.items]
    kept = fitting(jobs)
    following, before = page_links(
        page,
        found.next_cursor if kept == len(jobs) else runs.cursor_at(account_id, query, found.items[kept - 1]),
    )
    return shapes.JobPage(count=kept, next=following, previous=before, results=jobs[:kept])
