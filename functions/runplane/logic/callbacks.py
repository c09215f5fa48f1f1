"""Callback deliveries: created when a run with a callback_url ends, redelivered and replayed on request,
and the accounts' signing secrets. Attempts themselves are made by `logic.deliver`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from runplane import definitions as defs
from runplane.domain.deliveries import CallbackDelivery, CallbackSecret, DeadReplay, DeliveryRecord
from runplane.domain.errors import Conflict, InvalidRequest, Issue, NotFound
from runplane.domain.models import Page, RunRecord, utcnow
from runplane.domain.webhooks import new_secret
from runplane.logic.services import services
from runplane.observability import logger

# A pending delivery this far past due has lost its queue message (a due one is received within seconds).
OVERDUE_AFTER_SECONDS = 15 * 60
# Conditional writes a redelivery tries, reading the delivery again after each that another writer beat.
REDELIVER_TRIES = 3
# An account's dead deliveries: the window listed by default and at most, and how many one replay reopens.
DEAD_DEFAULT_DAYS = 7
DEAD_MAX_DAYS = 31
DEAD_REPLAY_LIMIT = 100


def delivery_id_for(run_id: str) -> str:
    """The `webhook-id` of a run's callback: stable across attempts, redeliveries and replays."""
    return "msg_" + run_id.replace("-", "")


def end_delivery(record: RunRecord, expires_at: int | None) -> DeliveryRecord:
    """The delivery of the run's end callback, pending, due now."""
    return DeliveryRecord(
        account_id=record.account_id,
        run_id=record.id,
        id=delivery_id_for(record.id),
        url=record.callback_url or "",
        follows_events=bool(record.event_callbacks),
        state="pending",
        next_attempt_at=time.time(),
        created_at=utcnow(),
        expires_at=expires_at,
    )


def send_end_delivery(record: RunRecord, expires_at: int) -> None:
    """Store the delivery of the run's end callback (once: a repeat keeps the first) and enqueue it, as the
    run is about to end: the message is the run's outbox, so the end needs none of its own. A message
    that arrives before the end is written waits for it (`logic.deliver`); if the end is never written
    by this path, another path ends the run and sends again. The delivery enters the sweeper's overdue
    index only once it waits for a retry (nothing else can lose its message)."""
    _create_and_enqueue(end_delivery(record, expires_at), indexed=False)


def start_delivery(record: RunRecord) -> None:
    """Create the ended run's delivery (once) and enqueue it: a run that ended without one stored."""
    _create_and_enqueue(end_delivery(record, record.expires_at))


def start_event_delivery(record: RunRecord, event: str, seq: int) -> None:
    """Create and enqueue the delivery of the run's event `seq` (`logic.event_callbacks`); its id follows
    from the seq, so a repeat creates nothing new."""
    now = time.time()
    _create_and_enqueue(
        DeliveryRecord(
            account_id=record.account_id,
            run_id=record.id,
            id=f"{delivery_id_for(record.id)}_{seq}",
            url=record.callback_url or "",
            event=event,
            seq=seq,
            state="pending",
            next_attempt_at=now,
            created_at=utcnow(),
            expires_at=int(now) + (services().settings.run_retention_days + 1) * 86400,
        )
    )


def _create_and_enqueue(delivery: DeliveryRecord, *, indexed: bool = True) -> None:
    store = services().deliveries
    # stored before: enqueued again only while pending, in its round
    if not store.create(delivery, indexed=indexed):
        existing = store.get(delivery.account_id, delivery.run_id, delivery.id)
        if existing is None or existing.state != "pending":
            return
        delivery = existing
    services().queues.send_callback(delivery)


def list_deliveries(account_id: str, run_id: str) -> list[CallbackDelivery]:
    if services().runs.get(account_id, run_id) is None:
        raise NotFound("Run", run_id)
    return [d.public() for d in services().deliveries.for_run(account_id, run_id)]


