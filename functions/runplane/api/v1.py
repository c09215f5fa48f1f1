"""The re-factor dialect: /v1 routes. Each route parses, calls one logic function and shapes the answer."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated
from uuid import UUID

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query

from runplane.api.common import (
    Dialect,
    IdempotencyKey,
    absolute_url,
    account,
    created_range,
    principal,
    start_run_as,
)
from runplane.api.errors import error_responses, json_response, ok_response
from runplane.domain.models import (
    AccountUsage,
    AccountView,
    ApiKey,
    CallbackDelivery,
    CallbackSecret,
    CreatedApiKey,
    ErrorBody,
    KeyRequest,
    Page,
    RunMode,
    Runnable,
    RunnableFields,
    RunPage,
    RunQuery,
    RunReference,
    RunState,
    StartRunRequest,
)
from runplane.domain.states import Status
from runplane.logic import accounts, callbacks, ending, keys, runnables, runs

router = Router()
TAGS = [Dialect.refactor.value]

Limit = Annotated[int, Query(ge=1, le=100, description="Page size")]
Cursor = Annotated[str | None, Query(max_length=2048, description="`next_cursor` of the previous page")]
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait\s*=\s*(\d+)", re.IGNORECASE)


def _errors(*statuses: int) -> dict:
    return error_responses(ErrorBody, *statuses)


# --- runnables ---


@router.post(
    "/v1/runnables",
    tags=TAGS,
    status_code=201,
    responses={201: ok_response(Runnable, "Created"), **_errors(400, 401, 403)},
)
def create_runnable(body: RunnableFields) -> Runnable:
    return runnables.create_runnable(account("runnables:write"), body)


@router.get("/v1/runnables", tags=TAGS, responses=_errors(400, 401, 403))
def list_runnables(limit: Limit = 50, cursor: Cursor = None) -> Page[Runnable]:
    return runnables.list_runnables(account("runnables:read"), limit, cursor)


@router.get("/v1/runnable/<id>", tags=TAGS, responses=_errors(401, 403, 404))
def get_runnable(id: UUID) -> Runnable:
    return runnables.get_runnable(account("runnables:read"), str(id))


@router.put("/v1/runnable/<id>", tags=TAGS, responses=_errors(400, 401, 403, 404))
def replace_runnable(id: UUID, body: RunnableFields) -> Runnable:
    return runnables.replace_runnable(account("runnables:write"), str(id), body)


@router.delete("/v1/runnable/<id>", tags=TAGS, status_code=204, responses=_errors(401, 403, 404))
def delete_runnable(id: UUID):
    runnables.delete_runnable(account("runnables:write"), str(id))
    return Response(status_code=204)


# --- runs ---


@router.post(
    "/v1/runnable/<id>/runs",
    tags=TAGS,
    summary="Start a run (mode=async: 202 RunReference; mode=sync: 200 RunState when terminal)",
    responses={
        200: ok_response(RunState, "sync: the run ended"),
        202: ok_response(
            RunReference, "async: accepted. sync: still running when the wait ended (RunState, Location)"
        ),
        **_errors(400, 401, 402, 403, 404, 409, 413),
    },
)
def start_run(
    id: UUID,
    body: Annotated[StartRunRequest, Body()] = StartRunRequest(),  # noqa: B008 - an empty body is a run with defaults
    mode: Annotated[RunMode, Query()] = "async",
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


@router.get("/v1/run/<run_id>", tags=TAGS, responses=_errors(401, 403, 404))
def get_run(run_id: UUID) -> RunState:
    return runs.get_run(account("runs:read"), str(run_id))


@router.post(
    "/v1/run/<run_id>/cancel",
    tags=TAGS,
    summary="Cancel a run (200: cancelled; 202: running, will end cancelled; 409: already ended)",
    responses={
        200: ok_response(RunState, "Cancelled"),
        202: ok_response(RunState, "Cancellation pending"),
        **_errors(401, 403, 404, 409),
    },
)
def cancel_run(run_id: UUID):
    state, pending = ending.cancel_run(account("runs:write"), str(run_id))
    return json_response(202 if pending else 200, state.model_dump_json())


@router.get(
    "/v1/runs",
    tags=TAGS,
    summary="Runs, newest first, with the sums of their usage",
    responses=_errors(400, 401, 403),
)
def list_runs(
    status: Annotated[Status | None, Query()] = None,
    runnable_id: Annotated[UUID | None, Query()] = None,
    parent_run_id: Annotated[UUID | None, Query(description="Only the child runs of this run")] = None,
    created_after: Annotated[datetime | None, Query(description="Created at or after (ISO 8601)")] = None,
    created_before: Annotated[datetime | None, Query(description="Created before (ISO 8601)")] = None,
    limit: Limit = 20,
    cursor: Cursor = None,
) -> RunPage:
    after, before = created_range(created_after, created_before, ("created_after", "created_before"))
    query = RunQuery(
        status=status,
        runnable_id=str(runnable_id) if runnable_id else None,
        parent_run_id=str(parent_run_id) if parent_run_id else None,
        created_after=after,
        created_before=before,
    )
    return runs.list_runs(account("runs:read"), query, limit, cursor)


# --- callbacks ---


@router.get("/v1/run/<run_id>/callbacks", tags=TAGS, responses=_errors(401, 403, 404))
def list_callbacks(run_id: UUID) -> Page[CallbackDelivery]:
    return Page(items=callbacks.list_deliveries(account("runs:read"), str(run_id)))


@router.post(
    "/v1/run/<run_id>/callbacks/redeliver",
    tags=TAGS,
    summary="Send the run's callback again, same webhook-id (202; 409 while it is still being delivered)",
    responses={202: ok_response(CallbackDelivery, "Redelivery enqueued"), **_errors(401, 403, 404, 409)},
)
def redeliver_callback(run_id: UUID):
    delivery = callbacks.redeliver(account("runs:write"), str(run_id))
    return json_response(202, delivery.model_dump_json())


@router.get("/v1/callbacks/secret", tags=TAGS, responses=_errors(401, 403))
def get_callback_secret() -> CallbackSecret:
    return callbacks.callback_secret(account("admin"))


@router.post(
    "/v1/callbacks/secret/rotate",
    tags=TAGS,
    summary="Replace the signing secret; the previous one keeps signing during the overlap",
    responses=_errors(401, 403, 409),
)
def rotate_callback_secret() -> CallbackSecret:
    return callbacks.rotate_secret(account("admin"))


# --- API keys (admin) ---


@router.get("/v1/keys", tags=TAGS, responses=_errors(401, 403))
def list_keys() -> Page[ApiKey]:
    return Page(items=keys.list_keys(account("admin")))


@router.post(
    "/v1/keys",
    tags=TAGS,
    status_code=201,
    responses={201: ok_response(CreatedApiKey, "Created"), **_errors(400, 401, 403)},
)
def create_key(body: KeyRequest | None = None):
    body = body or KeyRequest()
    created = keys.create_key(account("admin"), name=body.name, scopes=body.scopes)
    reply = CreatedApiKey(**keys.get_key(created.key_id).model_dump(), api_key=created.token)
    return json_response(201, reply.model_dump_json())


@router.delete("/v1/keys/<key_id>", tags=TAGS, status_code=204, responses=_errors(401, 403, 404))
def revoke_key(key_id: Annotated[str, Path(pattern="^[0-9a-f]{16}$")]):
    keys.revoke_key(key_id, account_id=account("admin"))
    return Response(status_code=204)


# --- the account ---


@router.get(
    "/v1/account", tags=TAGS, summary="The caller's account: credit budgets and usage", responses=_errors(401)
)
def get_account() -> AccountView:
    return accounts.describe_account(account())


@router.get(
    "/v1/account/usage",
    tags=TAGS,
    summary="Token usage and spend by day over a period (default: this month so far)",
    responses=_errors(400, 401),
)
def get_account_usage(
    start: Annotated[date | None, Query(description="First UTC day (YYYY-MM-DD)")] = None,
    end: Annotated[date | None, Query(description="Last UTC day, inclusive (default: today)")] = None,
) -> AccountUsage:
    return accounts.account_usage(account(), start, end)
