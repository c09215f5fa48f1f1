"""Runs: accept, read, wait for, cancel, list and finish. Shared by HTTP, intake, worker and sweeper."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runplane.adapters.outbound import ForbiddenDestination, UnresolvableHost, check_destination
from runplane.domain.errors import (
    Conflict,
    InsufficientCredits,
    InvalidRequest,
    Issue,
    NotFound,
    RunNotSucceeded,
    RunplaneError,
)
from runplane.domain.events import Reason, recorded, status_event
from runplane.domain.files import FilePart
from runplane.domain.ids import batch_run_id, new_id
from runplane.domain.models import (
    Outcome,
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
from runplane.domain.pricing import add_up
from runplane.domain.states import Status
from runplane.logic.resources import count as count_resource
from runplane.logic.resources import discard as discard_resources
from runplane.logic.run_resources import Resolved
from runplane.logic.run_resources import resolve as resolve_resources
from runplane.logic.runnables import check_timeout, get_runnable
from runplane.logic.services import services
from runplane.observability import count_created, logger

# A run is counted toward its account (in the transaction that stores it) only when the account has a
# credit budget to count it against; without one it is a single conditional PutItem. Each process reads
# whether an account has a budget at most this often: a budget set elsewhere applies to the runs a process
# accepts at most this long after.
BUDGET_SECONDS = 60.0


def _effective_timeout(request: RunRequestFields, runnable: Runnable) -> int | None:
    """Omitted: the runnable's default. Null or < 1: no timeout of its own (the deployment's maximum for
    the runnable still applies: RUNPLANE_MAX_RUN_SECONDS, or RUNPLANE_MAX_ASYNC_RUN_SECONDS for an async
    agent)."""
    value = (
        request.timeout_seconds if "timeout_seconds" in request.model_fields_set else runnable.timeout_seconds
    )
    if value is None or value < 1:
        return None
    check_timeout(value, {"kind": runnable.kind, "config": runnable.config})
    return value


def _check_callback_url(url: str | None) -> None:
    """Refuse a callback URL Runplane would never call, or whose host does not resolve (checked again
    before every attempt)."""
    if url is None:
        return
    try:
        check_destination(url, allow_loopback=services().settings.allow_loopback)
    except ForbiddenDestination as problem:
        if isinstance(problem, UnresolvableHost):
            code, message = (
                "unresolvable_callback_url",
                f"callback_url cannot be used: {problem} (no DNS address)",
            )
        else:
            code, message = "forbidden_callback_url", f"callback_url is not allowed: {problem}"
        raise InvalidRequest(message, code, [Issue("body.callback_url", str(problem))]) from None


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


# DynamoDB takes items up to 400 KB: what a run's item may hold inline, keys and bookkeeping aside
ITEM_BUDGET_BYTES = 350_000


def store_json(document: str, key: str, beside: int = 0) -> tuple[str | None, str | None]:
    """(inline JSON, None) when small enough for the item (which holds `beside` bytes of other JSON),
    else (None, the S3 `key` it was written to)."""
    size = len(document.encode())
    if size <= services().settings.inline_limit_bytes and size + beside <= ITEM_BUDGET_BYTES:
        return document, None
    return None, services().blobs.put(key, document)


def item_json_bytes(record: RunRecord) -> int:
    """How much JSON the run's item holds (what an outcome stored inline must fit beside)."""
    documents = [
        record.payload_json or "",
        *(json.dumps(value) for value in (record.runnable, record.metadata, record.history)),
        *(json.dumps(value) for value in (record.state, record.partial_outputs) if value is not None),
    ]
    return sum(len(d.encode()) for d in documents) + len(json.dumps(record.callback_headers or {}).encode())


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
    files: Sequence[FilePart] = (),
    runnable: Runnable | None = None,
) -> Accepted:
    """`create_run`, once per account and idempotency key within 24 hours (the same files included).

    The key is bound to a run id before the run is created, so concurrent duplicates agree on one id and
    the run's own conditional put makes exactly one of them create it; a retry after a crash in between
    creates the run the binding promised. A `runnable` passed in was fetched by the caller; the inputs are
    checked against it here.
    """
    if runnable is not None:
        _check_inputs(runnable, request.inputs)
    create = {"created_by": created_by, "files": files, "runnable": runnable}
    if idempotency_key is None:
        return Accepted(create_run(account_id, runnable_id, request, run_id=run_id, **create), False)
    fingerprint = _fingerprint(runnable_id, request, files)
    bound_run, fresh = _bind_key(account_id, idempotency_key, fingerprint, run_id or new_id())
    record = create_run(account_id, runnable_id, request, run_id=bound_run, **create)
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


