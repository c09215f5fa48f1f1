"""The worker: claim a dispatched run, execute its runnable under a lease, record the outcome."""

from __future__ import annotations

import json
import secrets
import time
from functools import partial

from pydantic import ValidationError

from runplane.domain.models import Outcome, RunError, RunRecord
from runplane.domain.states import ErrorCode, Status
from runplane.logic import children
from runplane.logic.admission import admit
from runplane.logic.callbacks import signing_secrets
from runplane.logic.runs import fail_outcome, finish_run, load_payload
from runplane.logic.services import services
from runplane.observability import logger, run_span
from runplane.runnables import registry
from runplane.runnables.context import RunContext
from runplane.runnables.kinds import kind
from runplane.runnables.supervise import Limits, Verdict, supervise


def parse_dispatch(body: str) -> tuple[str, str]:
    message = json.loads(body)
    return message["account_id"], message["run_id"]


def process_dispatch(body: str) -> None:
    """Execute the run a dispatch message names, at most once per lease.

    A waiting run starts when the concurrency limits over it have room, else it waits in a queue (and is
    dispatched again when a run ends). A duplicate message for a run that is running under a live lease,
    or has ended, is a no-op.
    """
    account_id, run_id = parse_dispatch(body)
    settings = services().settings
    owner = secrets.token_hex(8)
    found = services().runs.get(account_id, run_id, consistent=True)
    if found is None or found.status.terminal:
        logger.info("dispatch ignored: run has ended", extra={"run_id": run_id, "found": bool(found)})
        return
    if found.status is Status.waiting:
        record = admit(found, owner, settings.lease_seconds)
    else:  # running: its worker stopped renewing the lease; it keeps the slots it started with
        now = time.time()
        record = services().runs.claim(
            account_id, run_id, owner, now, now + settings.lease_seconds, settings.max_attempts
        )
    if record is None:  # queued for a slot, or another worker got there first
        logger.info("run not claimed", extra={"run_id": run_id, "status": found.status})
        return
    logger.set_correlation_id(run_id)
    logger.info("run claimed", extra={"attempt": record.attempt, "account_id": account_id})
    outcome = _run(record, owner)
    if outcome is None:
        logger.warning("lease lost while running; another worker or the sweeper owns the run")
    elif finish_run(record, outcome, owner=owner) is None:
        logger.warning("run changed while executing; outcome not recorded", extra={"status": outcome.status})
    else:
        logger.info("run finished", extra={"status": outcome.status, "duration": outcome.duration_seconds})


def _run(record: RunRecord, owner: str) -> Outcome | None:
    settings = services().settings
    registry.load(settings.runnable_packages)
    spec = record.runnable
    module = kind(spec["kind"])
    try:
        config = module.Config.model_validate(spec["config"])
    except ValidationError as problem:
        return fail_outcome(f"the runnable's config is no longer valid: {problem}", ErrorCode.invalid_config)
    payload = load_payload(record)
    inputs = payload.get("inputs", {})
    if record.timeout_seconds:
        limit, reason = record.timeout_seconds, f"Run exceeded timeout_seconds={record.timeout_seconds}"
    else:
        limit = settings.max_run_seconds
        reason = f"Run exceeded the platform maximum of {limit} seconds"
    context = RunContext(
        run_id=record.id,
        account_id=record.account_id,
        runnable_id=record.runnable_id,
        attempt=record.attempt,
        deadline=time.time() + limit,
        resources={r["name"]: r["resource"] for r in payload.get("resources", [])},
        metadata=record.metadata,
        output_schema=spec.get("output_schema"),
        signing_secrets=lambda: signing_secrets(record.account_id),
    )

    def heartbeat() -> Verdict:
        renewed = services().runs.renew(
            record.account_id, record.id, owner, time.time() + settings.lease_seconds
        )
        if renewed is None:
            return Verdict.lost
        return Verdict.cancel if renewed.cancel_requested else Verdict.go_on

    limits = Limits(
        seconds=limit,
        reason=reason,
        heartbeat_seconds=settings.heartbeat_seconds,
        cancel_grace_seconds=settings.cancel_grace_seconds if module.ISOLATED else 0.0,
    )
    with run_span(record.id, record.runnable_id, spec["kind"], record.traced) as span_id:
        outcome = supervise(
            lambda ctx: module.invoke(config, inputs, ctx),
            context,
            isolated=module.ISOLATED,
            limits=limits,
            on_heartbeat=heartbeat,
            answer=partial(children.answer, record),
        )
    if outcome is None:
        return None
    return _checked_outputs(outcome, spec.get("output_schema")).model_copy(
        update={"telemetry_span_id": span_id}
    )


def _checked_outputs(outcome: Outcome, schema: dict | None) -> Outcome:
    """A completed run's outputs must match the runnable's output_schema, else the run fails."""
    if schema is None or outcome.status is not Status.completed:
        return outcome
    from jsonschema import Draft202012Validator

    problem = next(iter(Draft202012Validator(schema).iter_errors(outcome.outputs)), None)
    if problem is None:
        return outcome
    where = ".".join(["outputs", *map(str, problem.absolute_path)])
    error = RunError(
        message=f"outputs do not match the output_schema: {where}: {problem.message}",
        code=ErrorCode.invalid_output,
    )
    return outcome.model_copy(update={"status": Status.failed, "error": error})


def fail_dead_lettered(body: str) -> None:
    """A dispatch message exhausted its receives: fail the run unless a live worker still holds it."""
    account_id, run_id = parse_dispatch(body)
    record = services().runs.get(account_id, run_id, consistent=True)
    if record is None or record.status.terminal:
        return
    lease_live = record.status is Status.running and (record.lease_until or 0) > time.time()
    if lease_live:
        return
    outcome = fail_outcome("The run could not be dispatched to a worker", ErrorCode.dispatch_failed)
    finish_run(record, outcome, lease_seen=record.lease_until)
