"""Roe AI's shapes and the mappers between them and the core's models. No I/O.

An agent is a runnable, a job is a run, an organization is an account. Values Roe serializes as strings
(inputs and outputs) are sent as-is when they are strings and as JSON text otherwise, with `data_type`
saying which (`text/plain` or `application/json`).
"""

from __future__ import annotations

import json
from contextlib import suppress
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from runplane.api.common import parsed
from runplane.api.forms import RequestBody, typed_inputs
from runplane.domain.errors import InvalidRequest, Issue
from runplane.domain.models import ErrorBody, RunState, Shape, StartRunRequest
from runplane.domain.states import Status

# Roe's job status codes; 2 RETRY and 6 CACHED are never reported (a retried run stays STARTED).
STATUS_CODES: dict[Status, int] = {
    Status.waiting: 0,
    Status.running: 1,
    Status.completed: 3,
    Status.failed: 4,
    Status.timeout: 4,
    Status.cancelled: 5,
}
RESERVED_KEYS = frozenset({"metadata", "organization_id"})
INVALID_INPUT = "Invalid agent input data"
MAX_BATCH = 100


class Output(Shape):
    key: str = Field(description="The key of the output")
    data_type: str = Field(description="The MIME data type of the output")
    value: str = Field(description="The value of the output, serialized as a string")
    cost: float | None = Field(None, description="The cost of the agent job execution, USD")


class JobInput(Shape):
    key: str
    description: str = Field("", description="Runplane's inputs carry no description: empty")
    value: str
    data_type: str


class JobStatus(Shape):
    status: int = Field(description="0 PENDING, 1 STARTED, 3 SUCCESS, 4 FAILURE, 5 CANCELLED")
    timestamp: float = Field(description="Unix time of the last change, seconds")
    error_message: str | None = Field(None, description="When the status is FAILURE or CANCELLED")


class JobResult(BaseModel):
    agent_id: str
    agent_version_id: str = Field(description="Runnables are not versioned: the agent's id")
    inputs: list[JobInput]
    input_tokens: int | None
    output_tokens: int | None
    outputs: list[Output]


class JobStatusItem(BaseModel):
    """One job of a status batch; a job this organization does not have is all nulls but its id."""

    id: str
    status: int | None = Field(description="As a job's `status`; null for an unknown job")
    created_at: datetime | None
    last_updated_at: datetime | None
    timestamp: float | None = None
    error_message: str | None = None


class JobResultItem(BaseModel):
    """One job of a result batch: `result` is a successful job's outputs, null otherwise; a job this
    organization does not have is all nulls but its id."""

    id: str
    status: int | None
    result: list[Output] | None
    agent_id: str | None
    agent_version_id: str | None
    inputs: list[JobInput] | None
    cost: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None


class StatusEvent(Shape):
    timestamp: datetime
    status_code: int
    error_message: str | None = None


class Job(BaseModel):
    """A job in a listing. Roe's review and evaluation fields have nothing behind them here: null, `{}`
    or `unreviewed`."""

    id: str
    agent_version_name: str | None = Field(None, description="Runnables are not versioned: null")
    status_events: list[StatusEvent]
    status_code: int
    created_at: datetime
    last_updated_at: datetime
    duration_ms: int | None = Field(description="From start to end; null until the job ends")
    ui_fields: dict[str, Any] = Field(default_factory=dict)
    evaluation: None = None
    feedback_review: None = None
    review_state: Literal["unreviewed"] = "unreviewed"
    creator: None = None
    job_inputs: list[JobInput]
    metadata: dict[str, Any]


class JobPage(BaseModel):
    count: int = Field(description="Jobs on this page")
    next: str | None = Field(description="The next page's URL; null on the last page")
    previous: str | None = Field(description="The previous page's URL; null on the first page")
    results: list[Job]


