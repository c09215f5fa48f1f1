"""Public schemas (the re-factor contract) and the internal run record. Plain pydantic, no I/O."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar
from urllib.parse import urlsplit
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_serializer,
)
from pydantic import (
    Tag as Choice,
)

from runplane.domain import files
from runplane.domain.states import Status

ACCOUNT_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_CONCURRENCY = 10_000  # the largest max_concurrency a runnable or an account can be given
AccountId = Annotated[str, StringConstraints(pattern=rf"^{ACCOUNT_ID_PATTERN.pattern}$")]
TelemetryStrategy = Literal["disable", "default", "force"]
RunMode = Literal["async", "sync"]
# What a run may ask to be called back for (`callback_events`); `completed` is its end.
CallbackEvent = Literal["start", "state", "output", "logs", "completed"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _no_nulls(schema: dict[str, Any]) -> None:
    """A Shape's schema: an optional field is absent when empty, so its schema admits no null."""
    for field in schema.get("properties", {}).values():
        if "anyOf" in field and {"type": "null"} in field["anyOf"]:
            branches = [branch for branch in field.pop("anyOf") if branch != {"type": "null"}]
            field.update(branches[0] if len(branches) == 1 else {"anyOf": branches})
        if "default" in field and field["default"] is None:
            del field["default"]


class Shape(BaseModel):
    """A response body whose fields that are None are left out, never null (the seeds' schemas have no
    nulls there)."""

    model_config = ConfigDict(json_schema_extra=_no_nulls)

    @model_serializer(mode="wrap")
    def _without_nones(self, serialize):  # unannotated: the schema stays the fields
        return {key: value for key, value in serialize(self).items() if value is not None}


class Strict(BaseModel):
    """Request bodies: unknown fields are errors, so typos are caught instead of ignored."""

    model_config = ConfigDict(extra="forbid")


# --- starting a run ---


def _check_absolute_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http(s) URL")
    return url


