"""The `lambda` kind: invoke a Lambda function synchronously with the run envelope.

The function answers one final report (domain/reports.py), e.g. `{"outputs": {...}, "usage"?: [...],
"metadata"?: {...}}`; an error it raises becomes the run's error. The tail of its log (the last 4 KB Lambda
returns) becomes the run's log lines on stream `lambda`, before what its report says. The deployment may
invoke only the functions it was given (RUNPLANE_LAMBDA_FUNCTIONS, the CDK context `lambda_functions`),
which is also what its IAM policy allows.
"""

from __future__ import annotations

import json
from typing import Any

from runplane.domain.configs import LambdaConfig
from runplane.domain.states import ErrorCode
from runplane.runnables.context import RunContext, RunFailed
from runplane.runnables.kinds import accept_report, envelope, require_allowed, snippet
from runplane.settings import Settings

ISOLATED = False
Config = LambdaConfig


def check(config: Config, settings: Settings) -> None:
    require_allowed(config.function_arn, settings.lambda_functions, "function_arn", "function")


def invoke(config: Config, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    from botocore.exceptions import BotoCoreError, ClientError

    from runplane.adapters.runtimes import invoke_function

    try:
        invocation = invoke_function(config.function_arn, envelope(inputs, ctx))
    except ClientError as problem:
        error = problem.response.get("Error", {})
        raise RunFailed(
            f"Lambda refused the invocation: {error.get('Code')}: {error.get('Message')}",
            ErrorCode.lambda_error,
        ) from None
    except BotoCoreError as problem:
        raise RunFailed(f"Lambda could not be reached: {problem}", ErrorCode.lambda_error) from None
    for line in filter(str.strip, invocation.log_tail.splitlines()):
        ctx.log_line("lambda", line)
    if invocation.function_error:
        raise RunFailed(_function_error(invocation.answer), ErrorCode.function_error)
    return accept_report(invocation.answer, ctx, "the function")


def _function_error(answer: bytes) -> str:
    """`errorType: errorMessage` from Lambda's error document (or a snippet when it is not one)."""
    try:
        document = json.loads(answer)
        return f"{document['errorType']}: {document['errorMessage']}"
    except (ValueError, KeyError, TypeError):
        return snippet(answer)
