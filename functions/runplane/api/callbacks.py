"""The re-factor dialect's callback routes: a run's deliveries and their redelivery, the account's dead
callbacks, the signing secret."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Body, Query
from pydantic import Field

from runplane.api.common import Instant, account
from runplane.api.errors import json_response
from runplane.api.openapi import ok
from runplane.api.v1 import NO_RUN, TAGS, Cursor, Limit, fail
from runplane.domain.deliveries import CallbackDelivery, CallbackSecret, DeadReplay
from runplane.domain.models import Page, Strict
from runplane.logic import callbacks

router = Router()


@router.get(
    "/v1/run/<run_id>/callbacks",
    tags=TAGS,
    summary="List a run's callback deliveries",
    description="Each webhook message sent for the run, with every attempt: status code, latency, error.",
    responses={200: ok(Page[CallbackDelivery], "The deliveries"), **fail(403, NO_RUN)},
)
def list_callbacks(run_id: UUID) -> Page[CallbackDelivery]:
    return Page(items=callbacks.list_deliveries(account("runs:read"), str(run_id)))


@router.post(
    "/v1/run/<run_id>/callbacks/redeliver",
    tags=TAGS,
    summary="Send a run's callback again",
    description="The same message (same `webhook-id`) is attempted now with a fresh retry schedule: a "
    "finished delivery is sent again, a pending one does not wait for its next retry.",
    responses={
        202: ok(CallbackDelivery, "Redelivery enqueued: due now"),
        **fail(
            403,
            NO_RUN,
            (409, "The run has no `callback_url` or has not ended yet, or an attempt is being made"),
        ),
    },
)
def redeliver_callback(run_id: UUID):
    delivery = callbacks.redeliver(account("runs:write"), str(run_id))
    return json_response(202, delivery.model_dump_json())


class DeadReplayRequest(Strict):
    """The window of dead deliveries to replay: as `GET /v1/callbacks/dead`'s."""

    since: Instant | None = Field(
        None, description="Died at or after (RFC 3339; default: 7 days before until)"
    )
    until: Instant | None = Field(None, description="Died at or before (RFC 3339; default: now)")


DEAD_WINDOW = (400, "A window of more than 31 days, `since` after `until`, or an invalid cursor")


@router.get(
    "/v1/callbacks/dead",
    tags=TAGS,
    summary="List the account's dead callbacks",
    description="Deliveries that exhausted their retry schedule (`dead`) between `since` and `until` (both "
    "included; default: the last 7 days, at most 31), newest death first. Pass `next_cursor` as `cursor` "
    "for the next page, with the same window.",
    responses={200: ok(Page[CallbackDelivery], "A page of dead deliveries"), **fail(DEAD_WINDOW, 403)},
)
def list_dead_callbacks(
    since: Annotated[Instant | None, Query(description="Died at or after (RFC 3339)")] = None,
    until: Annotated[Instant | None, Query(description="Died at or before (RFC 3339; default: now)")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[CallbackDelivery]:
    return callbacks.list_dead(account("runs:read"), since, until, limit, cursor)


@router.post(
    "/v1/callbacks/dead/replay",
    tags=TAGS,
    summary="Replay the account's dead callbacks",
    description="The newest 100 deliveries that died in the window (as `GET /v1/callbacks/dead`) are "
    "reopened with their `webhook-id` and a fresh schedule, due now; `more` when others remain (ask again).",
    responses={202: ok(DeadReplay, "Replay enqueued"), **fail(DEAD_WINDOW, 403)},
)
def replay_dead_callbacks(body: Annotated[DeadReplayRequest, Body()] = DeadReplayRequest()):  # noqa: B008 - no body: the defaults
    body = body or DeadReplayRequest()
    replay = callbacks.replay_account_dead(account("runs:write"), body.since, body.until)
    return json_response(202, replay.model_dump_json())


@router.get(
    "/v1/callbacks/secret",
    tags=TAGS,
    summary="Get the callback signing secret",
    description="Verify each callback's `webhook-signature` with it (Standard Webhooks). Needs `admin`.",
    responses={200: ok(CallbackSecret, "The secret"), **fail(403)},
)
def get_callback_secret() -> CallbackSecret:
    return callbacks.callback_secret(account("admin"))


@router.post(
    "/v1/callbacks/secret/rotate",
    tags=TAGS,
    summary="Rotate the callback signing secret",
    description="A new secret signs from now on; the previous one keeps signing too until "
    "`previous_valid_until`, so receivers can switch without losing a message. Needs `admin`.",
    responses={
        200: ok(CallbackSecret, "The new secret"),
        **fail(403, (409, "Another rotation happened at the same time: read the secret again")),
    },
)
def rotate_callback_secret() -> CallbackSecret:
    return callbacks.rotate_secret(account("admin"))
