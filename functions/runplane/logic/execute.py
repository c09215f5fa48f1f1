"""The worker: claim a dispatched run, execute its runnable under a lease, record the outcome."""

from __future__ import annotations

import json
import secrets
import time
from functools import partial

from pydantic import ValidationError

from runplane import definitions as defs
from runplane.domain.agents import agent_holds, is_async
from runplane.domain.events import RunEvent
from runplane.domain.models import Outcome, RunRecord
from runplane.domain.outputs import checked_outputs
from runplane.domain.states import ErrorCode, Status
from runplane.logic import children
from runplane.logic.admission import admit
from runplane.logic.ending import fail_outcome, finish_run, take_over
from runplane.logic.hand_off import hand_off_run, tell_cancel
from runplane.logic.lease import FINISH_MARGIN_SECONDS, Lease, read_payload, record_outcome, run_context
from runplane.logic.progress import Reporter
from runplane.logic.services import services
from runplane.observability import count_agent_lost, logger, run_span
from runplane.runnables import registry
from runplane.runnables.kinds import kind
from runplane.runnables.resources import remove_run_files
from runplane.runnables.supervise import Limits, supervise


def parse_dispatch(body: str) -> tuple[str, str]:
    message = json.loads(body)
    return message["account_id"], message["run_id"]


def process_dispatch(body: str) -> None:
    """Execute the run a dispatch message names, at most once per lease.

    A waiting run starts when the concurrency limits over it have room, else it waits in a queue (and is
    dispatched again when a run ends). A duplicate message for a run that is running under a live lease,
    or has ended, is a no-op. A running run whose lease expired (its worker vanished) is taken over:
    ended with the outcome its worker kept, or as its runnable's `retry_on_worker_lost` says, or executed
    again.
    """
    started = time.time()
    account_id, run_id = parse_dispatch(body)
    settings = services().settings
    owner = secrets.token_hex(8)
    found = services().runs.get(account_id, run_id, consistent=True)
    if found is None or found.status.terminal:
        logger.debug("dispatch ignored: run has ended", extra={"run_id": run_id, "found": bool(found)})
        return
    if found.status is Status.waiting:
        record = admit(found, owner, settings.lease_seconds)
    elif (found.lease_until or 0) > time.time():
        if agent_holds(found) and found.cancel_requested:
            tell_cancel(found)
        else:
            logger.debug("dispatch ignored: a worker holds the run", extra={"run_id": run_id})
        return
    elif ended := take_over(found):
        logger.info("run taken over", extra={"run_id": run_id, "action": ended})
        return
    else:  # it keeps the slots it started with
        record = _claim(found, owner)
        if record is not None and agent_holds(found):
            count_agent_lost(ErrorCode.heartbeat_timeout)  # its agent went silent: sent again
    if record is None:  # queued for a slot, or another worker got there first
        logger.debug("run not claimed", extra={"run_id": run_id, "status": found.status})
        return
    logger.set_correlation_id(run_id)
    logger.debug("run claimed", extra={"attempt": record.attempt, "account_id": account_id})
    lease = Lease(record, owner, Reporter(record, settings.max_log_bytes))
    lease.callbacks.saw(record, [RunEvent.model_validate(record.history[-1])] if record.history else [])
    until = started + defs.WORKER_TIMEOUT_SECONDS - FINISH_MARGIN_SECONDS
    if is_async(record.runnable):
        hand_off_run(lease, until=until)
        return
    outcome = _run(record, lease)
    if outcome is None:
        logger.warning("lease lost while running; another worker or the sweeper owns the run")
        return
    record_outcome(outcome, lease, until=until)


def _claim(found: RunRecord, owner: str) -> RunRecord | None:
    """Claim a running run whose lease expired; a claim applied though its answer was lost is kept."""
    settings = services().settings
    now = time.time()
    runs = services().runs
    try:
        claimed = runs.claim(found, owner, now, now + settings.lease_seconds, settings.max_attempts)
    except Exception:
        claimed = None
        logger.warning("claim failed; looking whether it was applied", exc_info=True)
    if claimed is not None:
        return claimed
    fresh = runs.get(found.account_id, found.id, consistent=True)
    return fresh if fresh is not None and fresh.lease_owner == owner else None


def _run(record: RunRecord, lease: Lease) -> Outcome | None:
    settings = services().settings
    registry.load(settings.runnable_packages)
    spec = record.runnable
    module = kind(spec["kind"])
    try:
        config = module.Config.model_validate(spec["config"])
    except ValidationError as problem:
        return fail_outcome(f"the runnable's config is no longer valid: {problem}", ErrorCode.invalid_config)
    payload = read_payload(record, lease)
    inputs = payload.get("inputs", {})
    if record.timeout_seconds:
        limit, reason = record.timeout_seconds, f"Run exceeded timeout_seconds={record.timeout_seconds}"
    else:
        limit = settings.max_run_seconds
        reason = f"Run exceeded the platform maximum of {limit} seconds"
    context = run_context(record, payload, time.time() + limit)

    limits = Limits(
        seconds=limit,
        reason=reason,
        heartbeat_seconds=settings.heartbeat_seconds,
        cancel_grace_seconds=settings.cancel_grace_seconds if module.ISOLATED else 0.0,
    )
    with run_span(record.id, record.runnable_id, spec["kind"], record.traced) as span_id:
        try:
            outcome = supervise(
                lambda ctx: module.invoke(config, inputs, ctx),
                context,
                isolated=module.ISOLATED,
                limits=limits,
                on_heartbeat=lease.renew,
                answer=partial(children.answer, record),
                progress=lease,
            )
        finally:
            remove_run_files(record.id, record.attempt)
    if outcome is None:
        return None
    return checked_outputs(outcome, spec.get("output_schema")).model_copy(
        update={"telemetry_span_id": span_id}
    )


def fail_dead_lettered(body: str) -> None:
    """A dispatch message exhausted its receives: fail the run unless a live worker still holds it (a run
    whose worker vanished is taken over first)."""
    account_id, run_id = parse_dispatch(body)
    record = services().runs.get(account_id, run_id, consistent=True)
    if record is None or record.status.terminal:
        return
    if record.status is Status.running and ((record.lease_until or 0) > time.time() or take_over(record)):
        return
    outcome = fail_outcome("The run could not be dispatched to a worker", ErrorCode.dispatch_failed)
    finish_run(record, outcome, lease_seen=record.lease_until)
