"""Runnable kinds: what a runnable's `config` says and how a run of it executes.

A kind is a module with
- `Config`: the pydantic model of the runnable's `config`, checked when the runnable is saved;
- `ISOLATED`: True to execute in a forked process the worker can kill (python code), False in a thread
  (kinds that wait on a remote service);
- `check(config, settings)`: what the model cannot check alone (raises InvalidRequest);
- `invoke(config, inputs, ctx)`: execute one run, returning its outputs or raising RunFailed, with usage
  recorded through `ctx.record_usage`.
Adding a kind is adding its module here. Modules import their heavy dependencies when they execute.
"""

from __future__ import annotations

import importlib
import json
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runplane.domain.errors import InvalidRequest, Issue
from runplane.domain.models import ModelUsage
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


def envelope(inputs: dict[str, Any], ctx: RunContext) -> bytes:
    """The request a remote runnable receives: the run's inputs and what it needs to know about the run."""
    document = {
        "run_id": ctx.run_id,
        "runnable_id": ctx.runnable_id,
        "attempt": ctx.attempt,
        "inputs": inputs,
        "resources": ctx.resources,
        "metadata": ctx.metadata,
        "deadline": datetime.fromtimestamp(ctx.deadline, UTC).isoformat().replace("+00:00", "Z"),
    }
    return json.dumps(document, separators=(",", ":")).encode()


class AgentReply(BaseModel):
    model_config = ConfigDict(extra="ignore")

    outputs: dict[str, Any]
    usage: list[ModelUsage] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


def accept_reply(body: bytes, ctx: RunContext, source: str) -> dict[str, Any]:
    """Record a remote runnable's `{outputs, usage?, metadata?}` answer and return its outputs."""
    try:
        reply = AgentReply.model_validate_json(body)
    except ValidationError as problem:
        first = problem.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise RunFailed(
            f"{source} answered with an invalid reply ({where}: {first['msg']}): {snippet(body)}",
            ErrorCode.invalid_reply,
        ) from None
    for usage in reply.usage:
        ctx.record_usage(**usage.model_dump())
    if reply.metadata:
        ctx.add_metadata(**reply.metadata)
    return reply.outputs


def snippet(body: bytes, limit: int = 300) -> str:
    text = body[:limit].decode("utf-8", "replace")
    return text + ("…" if len(body) > limit else "")
