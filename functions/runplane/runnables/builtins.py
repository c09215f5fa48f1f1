"""Built-in runnables, always available: echo, sleep and fail."""

from __future__ import annotations

import time
from typing import Any

from runplane.runnables.context import RunContext, RunFailed
from runplane.runnables.registry import runnable


@runnable("echo")
def echo(inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Outputs are the inputs."""
    return dict(inputs)


@runnable("sleep")
def sleep(inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Sleeps `inputs.seconds` (default 1), or less when the run is cancelled meanwhile."""
    seconds = inputs.get("seconds", 1)
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
        raise RunFailed("inputs.seconds must be a non-negative number", "invalid_inputs")
    began = time.monotonic()
    while (left := seconds - (time.monotonic() - began)) > 0 and not ctx.cancelled:
        time.sleep(min(left, 0.05))
    return {"slept": round(time.monotonic() - began, 3)}


@runnable("fail")
def fail(inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Fails with `inputs.message` (and `inputs.code`, default runnable_error)."""
    raise RunFailed(
        str(inputs.get("message", "failed on request")), str(inputs.get("code", "runnable_error"))
    )
