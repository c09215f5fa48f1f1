"""Where remote runnables execute: Lambda functions and Bedrock models."""

from __future__ import annotations

from typing import Any

from runplane.adapters import aws
from runplane.definitions import WORKER_TIMEOUT_SECONDS


def invoke_function(function_arn: str, payload: bytes) -> tuple[str | None, bytes]:
    """Invoke synchronously: (FunctionError or None, the answer). Never retried: the function may have
    run. The worker stops waiting at the run's deadline; the function runs until its own timeout."""
    response = aws.client("lambda", read_timeout=WORKER_TIMEOUT_SECONDS, max_attempts=1).invoke(
        FunctionName=function_arn, InvocationType="RequestResponse", Payload=payload
    )
    return response.get("FunctionError"), response["Payload"].read()


def converse(request: dict[str, Any]) -> dict[str, Any]:
    """One Bedrock Converse call (retried on throttling and service errors: nothing ran twice)."""
    return aws.client("bedrock-runtime", read_timeout=WORKER_TIMEOUT_SECONDS).converse(**request)
