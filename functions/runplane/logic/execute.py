"""The worker: claim a dispatched run, execute its runnable under a lease, record the outcome."""

from __future__ import annotations

import json
import secrets
import time

from runplane.domain.models import RunRecord
from runplane.domain.states import ErrorCode, Status
from runplane.logic.admission import admit
from runplane.logic.runs import fail_outcome, finish_run, load_payload
from runplane.logic.services import services
from runplane.observability import logger
from runplane.runnables import registry
from runplane.runnables.python import Verdict, execute


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


def _run(record: RunRecord, owner: str):  # -> Outcome | None
    settings = services().settings
    registry.load(settings.runnable_packages)
    function = registry.lookup(record.runnable["config"]["function"])
    if function is None:
        return fail_outcome(
            f"python runnable {record.runnable['config']['function']!r} is not registered in this worker",
            ErrorCode.runnable_unavailable,
        )
    payload = load_payload(record)
    context = registry.RunContext(
        run_id=record.id,
        account_id=record.account_id,
        runnable_id=record.runnable_id,
        attempt=record.attempt,
        resources={r["name"]: r["resource"] for r in payload.get("resources", [])},
    )
    if record.timeout_seconds:
        limit, reason = record.timeout_seconds, f"Run exceeded timeout_seconds={record.timeout_seconds}"
    else:
        limit = settings.max_run_seconds
        reason = f"Run exceeded the platform maximum of {limit} seconds"

    def heartbeat() -> Verdict:
        renewed = services().runs.renew(
            record.account_id, record.id, owner, time.time() + settings.lease_seconds
        )
        if renewed is None:
            return Verdict.lost
        return Verdict.cancel if renewed.cancel_requested else Verdict.go_on

    return execute(
        function,
        payload.get("inputs", {}),
        context,
        limit_seconds=limit,
        limit_reason=reason,
        heartbeat_seconds=settings.heartbeat_seconds,
        on_heartbeat=heartbeat,
    )


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