_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_HEADER_VALUE = re.compile(r"^(?:[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?$")
RESERVED_HEADERS = frozenset(
    {
        "content-type",
        "content-length",
        "host",
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


def _check_outbound_headers(headers: dict[str, str] | None) -> dict[str, str] | None:
    for name, value in (headers or {}).items():
        lowered = name.lower()
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid header name")
        if lowered in RESERVED_HEADERS or lowered.startswith("webhook-"):
            raise ValueError(f"{name!r} is set by Runplane and cannot be overridden")
        if not _HEADER_VALUE.fullmatch(value):
            raise ValueError(
                f"the value of {name!r} must be printable ASCII without leading or trailing spaces"
            )
    return headers


MAX_METADATA_BYTES = 16 * 1024  # stored with the run's record, which DynamoDB caps at 400 KB


def _check_metadata_size(metadata: dict[str, Any]) -> dict[str, Any]:
    if (
        len(json.dumps(metadata, separators=(",", ":"), ensure_ascii=False, default=str).encode())
        > MAX_METADATA_BYTES
    ):
        raise ValueError(f"must be at most {MAX_METADATA_BYTES} bytes as JSON")
    return metadata


RunMetadata = Annotated[dict[str, Any], AfterValidator(_check_metadata_size)]
OutboundUrl = Annotated[
    str,
    StringConstraints(max_length=2048, pattern=r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#\s]+"),
    AfterValidator(_check_absolute_url),
    Field(json_schema_extra={"format": "uri"}),
]


def _any_case(word: str) -> str:
    """An ECMA regex for `word` in any letter case (JSON Schema patterns have no case-insensitive flag)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)  # names: letters, "-"


_HEADERS_SCHEMA = {
    "propertyNames": {
        "pattern": _HEADER_NAME.pattern,
        "not": {
            "pattern": f"^(?:{'|'.join(map(_any_case, sorted(RESERVED_HEADERS)))}|{_any_case('webhook-')}.*)$"
        },
    },
    "additionalProperties": {"type": "string", "pattern": _HEADER_VALUE.pattern},
}
OutboundHeaders = Annotated[
    dict[str, str] | None,
    AfterValidator(_check_outbound_headers),
    Field(
        json_schema_extra=_HEADERS_SCHEMA, description="Sent with each request; Runplane's own are reserved"
    ),
]


def _json_number(value: object) -> object:
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON number")
    return value


# JSON types as JSON Schema says them: no "5" or true for a number (5.0 is an integer), no 0 or "true"
# for a boolean
Flag = Annotated[bool, Field(strict=True)]


def json_number(kind: type[int] | type[float], **limits: float) -> Any:
    """`kind` within `limits` (ge, le, gt), read as JSON Schema reads a number (the limits come before
    the validator, or the schema would not show them)."""
    return Annotated[kind, Field(**limits), BeforeValidator(_json_number)]


Whole = json_number(int)


def _unique_events(events: list[str]) -> list[str]:
    if len(set(events)) != len(events):
        raise ValueError("names an event twice")
    return events


# --- resources (seed: ResourceCreate, or a reference to an existing resource) ---


class ResourceReference(Strict):
    id: UUID = Field(description="The pre-existing ID of the resource, if you've already created it.")


Tag = Annotated[str, StringConstraints(min_length=1, max_length=files.MAX_TAG)]


class ResourceFields(Strict):
    """What a resource is called and carries, however its bytes arrive."""

    name: Annotated[str, AfterValidator(files.check_name)] = Field(
        description="Name of the resource: its file name (no '/', '\\' or NUL; not '.' or '..'; at most "
        f"{files.MAX_SEGMENT_BYTES} bytes as UTF-8)",
        min_length=1,
        max_length=files.MAX_NAME,
        pattern=r"^[^/\\\x00]+$",
        json_schema_extra={"not": {"enum": [".", ".."]}},
    )
    directory_path: Annotated[str, AfterValidator(files.check_directory)] = Field(
        description="Path to the directory where the resource should be stored, relative to the run's "
        f"directory (no '..', not absolute, no '\\' or NUL; each segment at most {files.MAX_SEGMENT_BYTES} "
        "bytes as UTF-8)",
        max_length=files.MAX_DIRECTORY,
        pattern=r"^[^\\\x00]*$",
    )
    tags: list[Tag] = Field(
        default_factory=list, max_length=files.MAX_TAGS, description="Tags for the resource"
    )
    metadata: RunMetadata = Field(default_factory=dict, description="Additional metadata for the resource")
    pinned: Flag = Field(
        False,
        description="Kept until deleted; otherwise the resource expires after the deployment's retention",
    )


class ResourceCreate(ResourceFields):
    content: str | None = Field(
        None,
        pattern=r"^[Dd][Aa][Tt][Aa]:",
        description="The file to upload. This can be provided instead of `uri`. It should be a "
        "base64-encoded string of the format `data:<MIME_TYPE>;base64,<BASE64_ENCODED_CONTENT>`.",
    )
    uri: OutboundUrl | None = Field(
        None,
        validate_default=True,
        description="The URI of the file to upload. This can be provided instead of `content`: it is "
        "fetched once, when the resource is created (https; no redirects followed)",
    )

    @field_validator("content")
    @classmethod
    def _data_uri(cls, content: str | None) -> str | None:
        if content is not None and content[:5].lower() != "data:":
            raise ValueError("must be a data URI: data:<MIME type>;base64,<base64 data>")
        return content

    @field_validator("uri")
    @classmethod
    def _one_source(cls, uri: str | None, info: ValidationInfo) -> str | None:
        if "content" not in info.data:  # content was invalid: that error says enough
            return uri
        if (info.data["content"] is None) == (uri is None):
            raise ValueError("give either content (a data: URI) or uri, not both or neither")
        return uri


RESOURCE_FORMS = ("reference", "create")  # the forms of a run's resource, as validation errors name them


def _resource_kind(value: Any) -> str:
    """Which form of a run's resource `value` is: a reference has an `id`, anything else is a creation."""
    if isinstance(value, ResourceReference) or (isinstance(value, dict) and "id" in value):
        return "reference"
    return "create"


class RunResource(Strict):
    name: str = Field(min_length=1, max_length=256, description="Name of the resource")
    resource: Annotated[
        Annotated[ResourceReference, Choice("reference")] | Annotated[ResourceCreate, Choice("create")],
        Discriminator(_resource_kind),
    ] = Field(
        description="Resource to use under the `name` key for the run: an existing one by `id`, or a full "
        "resource object, created with the run."
    )
    metadata: RunMetadata = Field(
        default_factory=dict, description="Merged over the resource's own metadata in what this run sees"
    )


class RunRequestFields(Strict):
    """The seed's run request body, plus `inputs` and `metadata`."""

    inputs: dict[str, Any] = Field(default_factory=dict)
    metadata: RunMetadata = Field(default_factory=dict)
    resources: list[RunResource] = Field(default_factory=list, max_length=100)
    timeout_seconds: Whole | None = Field(
        None, description="Seconds; null or < 1 means no timeout. Omitted: the runnable's default."
    )
    telemetry_strategy: TelemetryStrategy = "default"
    callback_url: OutboundUrl | None = None
    callback_headers: OutboundHeaders = None
    callback_events: Annotated[list[CallbackEvent], AfterValidator(_unique_events)] | None = Field(
        None,
        min_length=1,
        json_schema_extra={"uniqueItems": True},
        description="The events callback_url receives (default: completed only; needs a callback_url); "
        "each at most once every few seconds, the latest of its kind",
    )
    experiment_id: str | None = Field(None, min_length=1, max_length=200)
    experiment_candidate_id: str | None = Field(None, min_length=1, max_length=200)


class StartRunRequest(RunRequestFields):
    pass


class IntakeMessage(RunRequestFields):
    """An intake queue message: a run request plus who it is for."""

    account_id: AccountId
    runnable_id: UUID
    run_id: UUID | None = None
    idempotency_key: str | None = Field(None, min_length=1, max_length=255)


class RunReference(BaseModel):
    id: str


# --- runnables ---


RunnableKind = Literal["python", "http", "lambda", "bedrock"]


class RunnableFields(Strict):
    name: str = Field(min_length=1, max_length=200)
    kind: RunnableKind
    config: dict[str, Any] = Field(description="What the kind needs; see docs/runnables.md")
    input_schema: dict[str, Any] | None = Field(None, description="JSON Schema (2020-12) for `inputs`")
    output_schema: dict[str, Any] | None = Field(
        None, description="JSON Schema (2020-12) the outputs must match (bedrock: the structured answer)"
    )
    timeout_seconds: Whole | None = Field(None, description="Default for runs; null or < 1: no timeout")
    telemetry_strategy: TelemetryStrategy = "default"
    max_concurrency: json_number(int, ge=1, le=MAX_CONCURRENCY) | None = Field(
        None,
        description="Runs of this runnable executing at once (null: only the account's limit applies)",
    )
    tags: list[Annotated[str, StringConstraints(max_length=128)]] = Field(default_factory=list, max_length=50)
    retry_on_worker_lost: Flag = Field(
        True,
        description="A run whose worker died mid-run is executed again (at-least-once; ctx.attempt counts "
        "executions) when true, or fails with error code worker_lost (at-most-once) when false",
    )


class Runnable(RunnableFields):
    model_config = ConfigDict(extra="ignore")

    id: str
    account_id: str
    created_at: datetime
    updated_at: datetime


# --- run state (seed: RunState, RunResult, ModelUsage) ---


MAX_TOKENS = 10**12  # in one usage entry: more is a mistake, and would overflow the cost


class ModelUsage(BaseModel):
    provider: str = Field(max_length=200)
    model: str = Field(max_length=200)
    cached_tokens: int = Field(0, ge=0, le=MAX_TOKENS)
    prompt_tokens: int = Field(0, ge=0, le=MAX_TOKENS)
    completion_tokens: int = Field(0, ge=0, le=MAX_TOKENS)


class RunError(Shape):
    message: str
    code: str | None = None


class RunResult(Shape):
    id: str
    outputs: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    usage: list[ModelUsage] = Field(default_factory=list)
    error: RunError | None = None


class RunState(BaseModel):
    id: str
    account_id: str
    parent_run_id: str | None = None
    runnable_id: str | None = None
    telemetry_span_id: str | None = None
    experiment_id: str | None = None
    experiment_candidate_id: str | None = None
    status: Status
    state: dict[str, Any] | None = None
    created_by: str | None = None
    created_at: datetime
    completed_at: datetime | None = None
    total_input_tokens: int | None = None
    total_cached_tokens: int | None = None
    total_output_tokens: int | None = None
    total_token_cost_usd: float | None = None
    failed_at: datetime | None = None
    result: RunResult | None = None
    metadata: dict[str, Any] | None = None
    # for the dialects that serve them; never part of the re-factor RunState
    inputs: dict[str, Any] | None = Field(None, exclude=True)
    started_at: datetime | None = Field(None, exclude=True)
    last_line: str | None = Field(None, exclude=True)  # the latest log line, cut short
    waiting_for: dict[str, Any] | None = Field(None, exclude=True)  # as the run item holds it


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class RunQuery(BaseModel):
    """Which runs a listing returns: all filters apply together; `created_before` is exclusive."""

    statuses: frozenset[Status] = frozenset()  # any of these; empty: any status
    runnable_id: str | None = None
    parent_run_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


class UsageTotals(BaseModel):
    """Token usage and cost summed over runs (or days). Cost counts priced usage only: `unpriced_usage`
    says how many usage entries named a model without a price."""

    total_input_tokens: int = 0
    total_output_tokens: int = 0
    total_cached_tokens: int = 0
    total_token_cost_usd: float = 0.0
    unpriced_usage: int = 0


class RunPage(Page[RunState]):
    totals: UsageTotals = Field(description="Sums over the runs of this page")


class ResourceUsage(BaseModel):
    """Resources created (`POST /v1/resources`, uploads, and inline with runs) and their bytes."""

    resources_created: int = 0
    resource_bytes_created: int = 0


class DayUsage(ResourceUsage, UsageTotals):
    date: date


class AccountUsage(ResourceUsage, UsageTotals):
    """The account's usage from `start` to `end` (UTC days, inclusive), as recorded when runs end."""

    account_id: str
    start: date
    end: date
    days: list[DayUsage] = Field(description="Days with usage, oldest first")


class ErrorBody(Shape):
    error: str
    code: str
    issues: list[dict[str, str]] = Field(default_factory=list)
    missingPerms: list[str] | None = Field(None, description="403: the permissions the key lacks")


# --- the stored run: RunState plus what the service needs and never serves ---


class Outcome(BaseModel):
    """How an execution ended, as the worker records it."""

    status: Status
    outputs: dict[str, Any] | None = None
    usage: list[ModelUsage] = Field(default_factory=list)
    cost_usd: float | None = None  # null when a model had no price
    usage_costs: list[float | None] = Field(default_factory=list)  # per usage entry (null: no price)
    error: RunError | None = None
    metadata: dict[str, Any] | None = None  # what the runnable added to result.metadata
    duration_seconds: float | None = None
    telemetry_span_id: str | None = None

    def document(self) -> str:
        """The outcome as it is stored: JSON without the fields that hold their defaults."""
        return self.model_dump_json(exclude_none=True, exclude_defaults=True)


class RunRecord(BaseModel):
    account_id: str
    id: str
    runnable_id: str
    runnable: dict[str, Any]  # snapshot of kind/config/name taken when the run was accepted
    status: Status
    created_at: datetime
    created_by: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    failed_at: datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    parent_run_id: str | None = None
    child_runs: int = 0  # how many child runs it may have started (their ids follow from its own)
    experiment_id: str | None = None
    experiment_candidate_id: str | None = None
    traced: bool = False  # the resolved telemetry_strategy
    timeout_seconds: int | None = None
    callback_url: str | None = None
    callback_headers: dict[str, str] | None = None
    callback_events: list[str] | None = None  # None: completed only
    # request payload ({"inputs", "resources"}) and outcome: inline JSON, or a blob key when large
    payload_json: str | None = None
    payload_ref: str | None = None
    outcome_json: str | None = None
    outcome_ref: str | None = None
    attempt: int = 0
    lease_owner: str | None = None
    lease_until: float | None = None
    ended_by: str | None = None  # who wrote the terminal state: tells a writer whose answer was lost
    rejected: bool = False  # an intake message's rejection, kept where the producer polls: a fixed
    # message with the same run id replaces it
    cancel_requested: bool = False
    dispatches: int = 0
    due_at: float | None = None
    # concurrency: the slots the run holds ("{scope}|{index}"), the scope whose queue it waits in, and
    # how often these changed (each change is conditional on the count it read)
    slots: list[str] = Field(default_factory=list)
    queued_on: str | None = None
    admissions: int = 0
    waiting_for: dict[str, Any] | None = None  # the limit of the scope it is queued on (WaitingFor)
    # progress: the last event's seq, the status events (RunEvent JSON; the rest are in the events
    # table), what the runnable reported and when it last did, the log bytes stored
    seq: int = 0
    history: list[dict[str, Any]] = Field(default_factory=list)
    state: dict[str, Any] | None = None
    partial_outputs: dict[str, Any] | None = None
    progress_at: float | None = None
    log_bytes: int = 0
    last_line: str | None = None
    # an asynchronous agent's run (domain/agents.py): the attempt's run token (hashed), when the run's
    # time is up, what the agent's reports added up to (Reported), whether the agent was told to cancel
    token_hash: str | None = None
    deadline_at: float | None = None
    reported: dict[str, Any] | None = None
    last_report: str | None = None  # the digest of the report recorded last
    cancel_notified: bool = False
    callback_unsent: bool = False  # ended without its callback enqueued (the sweeper sends it)
    expires_at: int | None = None

    def calls_back(self, event: CallbackEvent) -> bool:
        """The run asked for a callback on `event` (by default, on its end only)."""
        return bool(self.callback_url) and event in (self.callback_events or ("completed",))

    @property
    def event_callbacks(self) -> set[str]:
        """The events other than its end the run is called back for."""
        return set(self.callback_events or ()) - {"completed"} if self.callback_url else set()


def to_run_state(
    record: RunRecord, outcome: Outcome | None, inputs: dict[str, Any] | None = None
) -> RunState:
    """The served view of a run: exactly the seed's RunState, nothing internal."""
    result = None
    totals: dict[str, Any] = {}
    if outcome is not None:
        result = RunResult(
            id=record.id,
            outputs=outcome.outputs,
            metadata={
                **(outcome.metadata or {}),
                "attempts": record.attempt,
                "duration_seconds": outcome.duration_seconds,
            },
            usage=outcome.usage,
            error=outcome.error,
        )
        totals = {
            "total_input_tokens": sum(u.prompt_tokens for u in outcome.usage),
            "total_cached_tokens": sum(u.cached_tokens for u in outcome.usage),
            "total_output_tokens": sum(u.completion_tokens for u in outcome.usage),
            "total_token_cost_usd": outcome.cost_usd,
        }
    elif record.partial_outputs is not None:  # partially populated while the run goes on
        result = RunResult(id=record.id, outputs=record.partial_outputs)
    return RunState(
        id=record.id,
        account_id=record.account_id,
        runnable_id=record.runnable_id,
        parent_run_id=record.parent_run_id,
        experiment_id=record.experiment_id,
        experiment_candidate_id=record.experiment_candidate_id,
        telemetry_span_id=outcome.telemetry_span_id if outcome else None,
        status=record.status,
        state=served_state(record),
        created_by=record.created_by,
        created_at=record.created_at,
        completed_at=record.completed_at,
        failed_at=record.failed_at,
        started_at=record.started_at,
        last_line=record.last_line,
        waiting_for=record.waiting_for if record.status is Status.waiting else None,
        result=result,
        metadata=record.metadata,
        inputs=inputs,
        **totals,
    )


def served_state(record: RunRecord) -> dict[str, Any] | None:
    """The run's `state`: what its runnable last set, or while it waits for a slot, which limit holds it."""
    if record.status is Status.waiting and record.waiting_for is not None:
        return {"waiting_for": record.waiting_for}
    return record.state
