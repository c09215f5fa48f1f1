"""The `http` kind: POST the run to an agent service and take its answer as the run's result.

The request is the run envelope (`run_id`, `inputs`, `resources`, `metadata`, `deadline`, ...) signed with
the account's Standard Webhooks secret, so the service can verify it came from Runplane. The service
answers with a 2xx status and either one final report (domain/reports.py) as JSON, e.g.
`{"outputs": {...}, "usage"?: [...], "metadata"?: {...}}`, or a stream of reports, one per line
(application/x-ndjson), each applied as it arrives, the last one final.
"""

from __future__ import annotations

import time
from typing import Any

from runplane.adapters import outbound
from runplane.domain.configs import HttpConfig
from runplane.domain.errors import InvalidRequest, Issue
from runplane.domain.states import ErrorCode
from runplane.domain.webhooks import signature_header
from runplane.runnables.context import RunContext, RunFailed
from runplane.runnables.kinds import ReportStream, accept_report, envelope, snippet
from runplane.settings import Settings, get_settings

ISOLATED = False
MAX_REPLY_BYTES = 6 * 1024 * 1024  # an answer, or a whole stream
ACCEPT = f"application/json, {outbound.NDJSON}"


Config = HttpConfig


def check(config: Config, settings: Settings) -> None:
    try:
        outbound.check_destination(config.url, allow_loopback=settings.allow_loopback)
    except outbound.ForbiddenDestination as problem:
        raise InvalidRequest(
            f"config.url is not allowed: {problem}", "forbidden_url", [Issue("body.config.url", str(problem))]
        ) from None


def invoke(config: Config, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    settings = get_settings()
    body = envelope(inputs, ctx)
    message_id = f"{ctx.run_id}.{ctx.attempt}"
    timestamp = int(time.time())
    secrets = ctx.signing_secrets() if ctx.signing_secrets else []
    headers = {
        "Accept": ACCEPT,  # the config's own Accept, if any, comes after and wins
        **(config.headers or {}),
        "Content-Type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, message_id, timestamp, body),
    }
    # past the run's deadline the worker has stopped waiting (the run ends `timeout`): a moment later the
    # call is cut off too
    limits = [ctx.remaining_seconds() + 1, *([config.timeout_seconds] if config.timeout_seconds else [])]
    source = f"POST {config.url}"
    stream = ReportStream(ctx, source)
    reply = outbound.post(
        config.url,
        body,
        headers,
        allow_loopback=settings.allow_loopback,
        connect_timeout=min(settings.callback_connect_timeout_seconds, *limits),
        total_timeout=min(limits),
        max_response_bytes=MAX_REPLY_BYTES,
        on_line=stream,
    )
    if reply.status_code is None:
        raise RunFailed(f"{source} failed: {reply.error}", ErrorCode.http_error)
    if not 200 <= reply.status_code < 300:
        raise RunFailed(f"{source} answered {reply.status_code}: {snippet(reply.body)}", ErrorCode.http_error)
    if reply.too_large:
        raise RunFailed(f"{source} answered more than {MAX_REPLY_BYTES} bytes", ErrorCode.invalid_reply)
    return stream.result() if reply.streamed else accept_report(reply.body, ctx, source)
