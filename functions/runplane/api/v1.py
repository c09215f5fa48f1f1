"""The re-factor dialect: /v1 routes. Each route parses, calls one logic function and shapes the answer."""

from __future__ import annotations

import re
from typing import Annotated
from uuid import UUID

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query

from runplane.api.common import (
    Day,
    Dialect,
    IdempotencyKey,
    Instant,
    absolute_url,
    account,
    principal,
    start_run_as,
)
from runplane.api.errors import json_response
from runplane.api.openapi import errors, no_content, ok
from runplane.domain.access import AccountView, ApiKey, CreatedApiKey, KeyRequest
from runplane.domain.configs import RunnableSpec
from runplane.domain.models import (
    AccountUsage,
    ErrorBody,
    Page,
    RunMode,
    Runnable,
    RunPage,
    RunQuery,
    RunReference,
    RunState,
    StartRunRequest,
)
from runplane.domain.states import Status
from runplane.logic import accounts, ending, keys, runnables, runs

router = Router()
TAGS = [Dialect.refactor.value]

Limit = Annotated[int, Query(ge=1, le=100, description="Page size")]
Cursor = Annotated[
    str | None,
    Query(max_length=2048, description="`next_cursor` of the previous page, as it was given (opaque)"),
]
RunnableName = Annotated[
    str | None, Query(min_length=1, max_length=200, description="Only the runnable of this name")
]
RunnableBody = Annotated[RunnableSpec, Body(description="The runnable: `config` is what its `kind` needs")]
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+)", re.IGNORECASE)


def fail(*answers: int | tuple[int, str]) -> dict:
    return errors(ErrorBody, *answers)


NO_RUNNABLE = (404, "No runnable with this id in the caller's account")
NO_RUN = (404, "No run with this id in the caller's account")
NAME_TAKEN = (409, "Another runnable of the account has this name")
BAD_RUNNABLE = (
    400,
    "Invalid runnable: a field, or `config` for the kind (unknown python function, a URL, ARN or model "
    "this deployment may not call), or a schema that is not JSON Schema",
)

# --- runnables ---


@router.post(
    "/v1/runnables",
    tags=TAGS,
    status_code=201,
    summary="Register a runnable",
    description="A runnable is what a run executes: a registered python function, an HTTP agent, a Lambda "
    "function or a Bedrock model (`kind`, with its `config`). Runs of it take a snapshot, so a later "
    "change or deletion does not affect runs already accepted. Names are unique within an account: a "
    "name in use is 409 `runnable_name_taken` (find that runnable with `GET /v1/runnables?name=`).",
    responses={201: ok(Runnable, "Registered"), **fail(BAD_RUNNABLE, 403, NAME_TAKEN)},
)
def create_runnable(body: RunnableBody) -> Runnable:
    return runnables.create_runnable(account("runnables:write"), body)


@router.get(
    "/v1/runnables",
    tags=TAGS,
    summary="List runnables",
    description="The account's runnables, newest first, a page at a time: pass `next_cursor` as `cursor` "
    "for the next. With `name`, the runnable of that name (exact, case-sensitive) or an empty page.",
    responses={200: ok(Page[Runnable], "A page of runnables"), **fail(400, 403)},
)
def list_runnables(limit: Limit = 50, cursor: Cursor = None, name: RunnableName = None) -> Page[Runnable]:
    return runnables.list_runnables(account("runnables:read"), limit, cursor, name)


@router.get(
    "/v1/runnable/<id>",
    tags=TAGS,
    summary="Get a runnable",
    description="The runnable as registered, with its normalised `config`.",
    responses={200: ok(Runnable, "The runnable"), **fail(403, NO_RUNNABLE)},
)
def get_runnable(id: UUID) -> Runnable:
    return runnables.get_runnable(account("runnables:read"), str(id))