def redeliver(account_id: str, run_id: str) -> CallbackDelivery:
    """Attempt a run's delivery now, with the same webhook-id and a fresh schedule: a finished one is sent
    again, a pending one is not left waiting for its next retry."""
    run = services().runs.get(account_id, run_id, consistent=True)
    if run is None:
        raise NotFound("Run", run_id)
    if not run.calls_back("completed"):
        raise Conflict(f"run {run_id} has no callback for its end", "no_callback")
    if not run.status.terminal:
        raise Conflict(f"run {run_id} has not ended; its callback is sent when it does", "run_not_terminal")
    delivery = services().deliveries.get(account_id, run_id, delivery_id_for(run_id))
    if delivery is None:  # its end could not enqueue it (the sweeper will): create it now
        start_delivery(run)
        delivery = services().deliveries.get(account_id, run_id, delivery_id_for(run_id))
        if delivery is None:
            raise RuntimeError(f"the delivery of run {run_id} was not created")
        return delivery.public()
    return _attempt_now(delivery).public()


def _attempt_now(delivery: DeliveryRecord) -> DeliveryRecord:
    """Start a new round of `delivery`, due now, and enqueue it: reopen it if it finished, move a pending
    one's next attempt to now (the old round's message, still hidden, is stale when it comes back).

    Nothing is sent twice by accident: an attempt in progress is left to finish, and a delivery seen
    pending that finished meanwhile is not reopened (409 `delivery_in_flight` for both). Each write is
    conditional on the state read; one that another writer beat is decided again on a fresh read. The
    record is written before the message is sent: if the send fails, the delivery is due and pending,
    and the sweeper enqueues it once it is overdue."""
    store = services().deliveries
    seen_pending = False
    for _ in range(REDELIVER_TRIES):
        now = time.time()
        if delivery.state != "pending":
            if seen_pending:
                break
            if (reopened := _reopen(delivery)) is not None:
                return reopened
        else:
            seen_pending = True
            if (delivery.lease_until or 0) > now:
                break
            if (due := store.retry_now(delivery, now)) is not None:
                services().queues.send_callback(due)
                logger.debug("callback made due now", extra={"run_id": due.run_id, "delivery_id": due.id})
                return due
        current = store.get(delivery.account_id, delivery.run_id, delivery.id)
        if current is None:
            raise NotFound("Run", delivery.run_id)  # expired meanwhile, with its run
        delivery = current
    raise Conflict(
        "an attempt of this callback is being made or has just been made; its outcome is listed with its "
        f"attempts within {defs.CALLBACK_TIMEOUT_SECONDS} s: ask again if it failed",
        "delivery_in_flight",
    )


def replay_dead(since: datetime, until: datetime) -> list[str]:
    """Reopen and enqueue every delivery that died between `since` and `until`; the webhook-ids replayed."""
    return _replay(services().deliveries.dead_between(since, until))


def _replay(found: Iterable[tuple[str, str, str]]) -> list[str]:
    """Reopen and enqueue each (account_id, run_id, delivery_id) still dead; the webhook-ids replayed."""
    replayed = []
    store = services().deliveries
    for account_id, run_id, delivery_id in found:
        try:
            delivery = store.get(account_id, run_id, delivery_id)
            if delivery is not None and delivery.state == "dead" and _reopen(delivery) is not None:
                replayed.append(delivery_id)
        except Exception:  # one failure must not stop the rest; a reopened one is re-enqueued by the sweeper
            logger.exception("replay of a delivery failed", extra={"delivery_id": delivery_id})
    return replayed


