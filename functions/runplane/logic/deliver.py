"""One callback attempt per due delivery: sign the run's RunState, POST it, record what happened,
and schedule the next attempt, stop, or bury the delivery in the DLQ.

Retries are messages hidden with ChangeMessageVisibility and left in the queue (a partial batch failure);
the record in DynamoDB holds the due time, so waits past SQS's 12-hour limit just hide the message again.
"""

from __future__ import annotations

import json
import random
import secrets
import time
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import NoReturn

from runplane import definitions as defs
from runplane.adapters import outbound
from runplane.domain.deliveries import CallbackAttempt, DeliveryRecord
from runplane.domain.errors import RetryLater
from runplane.domain.models import RunRecord
from runplane.domain.webhooks import signature_header
from runplane.logic.callbacks import signing_secrets
from runplane.logic.runs import run_state
from runplane.logic.services import services
from runplane.observability import count_callback, logger
from runplane.settings import MAX_CALLBACK_DELAY_SECONDS

LEASE_SECONDS = defs.CALLBACK_TIMEOUT_SECONDS  # an attempt never outlives the function making it
RACE_BACKOFF_SECONDS = 5
NOT_ENDED_WAIT_SECONDS = 15 * 60  # how long a message sent before its run's end waits for it


def process_callback(body: str, receipt_handle: str, message_id: str) -> None:
    message = json.loads(body)
    store = services().deliveries
    record = store.get(message["account_id"], message["run_id"], message["delivery_id"])
    # a message of an earlier round is stale: the delivery was redelivered since, with a message of its
    # own (one sent before rounds existed is round 0)
    if record is None or record.state != "pending" or message.get("round", 0) != record.round:
        return  # finished (a duplicate message), expired, or stale
    now = time.time()
    waiting = max((record.next_attempt_at or 0) - now, (record.lease_until or 0) - now)
    if waiting > 0:
        _retry_later(receipt_handle, waiting)
    if record.follows_events and _events_in_flight(record, now):  # the end is the last message
        _retry_later(receipt_handle, EVENTS_BACKOFF_SECONDS)
    run = services().runs.get(record.account_id, record.run_id, consistent=True)
    if record.event == "completed" and run is not None and not run.status.terminal:
        # sent as the run was about to end, which it has not yet: wait as long again as the message has
        # waited, then give up on it (that end was not written; the one that is sends a message of its own)
        waited = now - (message.get("sent_at") or record.created_at.timestamp())
        if waited > NOT_ENDED_WAIT_SECONDS:
            return
        _retry_later(receipt_handle, max(waited, 1.0))
    owner = secrets.token_hex(8)
    claimed = store.claim(record, owner, now, now + LEASE_SECONDS)
    if claimed is None:  # another copy of the message got there first
        _retry_later(receipt_handle, RACE_BACKOFF_SECONDS)
    state, next_at, attempt = _attempt(claimed, run)
    updated = store.record_attempt(claimed, owner, attempt, state=state, next_attempt_at=next_at)
    count_callback(state)
    log = {"run_id": claimed.run_id, "delivery_id": claimed.id, "attempt": attempt.number, "state": state}
    if updated is None:
        logger.warning("callback lease lost; attempt not recorded", extra=log)
        return
    # a failed attempt is the receiver's answer an operator may be asked about; a success is per-run detail
    (logger.debug if state == "succeeded" else logger.info)(
        "callback attempt", extra={**log, "status_code": attempt.status_code, "error": attempt.error}
    )
    if state == "pending" and next_at is not None:
        _retry_later(receipt_handle, next_at - time.time())
    if state == "dead":
        services().queues.bury_callback(body, message_id, attempt.error or "")


EVENTS_BACKOFF_SECONDS = 2


def _events_in_flight(record: DeliveryRecord, now: float) -> bool:
    """Whether an event delivery of the run is being attempted: the end's waits until it is done. One that
    starts after the run ended is dropped instead (`_post`), so the wait is short."""
    return any(
        other.event != "completed" and other.state == "pending" and (other.lease_until or 0) > now
        for other in services().deliveries.for_run(record.account_id, record.run_id)
    )


def _retry_later(receipt_handle: str, seconds: float) -> NoReturn:
    services().queues.hide_callback(receipt_handle, seconds)
    raise RetryLater(f"due in {seconds:.0f} s")


def _attempt(record: DeliveryRecord, run: RunRecord | None) -> tuple[str, float | None, CallbackAttempt]:
    """POST `run` once; (next state, next due time if pending, the attempt). `record` is as claimed: its
    `round_attempts` counts this attempt."""
    number = record.attempts[-1].number + 1 if record.attempts else 1
    started = time.time()
    schedule = services().settings.callback_schedule
    if record.round_attempts > len(schedule) + 1:  # earlier claims crashed before recording anything
        reply = outbound.Reply(None, 0, "earlier attempts did not finish")
    else:
        try:
            reply = _post(record, run)
        except Exception as error:  # a bug or an AWS failure: recorded as a failed attempt, retried
            logger.exception("callback attempt failed inside Runplane", extra={"delivery_id": record.id})
            reply = outbound.Reply(
                None, round((time.time() - started) * 1000), f"internal error: {type(error).__name__}"
            )
    code = reply.status_code
    succeeded = code is not None and 200 <= code < 300
    attempt = CallbackAttempt(
        number=number,
        started_at=_at(started),
        status_code=code,
        latency_ms=reply.latency_ms,
        error=reply.error or (None if succeeded else f"HTTP {code}"),
    )
    if succeeded:
        return "succeeded", None, attempt
    if code == 410 or reply.abort or reply is RUN_GONE or reply is SUPERSEDED:
        return "stopped", None, attempt
    done_before = record.round_attempts - 1
    if done_before >= len(schedule):
        return "dead", None, attempt
    delay = next_delay(schedule[done_before], retry_after_seconds(reply.retry_after))
    return "pending", time.time() + delay, attempt


RUN_GONE = outbound.Reply(None, 0, "the run no longer exists")
SUPERSEDED = outbound.Reply(None, 0, "superseded: the run has ended, its end's callback follows")


def _post(record: DeliveryRecord, run: RunRecord | None) -> outbound.Reply:
    """Sign the run's RunState and POST it to the delivery's URL."""
    settings = services().settings
    if run is None:
        return RUN_GONE
    if record.event != "completed" and run.status.terminal:
        return SUPERSEDED
    body = run_state(run).model_dump_json().encode()
    timestamp = int(time.time())
    headers = {
        **(run.callback_headers or {}),
        "Content-Type": "application/json",
        "Runplane-Event": record.event,
        "webhook-id": record.id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(signing_secrets(record.account_id), record.id, timestamp, body),
    }
    return outbound.post(
        record.url,
        body,
        headers,
        allow_loopback=settings.allow_loopback,
        connect_timeout=settings.callback_connect_timeout_seconds,
        total_timeout=settings.callback_timeout_seconds,
    )


def next_delay(scheduled: float, retry_after: float | None) -> float:
    """The scheduled delay with ±20 % jitter, or the receiver's longer Retry-After (at most 24 h)."""
    delay = scheduled * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not secrecy
    if retry_after is not None and retry_after > delay:
        return min(retry_after, MAX_CALLBACK_DELAY_SECONDS)
    return delay


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` as seconds from now: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        return (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
    except (TypeError, ValueError):
        return None


def _at(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)
