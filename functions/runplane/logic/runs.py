"""Runs: accept, read, wait for, cancel, list and finish. Shared by HTTP, intake, worker and sweeper."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from runplane.adapters.outbound import ForbiddenDestination, check_destination
from runplane.domain.errors import (
    Conflict,
    InsufficientCredits,
    InvalidRequest,
    Issue,
    NotFound,
    RunNotSucceeded,
    RunplaneError,
)
from runplane.domain.ids import batch_run_id, new_id
from runplane.domain.models import (
    Outcome,
    RunError,
    Runnable,
    RunPage,
    RunQuery,
    RunRecord,
    RunRequestFields,
    RunState,
    UsageTotals,
    to_run_state,
    utcnow,
)
from runplane.domain.pricing import add_up, priced
from runplane.domain.states import ErrorCode, Status
from runplane.logic import admission
from runplane.logic.callbacks import start_delivery
from runplane.logic.runnables import get_runnable
from runplane.logic.services import services
from runplane.observability import count_created, count_finished, logger

# How long an ended run waits in the sweeper's index for `settle_ended` before the sweeper does it.
SETTLE_GRACE_SECONDS = 60


def _effective_timeout(request: RunRequestFields, default: int | None) -> int | None:
    """Omitted: the runnable's default. Null or < 1: no timeout (the platform maximum still applies)."""
    value = request.timeout_seconds if "timeout_seconds" in request.model_fields_set else default
    if value is None or value < 1:
        return None
    limit = services().settings.max_run_seconds
    if value > limit:
        raise InvalidRequest(
            f"timeout_seconds may be at most {limit} on this deployment",
            "timeout_too_long",
            [Issue("body.timeout_seconds", f"at most {limit}")],
        )
    return value


def _check_callback_url(url: str | None) -> None:
    """Refuse a callback URL Runplane would never call (checked again before every attempt)."""
    if url is None:
        return
    try:
        check_destination(url, allow_loopback=services().settings.allow_loopback)
    except ForbiddenDestination as problem:
        raise InvalidRequest(
            f"callback_url is not allowed: {problem}",
            "forbidden_callback_url",
            [Issue("body.callback_url", str(problem))],
        ) from None


def _check_inputs(runnable: Runnable, inputs: dict[str, Any]) -> None:
    """The runnable's input_schema, then what its kind needs from inputs (a prompt's placeholders)."""
    if runnable.input_schema is not None:
        from jsonschema import Draft202012Validator

        problems = Draft202012Validator(runnable.input_schema).iter_errors(inputs)
        issues = [
            Issue(".".join(["body.inputs", *map(str, problem.absolute_path)]), problem.message)
            for problem in sorted(problems, key=lambda e: list(e.absolute_path))
        ]
        if issues:
            raise InvalidRequest(
                "inputs do not match the runnable's input_schema", "invalid_inputs", issues[:20]
            )
    from runplane.runnables.kinds import kind

    module = kind(runnable.kind)
    if (check := getattr(module, "check_inputs", None)) and (
        issues := check(module.Config(**runnable.config), inputs)
    ):
        raise InvalidRequest(
            f"inputs lack what the {runnable.kind} runnable needs", "invalid_inputs", issues[:20]
        )


def _traced(request: RunRequestFields, runnable: Runnable) -> bool:
    """The run's telemetry_strategy, else the runnable's, else the deployment's default."""
    for strategy in (request.telemetry_strategy, runnable.telemetry_strategy):
        if strategy != "default":
            return strategy == "force"
    return services().settings.trace_runs


def _store_json(account_id: str, run_id: str, name: str, document: str) -> tuple[str | None, str | None]:
    """(inline JSON, None) when small enough for the item, else (None, S3 key)."""
    if len(document.encode()) <= services().settings.inline_limit_bytes:
        return document, None
    return None, services().blobs.put(f"{account_id}/{run_id}/{name}.json", document)


def _load_json(inline: str | None, ref: str | None) -> str | None:
    return inline if ref is None else services().blobs.get(ref)


IDEMPOTENCY_WINDOW_SECONDS = 24 * 3600


@dataclass(frozen=True)
class Accepted:
    record: RunRecord
    replayed: bool  # an earlier request with the same idempotency key made this run


def start_run(
    account_id: str,
    runnable_id: str,
    request: RunRequestFields,
    *,
    created_by: str | None,
    idempotency_key: str | None = None,
    run_id: str | None = None,
) -> Accepted:
    """`create_run`, once per account and idempotency key within 24 hours.

    The key is bound to a run id before the run is created, so concurrent duplicates agree on one id and
    the run's own conditional put makes exactly one of them create it; a retry after a crash in between
    creates the run the binding promised.
    """
    if idempotency_key is None:
        return Accepted(
            create_run(account_id, runnable_id, request, created_by=created_by, run_id=run_id), False
        )
    fingerprint = _fingerprint(runnable_id, request)
    bound_run, fresh = _bind_key(account_id, idempotency_key, fingerprint, run_id or new_id())
    record = create_run(account_id, runnable_id, request, created_by=created_by, run_id=bound_run)
    return Accepted(record, replayed=not fresh)


