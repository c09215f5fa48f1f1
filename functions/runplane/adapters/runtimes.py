"""Where remote runnables execute: Lambda functions and Bedrock models."""

from __future__ import annotations

from typing import Any

from runplane.adapters import aws
from runplane.definitions import WORKER_TIMEOUT_SECONDS


def lambda_client() -> Any:
    """Never retries: an invocation that failed on the way back may have run."""
    return aws.client("lambda", read_timeout=WORKER_TIMEOUT_SECONDS, max_attempts=1)


def bedrock_client() -> Any:
    """Retries throttling and service errors: a failed model call did nothing."""
    return aws.client("bedrock-runtime", read_timeout=WORKER_TIMEOUT_SECONDS)


def invoke_function(function_arn: str, payload: bytes) -> tuple[str | None, bytes]:
    """Invoke synchronously: (FunctionError or None, the answer). The worker stops waiting at the run's
    deadline; the function itself runs until its own timeout."""
    response = lambda_client().invoke(
        FunctionName=function_arn, InvocationType="RequestResponse", Payload=payload
    )
    return response.get("FunctionError"), response["Payload"].read()


def converse(request: dict[str, Any]) -> dict[str, Any]:
    return bedrock_client().converse(**request)