@router.put(
    "/v1/runnable/<id>",
    tags=TAGS,
    summary="Replace a runnable",
    description="Every field is replaced, as on registration. Runs already accepted keep their snapshot. "
    "A new name must be free in the account (409 `runnable_name_taken`); the old one is freed.",
    responses={200: ok(Runnable, "Replaced"), **fail(BAD_RUNNABLE, 403, NO_RUNNABLE, NAME_TAKEN)},
)
def replace_runnable(id: UUID, body: RunnableBody) -> Runnable:
    return runnables.replace_runnable(account("runnables:write"), str(id), body)


@router.delete(
    "/v1/runnable/<id>",
    tags=TAGS,
    status_code=204,
    summary="Delete a runnable",
    description="Runs already accepted go on; new runs of it are 404.",
    responses={204: no_content("Deleted"), **fail(403, NO_RUNNABLE)},
)
def delete_runnable(id: UUID):
    runnables.delete_runnable(account("runnables:write"), str(id))
    return Response(status_code=204)


# --- runs ---


@router.post(
    "/v1/runnable/<id>/runs",
    tags=TAGS,
    summary="Start a run",
    description="`mode=async` (default): 202 with the run's id at once; poll `GET /v1/run/{run_id}` or "
    "pass `callback_url`. `mode=sync`: wait for the end (at most `Prefer: wait=N` seconds, else the "
    "deployment's wait) and answer 200 with the RunState, or 202 with the RunState so far and `Location` "
    "if it still runs. With `Idempotency-Key`, a repeated request gives the same run "
    "(`Idempotent-Replayed: true`).",
    responses={
        200: ok(RunState, "sync: the run ended"),
        202: ok(RunState | RunReference, "async: accepted (RunReference); sync: still running (RunState)"),
        **fail(
            (400, "Invalid run request, or `inputs` that do not match the runnable's `input_schema`"),
            402,
            403,
            NO_RUNNABLE,
            (409, "The Idempotency-Key was used with another request"),
        ),
    },
)
def start_run(
    id: UUID,
    body: Annotated[StartRunRequest, Body()] = StartRunRequest(),  # noqa: B008 - an empty body is a run with defaults
    mode: Annotated[RunMode, Query(description="async: answer at once; sync: wait for the end")] = "async",
    prefer: Annotated[str | None, Header(description="`wait=N`: wait at most N seconds in sync mode")] = None,
    idempotency_key: IdempotencyKey = None,
):
    caller = principal("runs:write")
    accepted = start_run_as(caller, id, body or StartRunRequest(), idempotency_key)
    record = accepted.record
    headers = {"Location": absolute_url(router.current_event, f"/v1/run/{record.id}")}
    if accepted.replayed:
        headers["Idempotent-Replayed"] = "true"
    if mode == "async":
        return json_response(202, RunReference(id=record.id).model_dump_json(), headers)
    state = runs.answer_sync(accepted, _prefer_wait(prefer))
    if state.status.terminal:
        return json_response(200, state.model_dump_json(), headers if accepted.replayed else None)
    return json_response(202, state.model_dump_json(), headers)


def _prefer_wait(prefer: str | None) -> float | None:
    match = _PREFER_WAIT.search(prefer) if prefer else None
    return float(match.group(1)) if match else None


@router.get(
    "/v1/run/<run_id>",
    tags=TAGS,
    summary="Get a run",
    description="The run's RunState: `status`, and once it ended `result` (outputs or error, usage) with "
    "token totals and cost.",
    responses={200: ok(RunState, "The run"), **fail(403, NO_RUN)},
)
def get_run(run_id: UUID) -> RunState:
    return runs.get_run(account("runs:read"), str(run_id))


@router.post(
    "/v1/run/<run_id>/cancel",
    tags=TAGS,
    summary="Cancel a run",
    description="A waiting run ends `cancelled` at once (200). A running one is asked to stop (202) and "
    "ends `cancelled`, keeping outputs it published. A run that already ended is 409.",
    responses={
        200: ok(RunState, "Cancelled"),
        202: ok(RunState, "Cancellation pending: the run ends cancelled shortly"),
        **fail(403, NO_RUN, (409, "The run already ended")),
    },
)
def cancel_run(run_id: UUID):
    state, pending = ending.cancel_run(account("runs:write"), str(run_id))
    return json_response(202 if pending else 200, state.model_dump_json())