def dead_window(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
    """The window of an account's dead deliveries asked for: by default the last DEAD_DEFAULT_DAYS, at most
    DEAD_MAX_DAYS (else 400 `invalid_period`)."""
    until = until or datetime.now(UTC)
    since = since or until - timedelta(days=DEAD_DEFAULT_DAYS)
    if since > until:
        raise InvalidRequest(
            "since must not be after until", "invalid_period", [Issue("since", "after until")]
        )
    if until - since > timedelta(days=DEAD_MAX_DAYS):
        raise InvalidRequest(
            f"a window may span at most {DEAD_MAX_DAYS} days", "invalid_period", [Issue("since", "too early")]
        )
    return since, until


def list_dead(
    account_id: str, since: datetime | None, until: datetime | None, limit: int, cursor: str | None
) -> Page[CallbackDelivery]:
    """The account's deliveries that died in the window, newest first (one reopened meanwhile is left out)."""
    store = services().deliveries
    keys, next_cursor = store.dead_for_account(account_id, *dead_window(since, until), limit, cursor)
    found = (store.get(account_id, run_id, delivery_id) for run_id, delivery_id in keys)
    return Page(items=[d.public() for d in found if d and d.state == "dead"], next_cursor=next_cursor)


def replay_account_dead(account_id: str, since: datetime | None, until: datetime | None) -> DeadReplay:
    """Reopen the account's newest DEAD_REPLAY_LIMIT deliveries that died in the window (a replayed one
    leaves the dead index, so asking again goes on with the rest)."""
    keys, more = services().deliveries.dead_for_account(
        account_id, *dead_window(since, until), DEAD_REPLAY_LIMIT, None
    )
    replayed = _replay((account_id, run_id, delivery_id) for run_id, delivery_id in keys)
    return DeadReplay(webhook_ids=replayed, more=more is not None)


def overdue(shard: str, now: float, limit: int) -> list[tuple[str, str, str, float]]:
    """Pending deliveries long past due: their message was lost (a failed send, a poison message)."""
    return services().deliveries.overdue(shard, now - OVERDUE_AFTER_SECONDS, limit)


def requeue(account_id: str, run_id: str, delivery_id: str, due: float, now: float) -> bool:
    """Enqueue an `overdue` delivery again (made due `now`, so it is not re-enqueued at once)."""
    touched = services().deliveries.touch(account_id, run_id, delivery_id, due, now)
    if touched is None:
        return False
    services().queues.send_callback(touched)
    return True


def _reopen(delivery: DeliveryRecord) -> DeliveryRecord | None:
    reopened = services().deliveries.reopen(delivery, time.time())
    if reopened is not None:
        services().queues.send_callback(reopened)
        logger.debug("callback reopened", extra={"run_id": delivery.run_id, "delivery_id": delivery.id})
    return reopened


# --- signing secrets ---


def callback_secret(account_id: str) -> CallbackSecret:
    """The account's signing secret, created on first use."""
    account = services().accounts.get(account_id) or {}
    if "callback_secret" not in account:
        services().accounts.create_secret(account_id, new_secret())
        account = services().accounts.get(account_id) or {}
    previous_until = account.get("previous_until")
    return CallbackSecret(
        secret=account["callback_secret"],
        previous_valid_until=(
            datetime.fromtimestamp(previous_until, UTC)
            if previous_until and previous_until > time.time()
            else None
        ),
    )


def rotate_secret(account_id: str) -> CallbackSecret:
    """A new signing secret; the previous one still signs for RUNPLANE_CALLBACK_SECRET_OVERLAP_SECONDS."""
    current = callback_secret(account_id).secret
    until = time.time() + services().settings.callback_secret_overlap_seconds
    if not services().accounts.rotate_secret(account_id, current, new_secret(), until):
        raise Conflict("the secret was rotated concurrently; read it again", "secret_changed")
    return callback_secret(account_id)


def signing_secrets(account_id: str) -> list[str]:
    """The secrets a delivery is signed with now: the current one, and the previous during the overlap."""
    account = services().accounts.get(account_id) or {}
    if "callback_secret" not in account:
        return [callback_secret(account_id).secret]
    active = [account["callback_secret"]]
    if account.get("previous_secret") and (account.get("previous_until") or 0) > time.time():
        active.append(account["previous_secret"])
    return active


def dead_letters(limit: int) -> list[dict[str, object]]:
    """What sits in the callbacks DLQ, each with its delivery's state now (a replayed one is no longer dead)."""
    letters: list[dict[str, object]] = []
    for message in services().queues.peek_callback_dlq(limit):
        body = json.loads(message["Body"])
        attributes = message.get("MessageAttributes", {})
        delivery = services().deliveries.get(body["account_id"], body["run_id"], body["delivery_id"])
        letters.append(
            {
                **body,
                "state": delivery.state if delivery else "expired",
                "error": attributes.get("runplane-error", {}).get("StringValue"),
                "parked_at": datetime.fromtimestamp(
                    int(message["Attributes"]["SentTimestamp"]) / 1000, UTC
                ).isoformat(),
            }
        )
    return letters