def start_runs(
    account_id: str,
    runnable_id: str,
    requests: list[RunRequestFields],
    *,
    created_by: str | None,
    idempotency_key: str | None = None,
) -> list[str]:
    """Several runs of one runnable; their ids, in order. Every request's inputs are checked before the
    first run starts, so bad input starts none. With a key, the key is bound to the whole batch and the
    runs' ids derive from that binding, so a retried batch returns (and charges) the same runs.

    An error part-way carries `started`: the ids of the runs accepted before it (they run as usual).
    """
    runnable = get_runnable(account_id, runnable_id)
    for index, request in enumerate(requests):
        try:
            _check_inputs(runnable, request.inputs)
        except InvalidRequest as problem:
            issues = [
                Issue(i.field.replace("body.inputs", f"body.inputs.{index}", 1), i.message)
                for i in problem.issues
            ]
            raise InvalidRequest(f"item {index}: {problem.message}", problem.code, issues) from None
    run_ids: list[str | None] = [None] * len(requests)
    if idempotency_key is not None:
        fingerprint = _fingerprint(runnable_id, requests)
        batch_id, _ = _bind_key(account_id, idempotency_key, fingerprint, new_id())
        run_ids = [batch_run_id(batch_id, index) for index in range(len(requests))]
    started: list[str] = []
    try:
        for request, run_id in zip(requests, run_ids, strict=True):
            record = create_run(
                account_id, runnable_id, request, created_by=created_by, run_id=run_id, runnable=runnable
            )
            started.append(record.id)
    except RunplaneError as error:
        error.started = started
        raise
    return started


def _bind_key(account_id: str, key: str, fingerprint: str, proposed_id: str) -> tuple[str, bool]:
    """The id bound to an idempotency key (`proposed_id` unless bound before) and whether it is new;
    409 when the key was bound to a different request."""
    now = time.time()
    bound_id, bound_fingerprint, fresh = services().runs.remember_idempotency(
        account_id, key, proposed_id, fingerprint, now, now + IDEMPOTENCY_WINDOW_SECONDS
    )
    if bound_fingerprint != fingerprint:
        raise Conflict(
            "This Idempotency-Key was used for a different request in the last 24 hours",
            "idempotency_key_reused",
        )
    return bound_id, fresh


def _fingerprint(runnable_id: str, asked: RunRequestFields | list[RunRequestFields]) -> str:
    """A digest of one request (in the form its keys were always bound with) or of a batch."""

    def fields(request: RunRequestFields) -> dict[str, Any]:
        # the run request's own fields only: an intake message's envelope (ids, the key) is not the request
        return request.model_dump(mode="json", include=set(RunRequestFields.model_fields))

    if isinstance(asked, list):
        document = {"runnable_id": runnable_id, "batch": [fields(request) for request in asked]}
    else:
        document = {"runnable_id": runnable_id, **fields(asked)}
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def create_run(
    account_id: str,
    runnable_id: str,
    request: RunRequestFields,
    *,
    created_by: str | None,
    run_id: str | None = None,
    parent_run_id: str | None = None,
    runnable: Runnable | None = None,
) -> RunRecord:
    """Accept a run (waiting) and dispatch it, charging the account's budget. With a caller-chosen
    `run_id`, repeating is harmless: an existing run is returned, and charged once. A `runnable` passed
    in was fetched, and the inputs checked against it, by the caller."""
    chosen_id = run_id is not None
    if chosen_id and (existing := services().runs.get(account_id, run_id, consistent=True)):
        _dispatch_if_waiting(existing)
        return existing
    if runnable is None:
        runnable = get_runnable(account_id, runnable_id)
        _check_inputs(runnable, request.inputs)
    _check_callback_url(request.callback_url)
    settings = services().settings
    run_id = run_id or new_id()
    now = utcnow()
    payload = json.dumps(
        {"inputs": request.inputs, "resources": [r.model_dump(mode="json") for r in request.resources]},
        separators=(",", ":"),
    )
    payload_json, payload_ref = _store_json(account_id, run_id, "payload", payload)
    record = RunRecord(
        account_id=account_id,
        id=run_id,
        runnable_id=runnable_id,
        runnable=runnable.model_dump(include={"name", "kind", "config", "output_schema"}),
        status=Status.waiting,
        created_at=now,
        created_by=created_by,
        metadata=request.metadata,
        parent_run_id=parent_run_id,
        experiment_id=request.experiment_id,
        experiment_candidate_id=request.experiment_candidate_id,
        traced=_traced(request, runnable),
        timeout_seconds=_effective_timeout(request, runnable.timeout_seconds),
        callback_url=request.callback_url,
        callback_headers=request.callback_headers,
        payload_json=payload_json,
        payload_ref=payload_ref,
        due_at=now.timestamp() + settings.redispatch_seconds,
    )
    if not services().accounts.charge_run(account_id):
        if chosen_id and (existing := services().runs.get(account_id, run_id, consistent=True)):
            return existing  # a concurrent duplicate created it meanwhile (and was charged)
        raise InsufficientCredits()
    try:
        created = services().runs.create(record)
    except Exception:
        if not _stored(record):  # a put can fail after DynamoDB applied it (a timeout)
            services().accounts.refund_run(account_id)
        raise
    if created:
        count_created()
    else:  # created meanwhile by a concurrent duplicate, which was charged for it
        services().accounts.refund_run(account_id)
        record = services().runs.get(account_id, run_id, consistent=True) or record
        logger.info("run already exists; not created again", extra={"run_id": run_id})
    _dispatch_if_waiting(record)
    return record


