"""Where remote runnables execute: Lambda functions and Bedrock models."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from runplane.adapters import aws
from runplane.definitions import WORKER_TIMEOUT_SECONDS


def lambda_client() -> Any:
    """Never retries: an invocation that failed on the way back may have run."""
    return aws.client("lambda", read_timeout=WORKER_TIMEOUT_SECONDS, max_attempts=1)


def bedrock_client() -> Any:
    """Retries throttling and service errors: a failed model call did nothing."""
    return aws.client("bedrock-runtime", read_timeout=WORKER_TIMEOUT_SECONDS)


@dataclass(frozen=True)
class Invocation:
    function_error: str | None  # Lambda's FunctionError: the answer is the error it raised
    answer: bytes
    log_tail: str  # the last 4 KB of the function's log (its first line may be cut)


def invoke_function(function_arn: str, payload: bytes) -> Invocation:
    """Invoke synchronously, with the tail of its log. The worker stops waiting at the run's deadline;
    the function itself runs until its own timeout."""
    response = lambda_client().invoke(
        FunctionName=function_arn, InvocationType="RequestResponse", LogType="Tail", Payload=payload
    )
    log_tail = base64.b64decode(response.get("LogResult", "")).decode("utf-8", "replace")
    return Invocation(response.get("FunctionError"), response["Payload"].read(), log_tail)


def invoke_event(function_arn: str, payload: bytes) -> None:
    """Invoke asynchronously: Lambda queues the event (answering 202) and the function runs later."""
    lambda_client().invoke(FunctionName=function_arn, InvocationType="Event", Payload=payload)


def converse(request: dict[str, Any]) -> dict[str, Any]:
    return bedrock_client().converse(**request)
