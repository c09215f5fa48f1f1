"""The `lambda` kind: invoke a Lambda function synchronously with the run envelope (or, with `mode: async`,
as an event carrying the report URL and run token: the function reports back, runplane.agent shows how).

The function answers one final report (domain/reports.py), e.g. `{"outputs": {...}, "usage"?: [...],
"metadata"?: {...}}`; an error it raises becomes the run's error. The tail of its log (the last 4 KB Lambda
returns) becomes the run's log lines on stream `lambda`, before what its report says. The deployment may
invoke only the functions it was given (RUNPLANE_LAMBDA_FUNCTIONS, the CDK context `lambda_functions`),
which is also what its IAM policy allows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from runplane.domain.configs import LambdaConfig
from runplane.domain.states import ErrorCode
from runplane.runnables.context import RunContext, RunFailed
from runplane.runnables.kinds import accept_report, envelope, require_allowed, snippet
from runplane.settings import Settings

ISOLATED = False
Config = LambdaConfig
T = TypeVar("T")


def check(config: Config, settings: Settings) -> None:
    require_allowed(config.function_arn, settings.lambda_functions, "function_arn", "function")


def invoke(config: Config, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    from runplane.adapters.runtimes import invoke_function

    invocation = _invoked(invoke_function, config.function_arn, envelope(inputs, ctx))
    for line in filter(str.strip, invocation.log_tail.splitlines()):
        ctx.log_line("lambda", line)
    if invocation.function_error:
        raise RunFailed(_function_error(invocation.answer), ErrorCode.function_error)
    return accept_report(invocation.answer, ctx, "the function")


def hand_off(config: Config, inputs: dict[str, Any], ctx: RunContext, agent: dict[str, Any]) -> None:
    """Invoke the function asynchronously (an event) with the envelope and the `agent` fields; Lambda
    queues it and the function reports back. Lambda retries an event whose function failed (twice, by
    default): a retry reports with the same run token, and its first end wins."""
    from runplane.adapters.runtimes import invoke_event

    _invoked(invoke_event, config.function_arn, envelope(inputs, ctx, **agent))


def cancel(config: Config, ctx: RunContext) -> None:
    """A function is not called again to cancel: it reads `cancel_requested` in the report answers."""


def _invoked(call: Callable[[str, bytes], T], function_arn: str, payload: bytes) -> T:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return call(function_arn, payload)
    except ClientError as problem:
        error = problem.response.get("Error", {})
        raise RunFailed(
            f"Lambda refused the invocation: {error.get('Code')}: {error.get('Message')}",
            ErrorCode.lambda_error,
        ) from None
    except BotoCoreError as problem:
        raise RunFailed(f"Lambda could not be reached: {problem}", ErrorCode.lambda_error) from None


def _function_error(answer: bytes) -> str:
    """`errorType: errorMessage` from Lambda's error document (or a snippet when it is not one)."""
    try:
        document = json.loads(answer)
        return f"{document['errorType']}: {document['errorMessage']}"
    except (ValueError, KeyError, TypeError):
        return snippet(answer)
