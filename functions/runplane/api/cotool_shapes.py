"""Cotool's shapes and the mappers between them and the core's models. No I/O.

An agent is a runnable and an organization is an account (`organizationId`: its organization id).
Attachments name resources (`fileId` is a resource id) the runnable sees under that id; the result's
`structuredOutputResult` is the run's outputs.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from runplane.api.common import parsed
from runplane.domain.errors import InvalidRequest, Issue
from runplane.domain.models import (
    ErrorBody,
    ResourceReference,
    Runnable,
    RunResource,
    RunState,
    Shape,
    StartRunRequest,
    Strict,
)
from runplane.domain.states import Status

RunStatusName = Literal["running", "waiting", "done", "error", "interrupted"]
STATUSES: dict[Status, RunStatusName] = {
    Status.waiting: "waiting",
    Status.running: "running",
    Status.completed: "done",
    Status.failed: "error",
    Status.timeout: "error",
    Status.cancelled: "interrupted",
}
_STATUS_MESSAGES = {
    Status.waiting: "Waiting for a worker",
    Status.running: "Running",
    Status.completed: "Completed",
    Status.failed: "Failed",
    Status.timeout: "Timed out",
    Status.cancelled: "Cancelled",
}


FileType = Literal["image", "pdf", "spreadsheet", "document", "presentation", "file"]


class Attachment(Strict):
    """Optional fields may be left out but not sent as null (Cotool's schema has no nulls)."""

    fileId: str = Field(min_length=1, max_length=256, description="Unique identifier of the uploaded file")
    fileName: str = Field(min_length=1, max_length=1024, description="Name of the file")
    size: float = Field(ge=0, strict=True, allow_inf_nan=False, description="Size of the file in bytes")
    fileType: FileType = Field(None, description="Semantic file type")
    previewText: str = Field(None, description="Optional text preview for text-like files")


class AgentRunRequest(BaseModel):
    """Unknown top-level keys are ignored, as Cotool does; attachment items are strict."""

    model_config = ConfigDict(extra="ignore")

    inputs: dict[str, Any] = Field(description="Input values for the agent run")
    attachments: list[Attachment] = Field(
        default_factory=list,
        max_length=100,
        json_schema_extra={"uniqueItems": True},
        description="Files for the run; each `fileId` at most once",
    )

    @model_validator(mode="after")
    def _distinct_files(self) -> AgentRunRequest:
        file_ids = [attachment.fileId for attachment in self.attachments]
        if len(set(file_ids)) < len(file_ids):
            raise ValueError("attachments must have distinct fileId values")
        return self


class AgentRunStarted(Shape):
    runId: str


class AgentRunStatus(Shape):
    status: RunStatusName
    statusMessage: str
    isStreaming: bool = Field(description="Whether the run is still in progress")
    error: str | None = Field(None, description="Why the run failed, when it did")


class AgentRunPending(AgentRunStatus):
    """run-sync's answer when the run outlasts the wait."""

    runId: str


class ToolCall(Shape):
    type: Literal["tool-call"] = "tool-call"
    toolCallId: str
    toolName: str
    args: Any = None


class ToolResult(Shape):
    type: Literal["tool-result"] = "tool-result"
    toolCallId: str
    toolName: str
    result: Any = None
    isError: bool = False


class Message(Shape):
    role: str
    content: str


class AgentRunResult(Shape):
    finalAssistantMessage: str
    allToolCallsMade: list[ToolCall]
    allToolResultsReceived: list[ToolResult]
    messages: list[Message]
    structuredOutputResult: dict[str, Any] | None = Field(None, description="The run's outputs")


class AgentInput(Shape):
    name: str
    description: str | None = None
    required: bool


class Agent(Shape):
    id: str
    organizationId: str
    name: str
    description: str | None = None
    createdAt: str
    updatedAt: str
    toolNames: list[str] = Field(default_factory=list)
    inputs: list[AgentInput]
    structuredOutputSchema: dict[str, Any] | None = None
    tags: list[str]


# --- requests ---


def run_request(body: AgentRunRequest) -> StartRunRequest:
    """Each attachment names a resource by its `fileId` (one made by `POST /v1/resources` or an upload): the
    run sees it under that id, with the attachment's other fields over the resource's metadata."""
    resources = []
    for i, item in enumerate(body.attachments):
        try:
            reference = ResourceReference(id=item.fileId)
        except ValidationError:
            raise InvalidRequest(
                f"No file {item.fileId!r}: upload it as a resource first",
                "resource_not_found",
                [Issue(f"body.attachments.{i}.fileId", "no such file")],
            ) from None
        metadata = item.model_dump(exclude_none=True, exclude={"fileId"})
        resources.append(RunResource(name=item.fileId, resource=reference, metadata=metadata))
    return parsed(StartRunRequest, inputs=body.inputs, resources=resources)


# --- answers ---


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def run_status(state: RunState) -> AgentRunStatus:
    error = state.result.error.message if state.result and state.result.error else None
    return AgentRunStatus(
        status=STATUSES[state.status],
        statusMessage=error if error and state.status is not Status.cancelled else _status_message(state),
        isStreaming=not state.status.terminal,
        error=error if state.status in (Status.failed, Status.timeout) else None,
    )


def _status_message(state: RunState) -> str:
    """A running run's latest log line; a waiting run's limit, when one holds it; else the status."""
    if state.status is Status.running and state.last_line:
        return state.last_line
    if waiting := state.waiting_for:
        return f"Waiting for a slot: the {waiting['scope']} runs {waiting['limit']} at once"
    return _STATUS_MESSAGES[state.status]


def run_pending(state: RunState) -> AgentRunPending:
    return AgentRunPending(runId=state.id, **run_status(state).model_dump())


def final_message(outputs: dict[str, Any]) -> str:
    """The outputs' `text` when it is a string, else their only value when it is one, else their JSON."""
    if isinstance(outputs.get("text"), str):
        return outputs["text"]
    if len(outputs) == 1 and isinstance(only := next(iter(outputs.values())), str):
        return only
    return _compact(outputs)


def run_result(state: RunState, inputs: dict[str, Any]) -> AgentRunResult:
    """The run's outputs as the agent's answer; the conversation is the inputs (as JSON) and the answer."""
    outputs = (state.result.outputs if state.result else None) or {}
    answer = final_message(outputs)
    return AgentRunResult(
        finalAssistantMessage=answer,
        allToolCallsMade=[],
        allToolResultsReceived=[],
        messages=[
            Message(role="user", content=_compact(inputs)),
            Message(role="assistant", content=answer),
        ],
        structuredOutputResult=outputs,
    )


def agent(runnable: Runnable, organization_id: str) -> Agent:
    schema = runnable.input_schema or {}
    required = set(schema.get("required", []))
    return Agent(
        id=runnable.id,
        organizationId=organization_id,
        name=runnable.name,
        createdAt=runnable.created_at.isoformat(),
        updatedAt=runnable.updated_at.isoformat(),
        inputs=[
            AgentInput(name=name, description=spec.get("description"), required=name in required)
            for name, spec in (schema.get("properties") or {}).items()
            if isinstance(spec, dict)
        ],
        structuredOutputSchema=runnable.output_schema,
        tags=runnable.tags,
    )


# Cotool's words for what the core calls a runnable
_RESOURCE_ID = re.compile(r"^body\.resources\.(\d+)\.resource\.id$")
_TEXT_BY_CODE = {"runnable_not_found": "Agent not found", "run_not_found": "Run not found"}


def error_body(status: int, error: ErrorBody, started: list[str]) -> ErrorBody:
    """`ValidationError {error, issues}`, `Error {error}`, `PermissionError {error, missingPerms}`:
    the core's error body already has that shape; only the vocabulary changes (a run's resource is an
    attachment, its id the `fileId`)."""
    issues = [
        {**issue, "field": _RESOURCE_ID.sub(r"body.attachments.\1.fileId", issue.get("field", ""))}
        for issue in error.issues
    ]
    return error.model_copy(update={"error": _TEXT_BY_CODE.get(error.code, error.error), "issues": issues})