class ErrorResponse(Shape):
    detail: str = Field(description="What went wrong, in full (what Roe's SDK shows)")
    error: str = Field(description="Roe's error text")
    message: str = Field(description="What exactly went wrong")
    status_code: int
    code: str = Field(description="Runplane's stable error code")
    issues: list[dict[str, str]] | None = None
    missingPerms: list[str] | None = None
    job_ids: list[str] | None = Field(None, description="402 in a batch: the jobs started before it")
    job_id: str | None = Field(None, description="504 from a sync run: the job, still running")


# --- requests ---


def _metadata(body: dict[str, Any]) -> dict[str, Any]:
    """`metadata` as an object, a JSON-encoded object, or null (none)."""
    metadata = body.get("metadata")
    if isinstance(metadata, str):
        with suppress(ValueError):  # not JSON: refused below as a string
            metadata = json.loads(metadata)
    if metadata is None:
        return {}
    if isinstance(metadata, dict):
        return metadata
    raise InvalidRequest(
        INVALID_INPUT, "validation_error", [Issue("body.metadata", "must be an object or its JSON text")]
    )


def _inputs(body: dict[str, Any]) -> dict[str, Any]:
    """The body's keys but `metadata` and `organization_id`. Roe's own examples also wrap them in
    `{"inputs": {...}}`: an `inputs` object that is the only key is unwrapped."""
    inputs = {key: value for key, value in body.items() if key not in RESERVED_KEYS}
    if set(inputs) == {"inputs"} and isinstance(inputs["inputs"], dict):
        return inputs["inputs"]
    return inputs


def run_request(body: RequestBody, input_schema: dict[str, Any] | None) -> StartRunRequest:
    """A single run's request: a form's text values are typed by the agent's input schema."""
    inputs = typed_inputs(body.values, input_schema, RESERVED_KEYS) if body.textual else _inputs(body.values)
    return parsed(StartRunRequest, inputs=inputs, metadata=_metadata(body.values))


def batch_requests(body: dict[str, Any]) -> list[StartRunRequest]:
    """`{"inputs": [{...}, ...], "metadata"?}`: one job per item, each with the batch's metadata; an
    item's own `metadata` is ignored, as Roe does."""
    items = body.get("inputs")
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise InvalidRequest(
            INVALID_INPUT, "validation_error", [Issue("body.inputs", "must be a list of input objects")]
        )
    if not 1 <= len(items) <= MAX_BATCH:
        raise InvalidRequest(
            INVALID_INPUT, "validation_error", [Issue("body.inputs", f"must hold 1 to {MAX_BATCH} items")]
        )
    metadata = _metadata(body)
    return [parsed(StartRunRequest, inputs=_inputs(item), metadata=metadata) for item in items]


# --- answers ---


def _text(value: Any) -> tuple[str, str]:
    if isinstance(value, str):
        return value, "text/plain"
    return json.dumps(value, separators=(",", ":")), "application/json"


def _job_inputs(state: RunState) -> list[JobInput]:
    items = []
    for key, value in (state.inputs or {}).items():
        text, data_type = _text(value)
        items.append(JobInput(key=key, value=text, data_type=data_type))
    return items


def outputs(state: RunState) -> list[Output]:
    """The run's outputs, one item per key; each carries the job's cost, as Roe's do."""
    items = []
    for key, value in (state.result.outputs if state.result and state.result.outputs else {}).items():
        text, data_type = _text(value)
        items.append(Output(key=key, value=text, data_type=data_type, cost=state.total_token_cost_usd))
    return items


def _changed_at(state: RunState) -> datetime:
    return state.completed_at or state.failed_at or state.started_at or state.created_at


def _error_message(state: RunState) -> str | None:
    return state.result.error.message if state.result and state.result.error else None


def job_status(state: RunState) -> JobStatus:
    return JobStatus(
        status=STATUS_CODES[state.status],
        timestamp=_changed_at(state).timestamp(),
        error_message=_error_message(state),
    )


