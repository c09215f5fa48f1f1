"""The run lifecycle: statuses and the only moves allowed between them."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    waiting = "waiting"
    running = "running"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"
    timeout = "timeout"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.completed, Status.failed, Status.cancelled, Status.timeout})

MOVES: dict[Status, frozenset[Status]] = {
    Status.waiting: frozenset({Status.running, Status.cancelled, Status.failed}),
    Status.running: frozenset({Status.completed, Status.failed, Status.timeout, Status.cancelled}),
}


class IllegalMove(ValueError):
    pass


def check_move(current: Status, target: Status) -> None:
    """Raise IllegalMove unless `current -> target` is a lifecycle move. Terminal states have none."""
    if target not in MOVES.get(current, frozenset()):
        raise IllegalMove(f"a run cannot move from {current} to {target}")


class ErrorCode(StrEnum):
    """`result.error.code` values Runplane itself sets (runnables may set their own)."""

    runnable_error = "runnable_error"  # the runnable raised RunFailed
    runnable_exception = "runnable_exception"  # the runnable raised any other exception
    runnable_crashed = "runnable_crashed"  # the runnable's process died without an answer
    invalid_output = "invalid_output"  # outputs were not a JSON object
    timeout = "timeout"  # timeout_seconds (or the platform maximum) elapsed
    cancelled = "cancelled"
    heartbeat_timeout = "heartbeat_timeout"  # an async agent sent no report for its heartbeat_seconds
    worker_lost = "worker_lost"  # the worker stopped renewing its lease RUNPLANE_MAX_ATTEMPTS times
    dispatch_failed = "dispatch_failed"  # the dispatch message was dead-lettered
    runnable_unavailable = "runnable_unavailable"  # the function is not registered in the worker
    invalid_config = "invalid_config"  # the runnable's stored config no longer suits its kind
    invalid_inputs = "invalid_inputs"  # inputs lack what the runnable needs (checked again when it runs)
    invalid_reply = "invalid_reply"  # an http/lambda runnable gave no valid final report (domain/reports.py)
    http_error = "http_error"  # an http runnable could not be reached, or answered a non-2xx status
    lambda_error = "lambda_error"  # Lambda refused or failed the invocation
    function_error = "function_error"  # the Lambda function raised (message: "errorType: errorMessage")
    bedrock_error = "bedrock_error"  # Bedrock refused or failed the call
    resource_missing = "resource_missing"  # a resource of the run was deleted before it was read
    child_runs_unavailable = "child_runs_unavailable"  # ctx.run called outside a worker
    unstorable_outcome = "unstorable_outcome"  # DynamoDB refused the outcome (a request no retry cures)
