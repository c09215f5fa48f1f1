"""What a remote runnable (an http agent, a Lambda function) reports about its run: one JSON object, the
same whether it is a whole answer, one line of a streamed answer, or (later) a POST of an async agent.

A report may carry any of these parts:
- `state`: merged into the run's `state` (top-level keys; a key set to null is removed), as ctx.set_state;
- `outputs` with `"partial": true`: merged into the run's partial outputs, as ctx.set_outputs;
- `logs`: log lines, each a string or `{"message", "fields"?, "level"?}`;
- `usage`: model usage, as ctx.record_usage; `metadata`: added to `result.metadata`;
and ends the run when it is final:
- `outputs` (without `"partial": true`): the run completes with them;
- `error` (`{"message", "code"?}`): the run fails with them (code `runnable_error` by default).
So `{"outputs": {...}, "usage"?: [...], "metadata"?: {...}}` is one final report. Unknown keys are ignored.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from runplane.domain.models import Flag, ModelUsage


class ReportLine(BaseModel):
    model_config = ConfigDict(extra="ignore")

    message: str
    fields: dict[str, Any] | None = None
    level: str | None = Field(None, max_length=20, description="Kept as the line's `fields.level`")


class ReportError(BaseModel):
    model_config = ConfigDict(extra="ignore")

    message: str = Field(min_length=1)
    code: str | None = Field(None, min_length=1, max_length=100)


class Report(BaseModel):
    model_config = ConfigDict(extra="ignore")

    state: dict[str, Any] | None = None
    outputs: dict[str, Any] | None = None
    partial: Flag = Field(False, description="`outputs` are partial: the run goes on")
    logs: list[str | ReportLine] = Field(default_factory=list)
    usage: list[ModelUsage] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)
    error: ReportError | None = None

    @model_validator(mode="after")
    def _one_end(self) -> Report:
        if self.error is not None and self.final_outputs is not None:
            raise ValueError("a report ends the run with outputs or with an error, not both")
        return self

    @property
    def final_outputs(self) -> dict[str, Any] | None:
        return None if self.partial else self.outputs

    @property
    def partial_outputs(self) -> dict[str, Any] | None:
        return self.outputs if self.partial else None

    @property
    def final(self) -> bool:
        return self.error is not None or self.final_outputs is not None

    def lines(self) -> list[tuple[str, dict[str, Any] | None]]:
        """Its log lines as (message, fields), a line's level among its fields."""
        found: list[tuple[str, dict[str, Any] | None]] = []
        for line in self.logs:
            if isinstance(line, str):
                found.append((line, None))
            else:
                level = {"level": line.level} if line.level is not None else {}
                found.append((line.message, {**(line.fields or {}), **level} or None))
        return found


class InvalidReport(ValueError):
    """Not a report; the message says where and why."""


def read_report(raw: bytes) -> Report:
    try:
        return Report.model_validate_json(raw)
    except ValidationError as problem:
        first = problem.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "report"
        raise InvalidReport(f"{where}: {first['msg']}") from None