@router.get(
    "/v1/runs",
    tags=TAGS,
    summary="List runs",
    description="The account's runs, newest first, filtered by every parameter given together, with the "
    "sums of their usage for the page. Pass `next_cursor` as `cursor` for the next page.",
    responses={200: ok(RunPage, "A page of runs"), **fail(400, 403)},
)
def list_runs(
    status: Annotated[Status | None, Query()] = None,
    runnable_id: Annotated[UUID | None, Query()] = None,
    parent_run_id: Annotated[UUID | None, Query(description="Only the child runs of this run")] = None,
    created_after: Annotated[Instant | None, Query(description="Created at or after (RFC 3339)")] = None,
    created_before: Annotated[Instant | None, Query(description="Created before (RFC 3339)")] = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> RunPage:
    query = RunQuery(
        statuses=frozenset({status} if status else ()),
        runnable_id=str(runnable_id) if runnable_id else None,
        parent_run_id=str(parent_run_id) if parent_run_id else None,
        created_after=created_after,
        created_before=created_before,
    )
    return runs.list_runs(account("runs:read"), query, limit, cursor)


# --- API keys (admin) ---


@router.get(
    "/v1/keys",
    tags=TAGS,
    summary="List API keys",
    description="The account's keys (never their secrets). Needs `admin`.",
    responses={200: ok(Page[ApiKey], "The keys"), **fail(403)},
)
def list_keys() -> Page[ApiKey]:
    return Page(items=keys.list_keys(account("admin")))


@router.post(
    "/v1/keys",
    tags=TAGS,
    status_code=201,
    summary="Create an API key",
    description="The answer holds the key (`api_key`) once; only its hash is stored. Needs `admin`.",
    responses={201: ok(CreatedApiKey, "Created"), **fail(400, 403)},
)
def create_key(body: Annotated[KeyRequest, Body()] = KeyRequest()):  # noqa: B008 - no body: the defaults
    created = keys.create_key(account("admin"), name=body.name, scopes=body.scopes)
    reply = CreatedApiKey(
        **keys.get_key(created.key_id).model_dump(),
        api_key=created.token,
        organization_id=created.organization_id,
    )
    return json_response(201, reply.model_dump_json())


@router.delete(
    "/v1/keys/<key_id>",
    tags=TAGS,
    status_code=204,
    summary="Revoke an API key",
    description="The key stops working at once. Needs `admin`.",
    responses={204: no_content("Revoked"), **fail(403, (404, "No such key in the caller's account"))},
)
def revoke_key(key_id: Annotated[str, Path(pattern="^[0-9a-f]{16}$")]):
    keys.revoke_key(key_id, account_id=account("admin"))
    return Response(status_code=204)


# --- the account ---


@router.get(
    "/v1/account",
    tags=TAGS,
    summary="Get the caller's account",
    description="The organization id, credit budgets and what is used of them, the rate limit per key, "
    "the concurrency limit, and the caller's own key (`key`: its id, name and scopes; never its secret).",
    responses={200: ok(AccountView, "The account")},
)
def get_account() -> AccountView:
    caller = principal()
    return accounts.caller_account(caller.account_id, caller.key_id)


@router.get(
    "/v1/account/usage",
    tags=TAGS,
    summary="Get the account's usage by day",
    description="Token usage and spend per UTC day over a period of at most 366 days (default: this month "
    "so far), as recorded when runs end.",
    responses={200: ok(AccountUsage, "The usage"), **fail(400)},
)
def get_account_usage(
    start: Annotated[Day | None, Query(description="First UTC day (YYYY-MM-DD)")] = None,
    end: Annotated[Day | None, Query(description="Last UTC day, inclusive (default: today)")] = None,
) -> AccountUsage:
    return accounts.account_usage(account(), start, end)
