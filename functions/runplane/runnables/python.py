"""Execute a registered python runnable in a forked child process.

The child can be killed, which is what makes `timeout_seconds` and cancellation of a running run real;
a crash in the runnable (even os._exit or a segfault) cannot take the worker down with it.
While the child works, the parent calls `on_heartbeat` every `heartbeat_seconds` to renew its lease.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Callable
from enum import Enum
from multiprocessing.connection import Connection
from typing import Any

from runplane.domain.models import ModelUsage, Outcome, RunError
from runplane.domain.states import ErrorCode, Status
from runplane.runnables.registry import RunContext, RunFailed, RunnableFunction


class Verdict(Enum):
    """What a heartbeat tells the executor."""

    go_on = "go_on"
    cancel = "cancel"  # the run's owner asked for cancellation
    lost = "lost"  # this worker no longer holds the run: stop, record nothing


def execute(
    function: RunnableFunction,
    inputs: dict[str, Any],
    context: RunContext,
    *,
    limit_seconds: float,
    limit_reason: str,
    heartbeat_seconds: float,
    on_heartbeat: Callable[[], Verdict],
) -> Outcome | None:
    """Run `function` under a time limit; None when the lease was lost and nothing may be recorded."""
    parent_end, child_end = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.get_context("fork").Process(
        target=_child, args=(child_end, function, inputs, context), daemon=True
    )
    started = time.monotonic()
    process.start()
    child_end.close()
    usage: list[dict[str, Any]] = []
    try:
        deadline = started + limit_seconds
        next_beat = started + heartbeat_seconds
        while True:
            now = time.monotonic()
            if now >= deadline:
                return _outcome(
                    Status.timeout,
                    started,
                    usage,
                    error=RunError(message=limit_reason, code=ErrorCode.timeout),
                )
            if now >= next_beat:
                verdict = on_heartbeat()
                next_beat = now + heartbeat_seconds
                if verdict is Verdict.lost:
                    return None
                if verdict is Verdict.cancel:
                    error = RunError(message="Run was cancelled on request", code=ErrorCode.cancelled)
                    return _outcome(Status.cancelled, started, usage, error=error)
            if not parent_end.poll(max(0.0, min(deadline, next_beat) - now)):
                continue
            try:
                kind, payload = parent_end.recv()
            except EOFError:
                process.join(1)
                error = RunError(
                    message=f"The runnable's process exited without a result (exit code {process.exitcode})",
                    code=ErrorCode.runnable_crashed,
                )
                return _outcome(Status.failed, started, usage, error=error)
            if kind == "usage":
                usage.append(payload)
            elif kind == "ok":
                return _outcome(Status.completed, started, usage, outputs=json.loads(payload))
            else:
                return _outcome(Status.failed, started, usage, error=RunError(**payload))
    finally:
        parent_end.close()
        if process.is_alive():
            process.kill()
        process.join(5)


def _outcome(status: Status, started: float, usage: list[dict[str, Any]], **fields: Any) -> Outcome:
    costs = [u["cost_usd"] for u in usage if u["cost_usd"] is not None]
    return Outcome(
        status=status,
        usage=[ModelUsage(**u["usage"]) for u in usage],
        cost_usd=sum(costs) if costs else None,
        duration_seconds=round(time.monotonic() - started, 3),
        **fields,
    )


class _InvalidOutput(Exception):
    pass


def _child(conn: Connection, function: RunnableFunction, inputs: dict[str, Any], context: RunContext) -> None:
    _die_with_parent()
    context.reporter = lambda usage: conn.send(("usage", usage))
    try:
        message: tuple[str, Any] = ("ok", _serialize(function(inputs, context)))
    except RunFailed as failure:
        message = ("error", {"message": failure.message, "code": failure.code})
    except _InvalidOutput as problem:
        message = ("error", {"message": str(problem), "code": ErrorCode.invalid_output})
    except Exception as problem:
        message = (
            "error",
            {"message": f"{type(problem).__name__}: {problem}", "code": ErrorCode.runnable_exception},
        )
    conn.send(message)
    conn.close()


def _serialize(outputs: object) -> str:
    if not isinstance(outputs, dict):
        raise _InvalidOutput(f"a runnable must return a dict of outputs, not {type(outputs).__name__}")
    try:
        return json.dumps(outputs, allow_nan=False)
    except (TypeError, ValueError) as problem:
        raise _InvalidOutput(f"outputs are not JSON: {problem}") from None


def _die_with_parent() -> None:
    """Linux: have the kernel kill this child if the worker dies, so no orphaned run keeps going."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