def job_result(state: RunState) -> JobResult:
    return JobResult(
        agent_id=state.runnable_id or "",
        agent_version_id=state.runnable_id or "",
        inputs=_job_inputs(state),
        input_tokens=state.total_input_tokens,
        output_tokens=state.total_output_tokens,
        outputs=outputs(state),
    )


def job_status_item(job_id: str, state: RunState | None) -> JobStatusItem:
    if state is None:
        return JobStatusItem(id=job_id, status=None, created_at=None, last_updated_at=None)
    changed = _changed_at(state)
    return JobStatusItem(
        id=state.id,
        status=STATUS_CODES[state.status],
        created_at=state.created_at,
        last_updated_at=changed,
        timestamp=changed.timestamp(),
        error_message=_error_message(state),
    )


def job_result_item(job_id: str, state: RunState | None) -> JobResultItem:
    if state is None:
        return JobResultItem(
            id=job_id, status=None, result=None, agent_id=None, agent_version_id=None, inputs=None
        )
    return JobResultItem(
        id=state.id,
        status=STATUS_CODES[state.status],
        result=outputs(state) if state.status is Status.completed else None,
        agent_id=state.runnable_id,
        agent_version_id=state.runnable_id,
        inputs=_job_inputs(state),
        cost=state.total_token_cost_usd,
        input_tokens=state.total_input_tokens,
        output_tokens=state.total_output_tokens,
    )


def job(state: RunState) -> Job:
    """The job with its known status changes: created (PENDING), started (STARTED), ended."""
    events = [StatusEvent(timestamp=state.created_at, status_code=STATUS_CODES[Status.waiting])]
    if state.started_at:
        events.append(StatusEvent(timestamp=state.started_at, status_code=STATUS_CODES[Status.running]))
    duration_ms = None
    if state.status.terminal:
        ended = _changed_at(state)
        events.append(
            StatusEvent(
                timestamp=ended,
                status_code=STATUS_CODES[state.status],
                error_message=_error_message(state),
            )
        )
        duration_ms = round((ended - (state.started_at or state.created_at)).total_seconds() * 1000)
    return Job(
        id=state.id,
        status_events=events,
        status_code=STATUS_CODES[state.status],
        created_at=state.created_at,
        last_updated_at=_changed_at(state),
        duration_ms=duration_ms,
        job_inputs=_job_inputs(state),
        metadata=state.metadata or {},
    )


# Roe's own error texts, by Runplane error code
_TEXT_BY_CODE = {
    "runnable_not_found": "Agent not found",
    "run_not_found": "Job not found",
    "insufficient_credits": "Insufficient credits",
    "internal_error": "Internal server error",
    "version_not_found": "Agent version not found",
    "still_running": "Job is still running",
}


def _roe_text(error: ErrorBody) -> str:
    """Roe's text for the error, else Runplane's; bad input in the body is Roe's `Invalid agent input data`."""
    if error.code in ("invalid_json", "invalid_body", "invalid_inputs") or (
        error.code == "validation_error" and all(i["field"].startswith("body") for i in error.issues)
    ):
        return INVALID_INPUT
    return _TEXT_BY_CODE.get(error.code, error.error)


def _detail(text: str, error: ErrorBody) -> str:
    """Roe's text, then what exactly is wrong: each issue, else Runplane's message when it says more."""
    said = [f"{issue['field']}: {issue['message']}" for issue in error.issues]
    if not said and error.error != text:
        said = [error.error]
    return "; ".join([text, *said]) if said else text


def error_body(status: int, error: ErrorBody, started: list[str]) -> ErrorResponse:
    text = _roe_text(error)
    return ErrorResponse(
        detail=_detail(text, error),
        error=text,
        message=error.error,
        status_code=status,
        code=error.code,
        issues=error.issues or None,
        missingPerms=error.missingPerms,
        job_ids=started or None,
    )
