"""How runs end: the one conditional write that records a terminal outcome (the run's usage counted in the
same transaction), cancellation, what follows an end (slots, callback, children), and taking over a run
whose worker stopped renewing its lease."""

from __future__ import annotations

import math
import secrets
import time
from datetime import datetime, timedelta
from typing import Any

from runplane.domain.agents import Reported, agent_holds, heartbeat_seconds, timeout_reason
from runplane.domain.errors import Conflict, NotFound
from runplane.domain.ids import child_run_id
from runplane.domain.models import Outcome, RunError, RunQuery, RunRecord, RunState, UsageTotals, utcnow
from runplane.domain.pricing import add_up, priced
from runplane.domain.states import ErrorCode, Status
from runplane.logic import admission
from runplane.logic.callbacks import send_end_delivery, start_delivery
from runplane.logic.runs import item_json_bytes, run_state, store_json
from runplane.logic.services import services
from runplane.observability import count_agent_lost, count_finished, logger

# How long an ended run waits in the sweeper's index for `settle_ended` before the sweeper does it.
SETTLE_GRACE_SECONDS = 60
CANCELLED = "Run was cancelled on request"


def fail_outcome(message: str, code: ErrorCode | str, status: Status = Status.failed) -> Outcome:
    return Outcome(status=status, error=RunError(message=message, code=code))


def outcome_key(record: RunRecord) -> str:
    """Where an attempt's outcome is kept in S3: too large for the item, or not yet recorded."""
    return f"{record.account_id}/{record.id}/outcome-{record.attempt}.json"


def _cancelled(outcome: Outcome) -> Outcome:
    """A run asked to cancel ends cancelled, keeping what it computed."""
    if outcome.status is Status.cancelled:
        return outcome
    return outcome.model_copy(
        update={"status": Status.cancelled, "error": RunError(message=CANCELLED, code=ErrorCode.cancelled)}
    )


def finish_run(
    record: RunRecord,
    outcome: Outcome,
    *,
    owner: str | None = None,
    lease_seen: float | None = None,
    ended_by: str | None = None,
) -> RunRecord | None:
    """Record a terminal outcome with one conditional write; None if the run moved meanwhile.

    `owner` requires the caller to hold the run's lease, `lease_seen` that the lease is as the caller read
    it. A cancellation asked for while the run went on turns the outcome into `cancelled`. Safe to repeat
    after an error: a write applied though its answer was lost is recognised by its `ended_by` token (by
    default the owner, or a new one).
    """
    token = ended_by or owner or secrets.token_hex(8)
    outbox = record.calls_back("completed") and not _sent_before_the_end(record)
    finished = None
    for _ in range(3):  # a cancellation (or another event) may come between reading the run and ending it
        if record.cancel_requested:
            outcome = _cancelled(outcome)
        finished = _end(record, outcome, token, owner=owner, lease_seen=lease_seen, outbox=outbox)
        if finished is not None:
            break
        fresh = services().runs.get(record.account_id, record.id, consistent=True)
        if fresh is not None and fresh.ended_by == token:  # our own write, its answer lost on the way
            finished = fresh
            break
        still_ours = (
            fresh is not None
            and fresh.status is record.status
            and (owner is None or fresh.lease_owner == owner)
            and (lease_seen is None or fresh.lease_until == lease_seen)
        )
        moved_on = fresh is not None and (
            (fresh.cancel_requested and not record.cancel_requested) or fresh.seq != record.seq
        )
        if not (still_ours and moved_on):
            return None
        record = fresh
    if finished is None:
        return None
    count_finished(finished.status, outcome.duration_seconds)
    try:
        settle_ended(finished)
    except Exception:
        logger.exception("ended run not settled yet; the sweeper will", extra={"run_id": record.id})
    return finished


def _sent_before_the_end(record: RunRecord) -> bool:
    """Store and enqueue the end's callback before the end is written; False when that failed (the
    callbacks queue or table down), so the end keeps the run in the sweeper's index instead, which sends
    it: a callback is never what holds a run's end back."""
    settings = services().settings
    try:
        send_end_delivery(record, _expiry(utcnow()) + settings.max_async_run_seconds)
    except Exception:
        logger.warning("callback not enqueued before the run's end; the sweeper will", exc_info=True)
        return False
    return True


