"""The `http` kind: POST the run to an agent service and take its answer as the run's result.

The request is the run envelope (`run_id`, `inputs`, `resources`, `metadata`, `deadline`, ...) signed with
the account's Standard Webhooks secret, so the service can verify it came from Runplane. The service
answers with a 2xx status and either one final report (domain/reports.py) as JSON, e.g.
`{"outputs": {...}, "usage"?: [...], "metadata"?: {...}}`, or a stream of reports, one per line
(application/x-ndjson), each applied as it arrives, the last one final.

With `mode: async` the envelope also carries a `report_url` and a `run_token`: the service accepts the run
with a 2xx answer at once (its body is ignored) and reports to the URL until it reports the end. A
cancellation is POSTed, signed the same way, to the runnable's `cancel_url`.
"""

from __future__ import annotations

import json
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
ACCEPT_SECONDS = 10.0  # how long an async agent may take to accept a run, unless its config says
MAX_ACCEPT_SECONDS = 300.0  # whatever it says: the worker's invocation must outlast the wait


Config = HttpConfig


def check(config: Config, settings: Settings) -> None:
    for field, url in (("url", config.url), ("cancel_url", config.cancel_url)):
        if url is None:
            continue
        try:
            outbound.check_destination(url, allow_loopback=settings.allow_loopback)
        except outbound.ForbiddenDestination as problem:
            raise InvalidRequest(
                f"config.{field} is not allowed: {problem}",
                "forbidden_url",
                [Issue(f"body.config.{field}", str(problem))],
            ) from None


def invoke(config: Config, inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    # past the run's deadline the worker has stopped waiting (the run ends `timeout`): a moment later the
    # call is cut off too
    limits = [ctx.remaining_seconds() + 1, *([config.timeout_seconds] if config.timeout_seconds else [])]
    stream = ReportStream(ctx, f"POST {config.url}")
    reply = _post(config, config.url, envelope(inputs, ctx), ctx, min(limits), MAX_REPLY_BYTES, stream)
    if reply.too_large:
        raise RunFailed(
            f"POST {config.url} answered more than {MAX_REPLY_BYTES} bytes", ErrorCode.invalid_reply
        )
    return stream.result() if reply.streamed else accept_report(reply.body, ctx, f"POST {config.url}")


def hand_off(config: Config, inputs: dict[str, Any], ctx: RunContext, agent: dict[str, Any]) -> None:
    """Send an async run to its agent (the envelope with the `agent` fields: report URL, run token);
    returns once the agent accepted it, else raises RunFailed."""
    seconds = min(config.timeout_seconds or ACCEPT_SECONDS, MAX_ACCEPT_SECONDS, ctx.remaining_seconds() + 1)
    _post(config, config.url, envelope(inputs, ctx, **agent), ctx, seconds, outbound.MAX_RESPONSE_BYTES)


def cancel(config: Config, ctx: RunContext) -> None:
    """Tell an async agent its run is cancelled (POST `{"run_id", "attempt", "type": "cancel"}` to the
    runnable's `cancel_url`, signed); raises RunFailed when it was not accepted."""
    if config.cancel_url is None:
        return
    body = json.dumps({"run_id": ctx.run_id, "attempt": ctx.attempt, "type": "cancel"}).encode()
    _post(config, config.cancel_url, body, ctx, ACCEPT_SECONDS, outbound.MAX_RESPONSE_BYTES, kind="cancel")


def _post(
    config: Config,
    url: str,
    body: bytes,
    ctx: RunContext,
    seconds: float,
    max_bytes: int,
    stream: ReportStream | None = None,
    kind: str = "run",
) -> outbound.Reply:
    """POST `body` signed as Runplane's (webhook-id `<run id>.<attempt>`, `.cancel` for a cancellation);
    the answer, when it is a 2xx, else RunFailed."""
    message_id = f"{ctx.run_id}.{ctx.attempt}" + ("" if kind == "run" else f".{kind}")
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
    settings = get_settings()
    reply = outbound.post(
        url,
        body,
        headers,
        allow_loopback=settings.allow_loopback,
        connect_timeout=min(settings.callback_connect_timeout_seconds, seconds),
        total_timeout=seconds,
        max_response_bytes=max_bytes,
        on_line=stream,
    )
    if reply.status_code is None:
        raise RunFailed(f"POST {url} failed: {reply.error}", ErrorCode.http_error)
    if not 200 <= reply.status_code < 300:
        raise RunFailed(
            f"POST {url} answered {reply.status_code}: {snippet(reply.body)}", ErrorCode.http_error
        )
    return reply