def _stored(record: RunRecord) -> bool:
    try:
        return services().runs.get(record.account_id, record.id, consistent=True) is not None
    except Exception:  # cannot tell: the put most likely failed outright
        return False


def _dispatch_if_waiting(record: RunRecord) -> None:
    if record.status is not Status.waiting:
        return
    try:
        services().queues.dispatch(record.account_id, record.id)
    except Exception:  # the run is stored: the sweeper dispatches it when it falls due
        logger.exception("dispatch failed; the sweeper will retry", extra={"run_id": record.id})


def load_payload(record: RunRecord) -> dict[str, Any]:
    return json.loads(_load_json(record.payload_json, record.payload_ref) or "{}")


def _outcome(record: RunRecord) -> Outcome | None:
    document = _load_json(record.outcome_json, record.outcome_ref)
    return Outcome.model_validate_json(document) if document else None


def _inputs(record: RunRecord, wanted: bool) -> dict[str, Any] | None:
    return load_payload(record).get("inputs", {}) if wanted else None


def run_state(record: RunRecord, *, with_inputs: bool = False) -> RunState:
    return to_run_state(record, _outcome(record), _inputs(record, with_inputs))


def get_run(account_id: str, run_id: str, *, consistent: bool = False, with_inputs: bool = False) -> RunState:
    record = services().runs.get(account_id, run_id, consistent=consistent)
    if record is None:
        raise NotFound("Run", run_id)
    return run_state(record, with_inputs=with_inputs)


def wait_for_run(account_id: str, run_id: str, seconds: float) -> RunState:
    """Poll with a short backoff until the run is terminal or `seconds` have passed."""
    deadline = time.monotonic() + seconds
    pause = 0.05
    while True:
        record = services().runs.get(account_id, run_id, consistent=True)
        if record is None:
            raise NotFound("Run", run_id)
        remaining = deadline - time.monotonic()
        if record.status.terminal or remaining <= 0:
            return run_state(record)
        time.sleep(min(pause, remaining))
        pause = min(pause * 1.5, 1.0)


def completed(state: RunState) -> RunState:
    """`state`, if the run completed: 409 while it has not ended, 422 when it ended otherwise."""
    if not state.status.terminal:
        raise Conflict(f"Run {state.id} has not ended yet; poll its status", "run_not_ended")
    if state.status is not Status.completed:
        error = state.result.error if state.result else None
        raise RunNotSucceeded(state.id, state.status, error.message if error else None)
    return state


def answer_sync(accepted: Accepted, requested_wait: float | None = None) -> RunState:
    """A synchronous request's run state: at once for a replayed request, else once the run ends or the
    wait is over (`_sync_wait`)."""
    record = accepted.record
    if accepted.replayed:
        return get_run(record.account_id, record.id, consistent=True)
    return wait_for_run(record.account_id, record.id, _sync_wait(record.timeout_seconds, requested_wait))


def _sync_wait(timeout_seconds: int | None, requested: float | None) -> float:
    """How long a synchronous request waits: min(deployment's sync wait, run timeout, caller's wish)."""
    limits = [services().settings.sync_wait_seconds]
    if timeout_seconds:
        limits.append(timeout_seconds + 1.0)  # a moment for the worker to record the timeout
    if requested is not None:
        limits.append(requested)
    return min(limits)