def _end(
    record: RunRecord,
    outcome: Outcome,
    token: str,
    *,
    owner: str | None,
    lease_seen: float | None,
    outbox: bool,
) -> RunRecord | None:
    """One try at the terminal write, with the usage counters in the same transaction; None when the
    run was not as expected. An error whose write was applied anyway returns the ended run."""
    settings = services().settings
    now = utcnow()
    outcome = priced(outcome, settings.prices)
    document = outcome.document()
    outcome_json, outcome_ref = store_json(document, outcome_key(record), beside=item_json_bytes(record))
    fields: dict[str, Any] = {
        "status": outcome.status.value,
        "completed_at": now,
        "expires_at": _expiry(now),
        "outcome_json": outcome_json,
        "outcome_ref": outcome_ref,
        "ended_by": token,
    }
    if outcome.status is Status.failed:
        fields["failed_at"] = now
    if outbox:
        fields["callback_unsent"] = True
    # the run stays in the sweeper's index until what follows its end is done (a waiting run may be
    # joining a concurrency queue as it is cancelled; a cancelled run may have children to cancel; its
    # callback, when it could not be enqueued before this write)
    unsettled = outbox or record.status is Status.waiting or outcome.status is Status.cancelled
    runs = services().runs
    request = runs.finish_write(
        record,
        {k: v for k, v in fields.items() if v is not None},
        owner=owner,
        lease_seen=lease_seen,
        due_at=now.timestamp() + SETTLE_GRACE_SECONDS if unsettled else None,
        error=outcome.error,
    )
    try:
        if not outcome.usage:
            return runs.finish(request)
        totals = UsageTotals()
        add_up(totals, outcome)
        usage = services().accounts.usage_writes(record.account_id, now.date(), totals)
        failed = runs.commit_through_conflicts([{"Update": request}, *usage])
        if failed[:1] == ["ConditionalCheckFailed"]:
            return None
        if failed:
            raise RuntimeError(f"the run's end was not written: {failed}")
        return runs.get(record.account_id, record.id, consistent=True)
    except Exception:
        fresh = runs.get(record.account_id, record.id, consistent=True)
        if fresh is not None and fresh.ended_by == token:
            return fresh
        raise


def _expiry(now: datetime) -> int:
    """When an ended run's item (and its callback's delivery) expires."""
    return int((now + timedelta(days=services().settings.run_retention_days)).timestamp())


def keep_outcome(record: RunRecord, outcome: Outcome) -> None:
    """Keep an outcome that could not be recorded where `take_over` finds it (the attempt's key)."""
    services().blobs.put(outcome_key(record), outcome.document())


def take_over(record: RunRecord) -> str | None:
    """End a running run whose lease expired, if it must not run again: with the outcome its worker kept
    (`keep_outcome`), cancelled if that was asked for, or failed `worker_lost` when its runnable does not
    retry or it is out of attempts. What was done, or None when it may be executed again."""
    kept = services().blobs.find(outcome_key(record))
    if kept is not None:
        ended = finish_run(record, Outcome.model_validate_json(kept), lease_seen=record.lease_until)
        return "recovered" if ended else "raced"
    agent = agent_holds(record)
    if record.cancel_requested:
        outcome = fail_outcome(CANCELLED, ErrorCode.cancelled, Status.cancelled)
    elif agent and time.time() >= (record.deadline_at or 0):
        reason = timeout_reason(record.timeout_seconds, services().settings.max_async_run_seconds)
        outcome = fail_outcome(reason, ErrorCode.timeout, Status.timeout)
    elif agent and not _run_again(record):
        silent = f"The agent sent no report for heartbeat_seconds={_heartbeat(record)}"
        if record.runnable.get("retry_on_worker_lost", True):
            silent += f", on each of {record.attempt} attempts"
        else:
            silent += " (retry_on_worker_lost: false, so it is not sent again)"
        outcome = fail_outcome(silent, ErrorCode.heartbeat_timeout)
    elif agent:
        return None  # sent again: counted when a worker claims it (logic.execute)
    elif not record.runnable.get("retry_on_worker_lost", True):
        outcome = fail_outcome(
            "The worker executing the run stopped responding, and the runnable is not executed again "
            "(retry_on_worker_lost: false)",
            ErrorCode.worker_lost,
        )
    elif record.attempt >= services().settings.max_attempts:
        outcome = fail_outcome(
            f"The worker stopped responding on each of {record.attempt} attempts", ErrorCode.worker_lost
        )
    else:
        return None
    if agent:
        outcome = with_reported(record, outcome)
        if outcome.error is not None and outcome.error.code != ErrorCode.cancelled:
            count_agent_lost(outcome.error.code)
    ended = finish_run(record, outcome, lease_seen=record.lease_until)
    return outcome.status.value if ended is not None else "raced"


def _run_again(record: RunRecord) -> bool:
    return (
        record.runnable.get("retry_on_worker_lost", True)
        and record.attempt < services().settings.max_attempts
    )


def _heartbeat(record: RunRecord) -> int:
    return heartbeat_seconds(record.runnable, services().settings.agent_heartbeat_seconds)


