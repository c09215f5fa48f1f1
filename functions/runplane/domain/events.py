"""What a run reports while it goes on: its events (status changes with their reason, state updates,
partial outputs, log batches), log lines, and the limits that keep them cheap. Plain pydantic, no I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from runplane.domain.models import CallbackEvent, RunError, RunRecord, utcnow
from runplane.domain.states import Status

MAX_STATE_BYTES = 16 * 1024  # a run's `state`, as JSON
MAX_PARTIAL_OUTPUTS_BYTES = 32 * 1024  # its partial `result.outputs` while it runs, as JSON
MAX_LINE_CHARS = 8 * 1024  # one log line's message; longer ones are cut with a marker
MAX_BATCH_BYTES = 64 * 1024  # log lines one stored batch holds
FLUSH_SECONDS = 1.0  # progress is written at most once per second per run
GAP_GRACE_SECONDS = 30.0  # a numbered event not stored by then, nor followed by a stored batch, is lost
LAST_LINE_CHARS = 200  # the latest log line kept with the run (Cotool's statusMessage)


class EventType(StrEnum):
    status = "status"  # the run's status changed, or a cancellation was asked for
    state = "state"  # `state` changed: the event holds all of it
    output = "output"  # partial outputs changed: the event holds all of them
    logs = "logs"  # log lines were written: the event holds them


class Reason(StrEnum):
    """Why a status event happened."""

    accepted = "accepted"  # the run was stored (waiting)
    queued = "queued"  # it waits for a concurrency slot (`waiting_for` says which)
    claimed = "claimed"  # a worker started it (running; `attempt` counts from 1)
    retried = "retried"  # a worker started it again after the previous one was lost
    handed_off = "handed_off"  # an asynchronous agent accepted it: the agent reports from now on
    cancel_requested = "cancel_requested"  # it will end cancelled shortly
    ended = "ended"  # it reached a terminal status


Stream = Literal["stdout", "stderr", "log", "agent", "lambda"]


class LogLine(BaseModel):
    at: datetime
    stream: Stream = Field(
        description="stdout/stderr: what the code printed; log: ctx.log (and Runplane's notes on an agent's "
        "reports); agent: the log lines an http or lambda runnable reported; lambda: the last 4 KB of a "
        "Lambda function's own log, once it returned"
    )
    message: str
    fields: dict[str, Any] | None = None


class WaitingFor(BaseModel):
    """What a waiting run waits for: a free slot under a concurrency limit."""

    scope: Literal["account", "runnable"]
    limit: int = Field(description="The scope's max_concurrency")


class RunEvent(BaseModel):
    seq: int = Field(description="Increases with every event of the run; resume with after=<seq>")
    type: EventType
    at: datetime
    status: Status = Field(description="The run's status after the event")
    reason: Reason | None = Field(None, description="Status events: why")
    attempt: int | None = Field(None, description="Status events: the attempt it concerns")
    waiting_for: WaitingFor | None = Field(None, description="queued events: the limit it waits for")
    error: RunError | None = Field(None, description="ended events: why the run did not complete")
    state: dict[str, Any] | None = Field(None, description="state events: the whole state")
    outputs: dict[str, Any] | None = Field(None, description="output events: all partial outputs")
    lines: list[LogLine] | None = Field(None, description="logs events: the lines, oldest first")


class EventPage(BaseModel):
    events: list[RunEvent]
    last_seq: int = Field(description="The seq to pass as `after` next (the last event's, or `after`)")
    status: Status = Field(description="The run's status when the page was read")
    done: bool = Field(description="The run has ended and no events follow: stop reading")


class LogPage(BaseModel):
    lines: list[LogLine]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the lines that follow")
    truncated: bool = Field(False, description="The run's log reached its size limit: later lines are lost")


def callback_event(event: RunEvent) -> CallbackEvent | None:
    """The callback event a run event is, if any."""
    if event.type is EventType.status:
        if event.reason is Reason.ended:
            return "completed"
        return "start" if event.reason in (Reason.claimed, Reason.retried) else None
    return {EventType.state: "state", EventType.output: "output", EventType.logs: "logs"}[event.type]


def cut(message: str) -> str:
    if len(message) <= MAX_LINE_CHARS:
        return message
    return message[:MAX_LINE_CHARS] + f" [... {len(message) - MAX_LINE_CHARS} characters cut]"


def status_event(record: RunRecord, reason: Reason, status: Status | None = None, **fields: Any) -> RunEvent:
    """The status event that follows the run's last one; `status` is the run's after it (default: as is)."""
    return RunEvent(
        seq=record.seq + 1,
        type=EventType.status,
        at=utcnow(),
        status=status or record.status,
        reason=reason,
        **fields,
    )


def recorded(record: RunRecord, event: RunEvent) -> dict[str, Any]:
    """The fields of `record` once a status event is recorded (for a record a write makes unread)."""
    return {"seq": event.seq, "history": [*record.history, event.model_dump(mode="json", exclude_none=True)]}


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


@dataclass
class Progress:
    """What a runnable reported since its worker last wrote: recorded by the write that renews its lease
    (the run's `state`, partial outputs, log size and last line), its events stored as one batch."""

    at: float  # epoch seconds
    state: dict[str, Any] | None = None  # all of it, when it changed
    outputs: dict[str, Any] | None = None  # all partial outputs, when they changed
    lines: list[LogLine] = field(default_factory=list)
    log_bytes: int = 0  # the run's log size with these lines

    @property
    def events(self) -> int:
        return (self.state is not None) + (self.outputs is not None) + bool(self.lines)

    def fields(self) -> dict[str, Any]:
        """The run item's attributes it sets."""
        values: dict[str, Any] = {"progress_at": self.at}
        if self.state is not None:
            values["state"] = compact(self.state)
        if self.outputs is not None:
            values["partial_outputs"] = compact(self.outputs)
        if self.lines:
            values["log_bytes"] = self.log_bytes
            values["last_line"] = self.lines[-1].message[:LAST_LINE_CHARS]
        return values

    def numbered(self, after: int) -> list[RunEvent]:
        """Its events, taking the seqs that follow `after`."""
        at = datetime.fromtimestamp(self.at, UTC)
        parts: list[dict[str, Any]] = []
        if self.state is not None:
            parts.append({"type": EventType.state, "state": self.state})
        if self.outputs is not None:
            parts.append({"type": EventType.output, "outputs": self.outputs})
        if self.lines:
            parts.append({"type": EventType.logs, "lines": self.lines})
        return [
            RunEvent(seq=after + i, at=at, status=Status.running, **part) for i, part in enumerate(parts, 1)
        ]
