"""The API's bodies as pydantic models, written to mirror the schemas of `GET /openapi.json`.

Answers (`Answer`) keep fields the client does not know yet (`extra="allow"`), and each names the schema
it mirrors (`schema_name`, checked by the client's drift test). Requests (`Request`) refuse unknown fields,
as the API does, so a typo fails before anything is sent.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

RunnableKind = Literal["python", "http", "lambda", "bedrock"]
TelemetryStrategy = Literal["disable", "default", "force"]
CallbackEvent = Literal["start", "state", "output", "logs", "completed"]


class Answer(BaseModel):
    model_config = ConfigDict(extra="allow")
    schema_name: ClassVar[str]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def body(self) -> dict[str, Any]:
        """The JSON body: the fields that were given (an explicit None is sent as null)."""
        return self.model_dump(mode="json", exclude_unset=True)


class RunStatus(StrEnum):
    waiting = "waiting"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"
    timeout = "timeout"

    @property
    def terminal(self) -> bool:
        return self not in (RunStatus.waiting, RunStatus.running)


# --- runnables ---


class RunnableSpec(Request):
    """What `POST /v1/runnables` and `PUT /v1/runnable/{id}` take."""

    name: str
    kind: RunnableKind
    config: dict[str, Any]
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    timeout_seconds: int | None = None
    telemetry_strategy: TelemetryStrategy = "default"
    max_concurrency: int | None = None
    tags: list[str] = Field(default_factory=list)
    retry_on_worker_lost: bool = True


class Runnable(Answer):
    schema_name = "Runnable"

    id: str
    account_id: str
    name: str
    kind: RunnableKind
    config: dict[str, Any]
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    timeout_seconds: int | None = None
    telemetry_strategy: TelemetryStrategy = "default"
    max_concurrency: int | None = None
    tags: list[str] = Field(default_factory=list)
    retry_on_worker_lost: bool = True
    created_at: datetime
    updated_at: datetime

    def spec(self) -> RunnableSpec:
        """What registered this runnable: the body that replaces it as it is."""
        return RunnableSpec(**{name: getattr(self, name) for name in RunnableSpec.model_fields})


T = TypeVar("T")


class Page(Answer, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class RunnablePage(Page[Runnable]):
    schema_name = "Page_Runnable_"


# --- starting a run ---


class ResourceReference(Request):
    id: str


class ResourceCreate(Request):
    """A resource: `content` (a `data:` URI) or `uri` (fetched once by the service)."""

    name: str
    directory_path: str  # "": the run's directory itself
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    pinned: bool = False
    content: str | None = None
    uri: str | None = None


class RunResource(Request):
    """A resource a run sees as `ctx.resources[name]`: an existing one by id, or one created with the run."""

    name: str
    resource: ResourceReference | ResourceCreate
    metadata: dict[str, Any] = Field(default_factory=dict)


class StartRunRequest(Request):
    inputs: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    resources: list[RunResource] = Field(default_factory=list)
    timeout_seconds: int | None = None
    telemetry_strategy: TelemetryStrategy = "default"
    callback_url: str | None = None
    callback_headers: dict[str, str] | None = None
    callback_events: list[CallbackEvent] | None = None
    experiment_id: str | None = None
    experiment_candidate_id: str | None = None


# --- runs ---


class RunReference(Answer):
    schema_name = "RunReference"

    id: str


class ModelUsage(Answer):
    schema_name = "ModelUsage"

    provider: str
    model: str
    cached_tokens: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class RunError(Answer):
    schema_name = "RunError"

    message: str
    code: str | None = None


class RunResult(Answer):
    schema_name = "RunResult"

    id: str
    outputs: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    usage: list[ModelUsage] = Field(default_factory=list)
    error: RunError | None = None


class RunState(Answer):
    schema_name = "RunState"

    id: str
    account_id: str
    status: RunStatus
    runnable_id: str | None = None
    parent_run_id: str | None = None
    telemetry_span_id: str | None = None
    experiment_id: str | None = None
    experiment_candidate_id: str | None = None
    state: dict[str, Any] | None = None
    created_by: str | None = None
    created_at: datetime
    completed_at: datetime | None = None
    failed_at: datetime | None = None
    total_input_tokens: int | None = None
    total_cached_tokens: int | None = None
    total_output_tokens: int | None = None
    total_token_cost_usd: float | None = None
    result: RunResult | None = None
    metadata: dict[str, Any] | None = None

    @property
    def done(self) -> bool:
        return self.status.terminal

    @property
    def outputs(self) -> dict[str, Any] | None:
        """The outputs: complete once the run has ended, partial (as published) while it runs."""
        return self.result.outputs if self.result else None

    @property
    def error(self) -> RunError | None:
        return self.result.error if self.result else None


class UsageTotals(Answer):
    schema_name = "UsageTotals"

    total_input_tokens: int = 0
    total_output_tokens: int = 0
    total_cached_tokens: int = 0
    total_token_cost_usd: float = 0.0
    unpriced_usage: int = 0


class RunPage(Page[RunState]):
    schema_name = "RunPage"

    totals: UsageTotals


# --- following a run ---


class LogLine(Answer):
    schema_name = "LogLine"

    at: datetime
    stream: Literal["stdout", "stderr", "log", "agent", "lambda"]
    message: str
    fields: dict[str, Any] | None = None


class LogPage(Answer):
    schema_name = "LogPage"

    lines: list[LogLine]
    next_cursor: str | None = None
    truncated: bool = False


class WaitingFor(Answer):
    schema_name = "WaitingFor"

    scope: Literal["account", "runnable"]
    limit: int


class RunEvent(Answer):
    """One event: `status` (with `reason`), `state`, `output` (partial outputs) or `logs` (`lines`)."""

    schema_name = "RunEvent"

    seq: int
    type: Literal["status", "state", "output", "logs"]
    at: datetime
    status: RunStatus
    reason: (
        Literal["accepted", "queued", "claimed", "retried", "handed_off", "cancel_requested", "ended"] | None
    ) = None
    attempt: int | None = None
    waiting_for: WaitingFor | None = None
    error: RunError | None = None
    state: dict[str, Any] | None = None
    outputs: dict[str, Any] | None = None
    lines: list[LogLine] | None = None


class EventPage(Answer):
    schema_name = "EventPage"

    events: list[RunEvent]
    last_seq: int
    status: RunStatus
    done: bool


# --- resources ---


class Resource(Answer):
    schema_name = "Resource"

    id: str
    name: str
    directory_path: str
    tags: list[str]
    metadata: dict[str, Any]
    content_type: str
    created_at: datetime
    pinned: bool
    status: Literal["pending", "ready"]
    source: Literal["content", "uri", "upload", "file"]
    size: int | None = None
    sha256: str | None = None
    expires_at: datetime | None = None
    uri: str | None = None
    problem: str | None = None
    download_url: str | None = None
    download_url_expires_at: datetime | None = None


class ResourcePage(Page[Resource]):
    schema_name = "Page_Resource_"


# --- callbacks ---


class CallbackSecret(Answer):
    schema_name = "CallbackSecret"

    secret: str
    previous_valid_until: datetime | None = None


class CallbackAttempt(Answer):
    schema_name = "CallbackAttempt"

    number: int
    started_at: datetime
    latency_ms: int
    status_code: int | None = None
    error: str | None = None


class CallbackDelivery(Answer):
    schema_name = "CallbackDelivery"

    id: str
    run_id: str
    url: str
    state: Literal["pending", "succeeded", "stopped", "dead"]
    created_at: datetime
    event: CallbackEvent = "completed"
    attempts: list[CallbackAttempt] = Field(default_factory=list)
    next_attempt_at: datetime | None = None
    finished_at: datetime | None = None


class CallbackDeliveryPage(Page[CallbackDelivery]):
    schema_name = "Page_CallbackDelivery_"
