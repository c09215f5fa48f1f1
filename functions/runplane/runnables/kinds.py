"""Runnable kinds: what a runnable's `config` says and how a run of it executes.

A kind is a module with
- `Config`: the pydantic model of the runnable's `config`, checked when the runnable is saved;
- `ISOLATED`: True to execute in a forked process the worker can kill (python code), False in a thread
  (kinds that wait on a remote service);
- `check(config, settings)`: what the model cannot check alone (raises InvalidRequest);
- `invoke(config, inputs, ctx)`: execute one run, returning its outputs or raising RunFailed, with usage
  recorded through `ctx.record_usage`;
- for kinds whose config may say `mode: async` (http, lambda), `hand_off(config, inputs, ctx, agent)`:
  send the run to its agent with the `agent` fields (report URL, run token), returning once it accepted,
  and `cancel(config, ctx)`: tell the agent the run is cancelled, if the kind can.
Adding a kind is adding its module here. Modules import their heavy dependencies when they execute.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from types import ModuleType
from typing import Any

from runplane.domain.errors import InvalidRequest, Issue
from runplane.domain.reports import InvalidReport, Report, read_report
from runplane.domain.states import ErrorCode
from runplane.runnables.context import RunContext, RunFailed

KINDS = {
    "python": "runplane.runnables.python",
    "http": "runplane.runnables.http",
    "lambda": "runplane.runnables.lambda_",
    "bedrock": "runplane.runnables.bedrock",
}


def kind(name: str) -> ModuleType:
    return importlib.import_module(KINDS[name])


def require_allowed(value: str, patterns: list[str], field: str, what: str) -> None:
    """400 unless `value` matches one of the deployment's shell-style `patterns` for `what`."""
    if not any(fnmatchcase(value, allowed) for allowed in patterns):
        raise InvalidRequest(
            f"this deployment may not invoke that {what}",
            f"{what}_not_allowed",
            [Issue(f"body.config.{field}", f"allowed on this deployment: {', '.join(patterns) or 'none'}")],
        )


# --- what http and lambda runnables are sent and answer ---


def envelope(inputs: dict[str, Any], ctx: RunContext, **agent: Any) -> bytes:
    """The request a remote runnable receives: the run's inputs and what it needs to know about the run
    (an async agent, where and how to report: `agent`)."""
    document = {
        "run_id": ctx.run_id,
        "runnable_id": ctx.runnable_id,
        "attempt": ctx.attempt,
        "inputs": inputs,
        "resources": {name: resource.described() for name, resource in ctx.resources.items()},
        "metadata": ctx.metadata,
        "deadline": datetime.fromtimestamp(ctx.deadline, UTC).isoformat().replace("+00:00", "Z"),
        **agent,
    }
    return json.dumps(document, separators=(",", ":")).encode()


def accept_report(body: bytes, ctx: RunContext, source: str) -> dict[str, Any]:
    """Apply a remote runnable's whole answer, which must be one final report, and return its outputs."""
    try:
        report = read_report(body)
    except InvalidReport as problem:
        raise RunFailed(
            f"{source} answered with an invalid reply ({problem}): {snippet(body)}", ErrorCode.invalid_reply
        ) from None
    outputs = apply_report(report, ctx)
    if outputs is None:
        raise RunFailed(
            f"{source} answered with a report that is not final (no outputs, no error): {snippet(body)}",
            ErrorCode.invalid_reply,
        )
    return outputs


class ReportStream:
    """A streamed answer, one report per line (NDJSON), each applied as it arrives: call it with each line
    until it returns True (the final report came), then take `result()`. Blank lines are skipped; a line
    that is not a report is logged and skipped, the run goes on."""

    def __init__(self, ctx: RunContext, source: str):
        self.ctx = ctx
        self.source = source
        self.count = 0
        self.end: dict[str, Any] | RunFailed | None = None

    def __call__(self, line: bytes) -> bool:
        self.count += 1
        if not line.strip():
            return False
        try:
            report = read_report(line)
        except InvalidReport as problem:
            self.ctx.log(
                f"{self.source}: line {self.count} ignored, not a report ({problem}): {snippet(line)}"
            )
            return False
        try:
            self.end = apply_report(report, self.ctx)
        except RunFailed as failure:
            self.end = failure
        return self.end is not None

    def result(self) -> dict[str, Any]:
        if isinstance(self.end, RunFailed):
            raise self.end
        if self.end is None:
            raise RunFailed(
                f"{self.source} ended its stream after {self.count} lines without a final report",
                ErrorCode.invalid_reply,
            )
        return self.end


def apply_report(report: Report, ctx: RunContext, *, strict: bool = False) -> dict[str, Any] | None:
    """Pass a report on to the run: its log lines (stream `agent`), state, partial outputs, usage and
    metadata; then, when it is final, return its outputs or raise RunFailed with its error. None for a
    progress report. A part the run cannot keep (too large, nested too deep) is left out with a `log` line
    saying why, or with `strict` refused (InvalidRequest naming it) before anything is passed on."""
    parts: list[tuple[str, str, Callable[[dict[str, Any]], None], dict[str, Any] | None]] = [
        ("state", "state", ctx.set_state, report.state),
        ("partial outputs", "outputs", ctx.set_outputs, report.partial_outputs),
        ("metadata", "metadata", lambda fields: ctx.add_metadata(**fields), report.metadata),
    ]
    if strict:
        for name, field, _, values in parts:
            if problem := unkeepable(ctx, field, values):
                raise InvalidRequest(
                    f"the report's {name} cannot be kept: {problem}",
                    "invalid_report",
                    [Issue(f"body.{field}", problem)],
                )
    for message, fields in report.lines():
        ctx.log_line("agent", message, fields)
    for name, _, keep, values in parts:
        if not values:
            continue
        try:
            keep(values)
        except ValueError as problem:
            ctx.log(f"a report's {name} was dropped: {problem}")
    for usage in report.usage:
        ctx.record_usage(**usage.model_dump())
    if report.error is not None:
        raise RunFailed(report.error.message, report.error.code or ErrorCode.runnable_error)
    return report.final_outputs


def unkeepable(ctx: RunContext, field: str, values: dict[str, Any] | None) -> str | None:
    """Why a report's `field` could not be kept by the run (as it is now), or None."""
    if not values:
        return None
    trial = replace(ctx, state=dict(ctx.state), partial_outputs=dict(ctx.partial_outputs), send=None)
    keep = {"state": trial.set_state, "outputs": trial.set_outputs}.get(
        field, lambda v: trial.add_metadata(**v)
    )
    try:
        keep(values)
    except ValueError as problem:
        return str(problem)
    return None


def snippet(body: bytes, limit: int = 300) -> str:
    text = body[:limit].decode("utf-8", "replace")
    return text + ("…" if len(body) > limit else "")
