"""Following a run (re-factor dialect): its events, as JSON or as a server-sent event stream, and its log."""

from __future__ import annotations

import json
from typing import Annotated
from uuid import UUID

from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Header, Query

from runplane.api.common import Dialect, account, principal
from runplane.api.errors import json_response
from runplane.api.openapi import JSON, errors, no_content, ok
from runplane.domain.events import EventPage, LogPage
from runplane.domain.models import ErrorBody
from runplane.logic import watch, watch_tokens

router = Router()
TAGS = [Dialect.refactor.value]
SSE = "text/event-stream"
RECONNECT_MS = 250  # how soon an EventSource asks again once an answer ends
NO_RUN = (404, "No run with this id in the caller's account")

Wait = Annotated[
    float | None,
    Query(
        ge=0,
        le=watch.MAX_WAIT_SECONDS,
        description="Seconds to wait for an event when none is new (long poll); default 0, or "
        f"{watch.MAX_WAIT_SECONDS:g} for an event stream",
    ),
]


@router.get(
    "/v1/run/<run_id>/events",
    tags=TAGS,
    summary="Follow a run's events",
    description="The run's events after `after`, oldest first: status changes with their reason, state "
    "updates, partial outputs, log batches and its end. Each has a `seq` that increases; pass the "
    "page's `last_seq` as `after` to go on, until `done`. With `wait`, the answer waits up to that long "
    "for an event. With `Accept: text/event-stream` the events are server-sent events (`id:` is the "
    "seq; a final `done` event when the run has ended): each answer holds the events of one long poll, "
    "and an EventSource reconnects with `Last-Event-ID` to go on; 204 tells it the run has ended.",
    responses={
        200: {
            "description": "Events (JSON, or a server-sent event stream)",
            "content": {JSON: {"model": EventPage}, SSE: {"schema": {"type": "string"}}},
        },
        204: no_content("Event stream only: the run has ended and every event was sent"),
        **errors(ErrorBody, 400, 403, NO_RUN),
    },
)
def run_events(
    run_id: UUID,
    after: Annotated[
        int | None, Query(ge=0, le=10**9, description="The last seq already seen (default 0: every event)")
    ] = None,
    wait: Wait = None,
    accept: Annotated[str | None, Header(alias="Accept", include_in_schema=False)] = None,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", description="What an EventSource sends on reconnecting")
    ] = None,
    token: Annotated[
        str | None,
        Query(
            max_length=512,
            description="A watch token (`POST /v1/run/{run_id}/events/token`) in place of the API key, for "
            "a browser's EventSource, which cannot send Authorization",
        ),
    ] = None,
):
    caller = account("runs:read")
    streaming = SSE in (accept or "")
    seen = after if after is not None else _resumed(last_event_id)
    window = wait if wait is not None else (watch.MAX_WAIT_SECONDS if streaming else 0.0)
    page = watch.read_events(caller, str(run_id), seen, window)
    if not streaming:
        return json_response(200, page.model_dump_json(exclude_none=True))
    if page.done and not page.events and seen > 0:
        return Response(status_code=204, body="")
    return Response(
        status_code=200, content_type=SSE, body=_stream(page), headers={"Cache-Control": "no-cache"}
    )


def _resumed(last_event_id: str | None) -> int:
    value = (last_event_id or "").strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else 0  # not "²"


def _stream(page: EventPage) -> str:
    parts = [f"retry: {RECONNECT_MS}\n\n"]
    parts += [
        f"id: {event.seq}\ndata: {event.model_dump_json(exclude_none=True)}\n\n" for event in page.events
    ]
    if page.done:
        ended = json.dumps({"status": page.status.value, "last_seq": page.last_seq})
        parts.append(f"id: {page.last_seq}\nevent: done\ndata: {ended}\n\n")
    elif not page.events:
        parts.append(f": nothing new\nid: {page.last_seq}\n\n")  # the id keeps a reconnect where it was
    return "".join(parts)


@router.post(
    "/v1/run/<run_id>/events/token",
    tags=TAGS,
    status_code=201,
    summary="Get a watch token for a run's events",
    description="A token that reads this run's events, and nothing else, without the API key: pass it as "
    "`?token=` to `GET /v1/run/{run_id}/events` (a browser's EventSource cannot send an Authorization "
    "header). It expires after `seconds` (default 3600, at most 86400) and stops working when the key "
    "that asked for it is revoked. It is a credential in a URL: hand it only to whoever may watch the run.",
    responses={201: ok(watch_tokens.WatchToken, "The token"), **errors(ErrorBody, 400, 403, NO_RUN)},
)
def watch_token(
    run_id: UUID,
    seconds: Annotated[
        int, Query(ge=60, le=watch_tokens.MAX_SECONDS, description="How long the token is valid")
    ] = watch_tokens.DEFAULT_SECONDS,
):
    issued = watch_tokens.issue(principal(), str(run_id), seconds)
    return json_response(201, issued.model_dump_json())


@router.get(
    "/v1/run/<run_id>/logs",
    tags=TAGS,
    summary="Read a run's log",
    description="What the run's code printed (stdout, stderr), logged (`ctx.log`) or its agent reported, "
    "oldest first, with an unhandled exception's traceback. Pass `next_cursor` as `cursor` for the "
    "lines that follow; it is null once the run has ended and every line was read. A run keeps "
    "RUNPLANE_MAX_LOG_BYTES of log (1 MiB by default); `truncated` says later lines were dropped.",
    responses={200: ok(LogPage, "Log lines"), **errors(ErrorBody, 400, 403, NO_RUN)},
)
def run_logs(
    run_id: UUID,
    cursor: Annotated[
        str | None, Query(max_length=12, description="`next_cursor` of the previous page, as it was given")
    ] = None,
) -> LogPage:
    return watch.read_logs(account("runs:read"), str(run_id), cursor)