def with_reported(record: RunRecord, outcome: Outcome) -> Outcome:
    """An agent's run's outcome with what its reports added up to (usage, metadata) and how long it ran."""
    reported = Reported.model_validate(record.reported or {})
    started = record.started_at.timestamp() if record.started_at else time.time()
    return outcome.model_copy(
        update={
            "usage": [*reported.usage, *outcome.usage],
            "metadata": {**reported.metadata, **(outcome.metadata or {})} or None,
            "duration_seconds": outcome.duration_seconds or round(time.time() - started, 3),
        }
    )


def settle_ended(record: RunRecord) -> None:
    """What follows a run's end: give back its concurrency slots (waking waiting runs), cancel the
    children of a cancelled run, enqueue its callback if the end kept it in the sweeper's index (the
    callback is normally enqueued before the end), then take it out of that index. Safe to repeat: the
    sweeper does when the path that ended the run was cut short."""
    if record.slots or record.queued_on:
        admission.release(record)
    if record.status is Status.cancelled and record.child_runs:
        _cancel_children(record)
    if record.callback_unsent:
        start_delivery(record)
    if record.due_at is not None:
        services().runs.clear_due(record.account_id, record.id)


def _cancel_children(parent: RunRecord) -> None:
    """Cancel every child still going, read by id (consistently); a child busy changing state raises, so
    the sweeper settles the parent again."""
    for sequence in range(1, parent.child_runs + 1):
        child = services().runs.get(parent.account_id, child_run_id(parent.id, sequence), consistent=True)
        if child is not None and not child.status.terminal:
            try:
                cancel_run(child.account_id, child.id)
            except Conflict as conflict:
                if conflict.code != "run_terminal":  # it ended meanwhile: nothing to cancel
                    raise


def cancel_run(account_id: str, run_id: str) -> tuple[RunState, bool]:
    """Cancel a run. Returns (state, pending): pending when a running run will end cancelled shortly.

    A pending cancellation is kept: however the run ends from then on, it ends `cancelled` (with the
    outputs it computed, if it computed any)."""
    for _ in range(5):  # a claim may race a cancel of a waiting run; look again
        record = services().runs.get(account_id, run_id, consistent=True)
        if record is None:
            raise NotFound("Run", run_id)
        if record.status is Status.cancelled:
            return run_state(record), False
        if record.status.terminal:
            raise Conflict(f"run {run_id} already ended {record.status}", "run_terminal")
        if record.status is Status.waiting:
            finished = finish_run(record, fail_outcome(CANCELLED, ErrorCode.cancelled, Status.cancelled))
            if finished is not None:
                return run_state(finished), False
        elif record.cancel_requested:
            return run_state(record), True
        elif agent_holds(record):
            if (requested := _cancel_agent_run(record)) is not None:
                return run_state(requested), True
        elif (requested := services().runs.request_cancel(record)) is not None:
            return run_state(requested), True
    raise Conflict(f"run {run_id} is changing state; try again", "run_busy")


def _cancel_agent_run(record: RunRecord) -> RunRecord | None:
    """Ask an agent's run to end cancelled: its lease ends after the grace period (from now), a worker tells the
    agent now (its `cancel_url`), and another ends the run once the grace has passed, whatever the agent
    does (else the sweeper does)."""
    grace = services().settings.agent_cancel_grace_seconds
    requested = services().runs.request_cancel(record, time.time() + grace)
    if requested is not None:
        try:
            services().queues.dispatch(record.account_id, record.id)
            services().queues.dispatch(record.account_id, record.id, delay_seconds=math.ceil(grace) + 1)
        except Exception:  # the agent learns it from its next report's answer
            logger.warning("cancellation not sent to the agent", exc_info=True, extra={"run_id": record.id})
    return requested


MAX_CANCEL_ALL = 200  # runs one request cancels (a few writes each): the rest wait for the next request
CANCEL_ALL_SECONDS = 10.0  # how long one request looks for them, under API Gateway's 29 s


def cancel_runs_of(account_id: str, runnable_id: str) -> tuple[int, bool]:
    """Cancel the runnable's waiting and running runs, newest first: at most MAX_CANCEL_ALL of them,
    looking for CANCEL_ALL_SECONDS at most. Returns how many were cancelled (a run already being cancelled
    is not counted again) and whether more may remain (a limit stopped the search)."""
    query = RunQuery(runnable_id=runnable_id, statuses=frozenset({Status.waiting, Status.running}))
    deadline = time.monotonic() + CANCEL_ALL_SECONDS
    cancelled, cursor = 0, None
    while time.monotonic() < deadline:
        records, cursor = services().runs.list(account_id, query, limit=100, cursor=cursor)
        for record in records:
            if record.cancel_requested:
                continue
            if cancelled == MAX_CANCEL_ALL:
                return cancelled, True
            try:
                cancel_run(account_id, record.id)
                cancelled += 1
            except (Conflict, NotFound):  # it ended (or is changing state) meanwhile
                pass
        if cursor is None:
            return cancelled, False
    return cancelled, True