def finish_run(
    record: RunRecord,
    outcome: Outcome,
    *,
    owner: str | None = None,
    lease_seen: float | None = None,
) -> RunRecord | None:
    """Record a terminal outcome with one conditional write; None if the run moved meanwhile."""
    now = utcnow()
    outcome = priced(outcome, services().settings.prices)
    document = outcome.model_dump_json(exclude_none=True)
    outcome_json, outcome_ref = _store_json(record.account_id, record.id, "outcome", document)
    fields: dict[str, Any] = {
        "status": outcome.status.value,
        "completed_at": now,
        "expires_at": int((now + timedelta(days=services().settings.run_retention_days)).timestamp()),
        "outcome_json": outcome_json,
        "outcome_ref": outcome_ref,
    }
    if outcome.status is Status.failed:
        fields["failed_at"] = now
    # the run stays in the sweeper's index until what follows its end is done (a waiting run may be
    # joining a concurrency queue as it is cancelled; a cancelled run may have children to cancel)
    unsettled = (
        record.callback_url
        or record.slots
        or record.status is Status.waiting
        or outcome.status is Status.cancelled
    )
    finished = services().runs.finish(
        record.account_id,
        record.id,
        record.status,
        {k: v for k, v in fields.items() if v is not None},
        owner=owner,
        lease_seen=lease_seen,
        due_at=now.timestamp() + SETTLE_GRACE_SECONDS if unsettled else None,
    )
    if finished is not None:
        count_finished(outcome.status, outcome.duration_seconds)
        if outcome.usage:
            _record_usage(record, now, outcome)
        try:
            settle_ended(finished)
        except Exception:
            logger.exception("ended run not settled yet; the sweeper will", extra={"run_id": record.id})
    return finished


def _record_usage(record: RunRecord, ended: datetime, outcome: Outcome) -> None:
    """Count the run's usage toward its account's day and its spend (credits)."""
    totals = UsageTotals()
    add_up(totals, outcome)
    try:
        services().accounts.add_usage(record.account_id, ended.date(), totals)
    except Exception:  # the run's own outcome holds the usage; only the account's tally misses it
        logger.exception("account usage not recorded", extra={"run_id": record.id})


def settle_ended(record: RunRecord) -> None:
    """What follows a run's end: give back its concurrency slots (waking waiting runs), enqueue its
    callback, cancel the children of a cancelled run, then take it out of the sweeper's index. Safe to
    repeat: the sweeper does when the path that ended the run was cut short."""
    if record.slots or record.queued_on:
        admission.release(record)
    if record.status is Status.cancelled and record.child_runs:
        _cancel_children(record)
    if record.callback_url:
        start_delivery(record)
    if record.due_at is not None:
        services().runs.clear_due(record.account_id, record.id)


def _cancel_children(parent: RunRecord) -> None:
    """Cancel every child still going, read by id (consistently); a child busy changing state raises, so
    the sweeper settles the parent again."""
    from runplane.logic.children import child_run_id

    for sequence in range(1, parent.child_runs + 1):
        child = services().runs.get(parent.account_id, child_run_id(parent.id, sequence), consistent=True)
        if child is not None and not child.status.terminal:
            try:
                cancel_run(child.account_id, child.id)
            except Conflict as conflict:
                if conflict.code != "run_terminal":  # it ended meanwhile: nothing to cancel
                    raise


def fail_outcome(message: str, code: ErrorCode, status: Status = Status.failed) -> Outcome:
    return Outcome(status=status, error=RunError(message=message, code=code))


def cancel_run(account_id: str, run_id: str) -> tuple[RunState, bool]:
    """Cancel a run. Returns (state, pending): pending when a running run will end cancelled shortly."""
    for _ in range(5):  # a claim may race a cancel of a waiting run; look again
        record = services().runs.get(account_id, run_id, consistent=True)
        if record is None:
            raise NotFound("Run", run_id)
        if record.status is Status.cancelled:
            return run_state(record), False
        if record.status.terminal:
            raise Conflict(f"run {run_id} already ended {record.status}", "run_terminal")
        if record.status is Status.waiting:
            finished = finish_run(
                record, fail_outcome("Run was cancelled on request", ErrorCode.cancelled, Status.cancelled)
            )
            if finished is not None:
                return run_state(finished), False
        elif (requested := services().runs.request_cancel(account_id, run_id)) is not None:
            return run_state(requested), True
    raise Conflict(f"run {run_id} is changing state; try again", "run_busy")


def list_runs(
    account_id: str, query: RunQuery, limit: int, cursor: str | None, *, with_inputs: bool = False
) -> RunPage:
    """A page of runs, newest first, with the sums of their usage."""
    records, next_cursor = services().runs.list(account_id, query, limit=limit, cursor=cursor)
    totals = UsageTotals()
    items = []
    for record in records:
        outcome = _outcome(record)
        if outcome is not None:
            add_up(totals, outcome)
        items.append(to_run_state(record, outcome, _inputs(record, with_inputs)))
    return RunPage(items=items, next_cursor=next_cursor, totals=totals)