def _fingerprint(
    runnable_id: str, asked: RunRequestFields | list[RunRequestFields], files: Sequence[FilePart] = ()
) -> str:
    """A digest of one request (in the form its keys were always bound with, its files' digests added when
    it has files) or of a batch."""

    def fields(request: RunRequestFields) -> dict[str, Any]:
        # the run request's own fields only: an intake message's envelope (ids, the key) is not the request
        return request.model_dump(mode="json", include=set(RunRequestFields.model_fields))

    if isinstance(asked, list):
        document = {"runnable_id": runnable_id, "batch": [fields(request) for request in asked]}
    else:
        document = {"runnable_id": runnable_id, **fields(asked)}
        if files:
            document["files"] = [
                {
                    "field": f.field,
                    "filename": f.filename,
                    "content_type": f.content_type,
                    "sha256": f.sha256,
                }
                for f in files
            ]
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
    files: Sequence[FilePart] = (),
) -> RunRecord:
    """Accept a run (waiting) and dispatch it, charging the account's budget in the same transaction (a
    run is charged once, and never without being stored). With a caller-chosen `run_id`, repeating is
    harmless: an existing run is returned. A `runnable` passed in was fetched, and the inputs checked
    against it, by the caller. `files` are stored in S3 under the new run, each the resource its field
    names (see `run_resources.resolve`)."""
    chosen_id = run_id is not None
    existing = services().runs.get(account_id, run_id, consistent=True) if chosen_id else None
    if existing is not None and not existing.rejected:  # a rejected message's placeholder is replaced
        _dispatch_if_waiting(existing)
        return existing
    if runnable is None:
        runnable = get_runnable(account_id, runnable_id)
        _check_inputs(runnable, request.inputs)
    _check_callback_url(request.callback_url)
    if request.callback_events and not request.callback_url:
        raise InvalidRequest(
            "callback_events needs a callback_url",
            "callback_events_without_url",
            [Issue("body.callback_events", "given without callback_url")],
        )
    run_id = run_id or new_id()
    resolved = resolve_resources(account_id, run_id, request.resources, files)
    try:
        record = _store_run(
            account_id, run_id, runnable_id, runnable, request, resolved, created_by, parent_run_id
        )
    except Exception:
        discard_resources(resolved.made)  # the run was not stored: what was made for it goes too
        raise
    for made in resolved.made:
        count_resource(made)
    _dispatch_if_waiting(record)
    return record


def _store_run(
    account_id: str,
    run_id: str,
    runnable_id: str,
    runnable: Runnable,
    request: RunRequestFields,
    resolved: Resolved,
    created_by: str | None,
    parent_run_id: str | None,
) -> RunRecord:
    """The run, counted toward the account's budget in the same transaction when it has one; the stored
    run when a duplicate made it."""
    settings = services().settings
    now = utcnow()
    payload = json.dumps({"inputs": request.inputs, "resources": resolved.seen}, separators=(",", ":"))
    payload_json, payload_ref = store_json(payload, f"{account_id}/{run_id}/payload.json")
    record = RunRecord(
        account_id=account_id,
        id=run_id,
        runnable_id=runnable_id,
        runnable=runnable.model_dump(
            include={"name", "kind", "config", "output_schema", "retry_on_worker_lost"}
        ),
        status=Status.waiting,
        created_at=now,
        created_by=created_by,
        metadata=request.metadata,
        parent_run_id=parent_run_id,
        experiment_id=request.experiment_id,
        experiment_candidate_id=request.experiment_candidate_id,
        traced=_traced(request, runnable),
        timeout_seconds=_effective_timeout(request, runnable),
        callback_url=request.callback_url,
        callback_headers=request.callback_headers,
        payload_json=payload_json,
        payload_ref=payload_ref,
        callback_events=request.callback_events,
        # the sweeper's first look: no later than a prompt claim's lease ends, so the claim leaves it
        due_at=now.timestamp() + min(settings.redispatch_seconds, settings.lease_seconds),
    )
    record = record.model_copy(update=recorded(record, status_event(record, Reason.accepted)))
    runs = services().runs
    try:
        if services().accounts.budgeted(account_id, BUDGET_SECONDS):
            writes = [runs.create_write(record), services().accounts.charge_write(account_id)]
            failed = runs.commit_through_conflicts(writes)
        else:
            failed = [] if runs.create(record) else ["ConditionalCheckFailed"]
    except Exception:
        # a transaction can fail after DynamoDB applied it (a lost answer): the run as stored tells
        stored = runs.get(account_id, run_id, consistent=True)
        if stored is None or stored.rejected:
            raise
        failed = [] if stored.created_at == record.created_at else ["ConditionalCheckFailed"]
    if failed[:1] == ["ConditionalCheckFailed"]:  # created by a concurrent duplicate (and charged once)
        logger.debug("run already exists; not created again", extra={"run_id": run_id})
        record = runs.get(account_id, run_id, consistent=True) or record
    elif failed[1:2] == ["ConditionalCheckFailed"]:
        raise InsufficientCredits()
    elif failed:
        raise RuntimeError(f"the run was not created: {failed}")
    else:
        count_created()
    return record


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


def get_runs(account_id: str, run_ids: list[str], *, with_inputs: bool = False) -> dict[str, RunState]:
    """The account's runs among `run_ids`, by id (read consistently: an end just seen is there)."""
    records = services().runs.get_many(account_id, run_ids, consistent=True)
    return {record.id: run_state(record, with_inputs=with_inputs) for record in records}


def cursor_at(account_id: str, query: RunQuery, state: RunState) -> str:
    """The cursor of `list_runs(account_id, query, ...)` for the page after `state`, one of its runs."""
    return services().runs.cursor_at(account_id, query, state.id, state.created_at)


def cursor_after(account_id: str, query: RunQuery, limit: int, cursor: str | None) -> str | None:
    """The cursor after the page of `list_runs(account_id, query, limit, cursor)`, without reading it."""
    return services().runs.skip(account_id, query, limit=limit, cursor=cursor)
