"""The worker: claim a dispatched run, execute its runnable under a lease, record the outcome."""

from __future__ import annotations

import json
import secrets
import time
from functools import partial

from pydantic import ValidationError

from runplane import definitions as defs
from runplane.adapters.aws import is_permanent
from runplane.domain.events import Progress, RunEvent
from runplane.domain.models import Outcome, RunError, RunRecord
from runplane.domain.states import ErrorCode, Status
from runplane.logic import children
from runplane.logic.admission import admit
from runplane.logic.callbacks import signing_secrets
from runplane.logic.ending import fail_outcome, finish_run, keep_outcome, take_over
from runplane.logic.event_callbacks import EventCallbacks
from runplane.logic.progress import Reporter, store_events
from runplane.logic.runs import load_payload
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
        logger.info("dispatch ignored: run has ended", extra={"run_id": run_id, "found": bool(found)})
        return
    if found.status is Status.waiting:
        record = admit(found, owner, settings.lease_seconds)
    elif (found.lease_until or 0) > time.time():
        logger.info("dispatch ignored: a worker holds the run", extra={"run_id": run_id})
        return
    elif ended := take_over(found):
        logger.info("run taken over", extra={"run_id": run_id, "action": ended})
        return
    else:  # it keeps the slots it started with
        record = _claim(found, owner)
    if record is None:  # queued for a slot, or another worker got there first
        logger.info("run not claimed", extra={"run_id": run_id, "status": found.status})
        return
    logger.set_correlation_id(run_id)
    logger.info("run claimed", extra={"attempt": record.attempt, "account_id": account_id})
    lease = Lease(record, owner, Reporter(record, settings.max_log_bytes))
    lease.callbacks.saw(record, [RunEvent.model_validate(record.history[-1])] if record.history else [])
    outcome = _run(record, lease)
    if outcome is None:
        logger.warning("lease lost while running; another worker or the sweeper owns the run")
        return
    _record(outcome, lease, until=started + defs.WORKER_TIMEOUT_SECONDS - FINISH_MARGIN_SECONDS)


# Time the worker keeps for itself: to keep an outcome it could not record before its lease (or the
# invocation) runs out.
FINISH_MARGIN_SECONDS = 5.0


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


class Lease:
    """A worker's hold on a run: renewed while the run executes (each renewal writes the progress that
    waits and sends the event callbacks that are due), tolerant of transient errors until the lease itself
    is at risk. `record` is the run as this worker last wrote it. It is the supervisor's ProgressSink."""

    def __init__(self, record: RunRecord, owner: str, reporter: Reporter):
        self.record = record
        self.owner = owner
        self.reporter = reporter
        self.callbacks = EventCallbacks(record, services().settings.callback_event_seconds)
        self.until = record.lease_until or 0.0
        self.unsure: Progress | None = None  # written by a renewal that failed: perhaps applied

    def report(self, kind: str, payload: object) -> None:
        self.reporter.report(kind, payload)

    def due(self) -> float | None:
        return min((t for t in (self.reporter.due(), self.callbacks.due()) if t is not None), default=None)

    def at_risk(self) -> bool:
        """The lease runs out before a retry could help: give up (renewals) or keep the outcome."""
        margin = min(FINISH_MARGIN_SECONDS, services().settings.lease_seconds / 6)
        return time.time() + margin >= self.until

    def renew(self) -> Verdict:
        settings = services().settings
        until: float | None = time.time() + settings.lease_seconds
        if self.reporter.pending and until - self.until < settings.heartbeat_seconds:
            until = None  # renewed less than a heartbeat ago: write the progress alone (a cheaper write)
        progress = None
        try:
            self._settle()
            progress = self.reporter.take()
            renewed, after = self._renew(until, progress)
        except Exception:
            self.unsure = self.unsure or progress
            if self.at_risk():
                logger.exception("lease renewals failed until the lease ran out; giving the run up")
                return Verdict.lost
            logger.warning("lease renewal failed; trying again", exc_info=True)
            return Verdict.unsure
        if renewed is None:
            return Verdict.lost
        stored = []
        if progress is not None:
            self.reporter.written(progress)
            stored = store_events(renewed, progress, after=after)
        self.record, self.until = renewed, until or self.until
        self.callbacks.saw(renewed, stored)
        return Verdict.cancel if renewed.cancel_requested else Verdict.go_on

    def _settle(self) -> None:
        """Look whether the progress of a renewal that failed was written (its `progress_at` is on the
        run): then store its events, else write it again with the next renewal. Never written twice."""
        unsure, self.unsure = self.unsure, None
        if unsure is None:
            return
        try:
            fresh = services().runs.get(self.record.account_id, self.record.id, consistent=True)
        except Exception:
            self.unsure = unsure
            raise
        if fresh is not None and fresh.lease_owner == self.owner and fresh.progress_at == unsure.at:
            self.reporter.written(unsure)
            self.callbacks.saw(fresh, store_events(fresh, unsure, after=self.record.seq))
            self.record = fresh
        else:
            self.reporter.restore(unsure)

    def _renew(self, until: float | None, progress: Progress | None) -> tuple[RunRecord | None, int]:
        """One renewal, and the seq its progress's events follow. When the condition failed, the run is
        read: the write was applied after all (botocore retried it after a lost answer), or another event
        (a cancellation) took the seqs first — then once more, after it."""
        runs = services().runs
        seen = self.record.seq
        renewed = runs.renew(self.record, self.owner, until, progress)
        if renewed is not None or progress is None:
            return renewed, seen
        fresh = runs.get(self.record.account_id, self.record.id, consistent=True)
        if fresh is None or fresh.status is not Status.running or fresh.lease_owner != self.owner:
            return None, seen
        if fresh.progress_at == progress.at:
            return fresh, seen
        self.record = fresh
        return runs.renew(fresh, self.owner, until, progress), fresh.seq


def _record(outcome: Outcome, lease: Lease, *, until: float) -> None:
    """Record the outcome (after the progress that waits), trying again through transient errors while
    the lease (renewed between tries) and the invocation last; then keep it for `take_over` rather than
    lose it."""
    _write_progress(lease)
    pause = 0.2
    while True:
        record = lease.record
        try:
            finished = finish_run(record, outcome, owner=lease.owner)
        except Exception as error:
            already_failed = outcome.error is not None and outcome.error.code == ErrorCode.unstorable_outcome
            if is_permanent(error) and not already_failed:
                logger.exception("outcome cannot be stored; the run fails instead")
                outcome = fail_outcome(
                    f"The run's outcome could not be stored: {error}", ErrorCode.unstorable_outcome
                )
                continue
            logger.warning("outcome not recorded yet; trying again", exc_info=True)
        else:
            if finished is None:
                logger.warning(
                    "run changed while executing; outcome not recorded", extra={"status": outcome.status}
                )
            else:
                logger.info(
                    "run finished", extra={"status": finished.status, "duration": outcome.duration_seconds}
                )
            return
        if lease.renew() is Verdict.lost and not lease.at_risk():
            logger.warning("lease lost before the outcome was recorded")
            return
        if lease.at_risk() or time.time() + pause >= until:
            break
        time.sleep(pause)
        pause = min(pause * 2, 5.0)
    try:
        keep_outcome(lease.record, outcome)
        logger.error("outcome kept in S3; the sweeper records it", extra={"status": outcome.status})
    except Exception:
        logger.exception("outcome neither recorded nor kept; the run is executed again or fails worker_lost")


def _write_progress(lease: Lease) -> None:
    """Write what progress waits (a batch a write) before the end, through a few transient errors."""
    failures = 0
    while (lease.reporter.pending or lease.unsure) and failures < 3:
        verdict = lease.renew()
        if verdict is Verdict.lost:
            return
        failures += verdict is Verdict.unsure


def _run(record: RunRecord, lease: Lease) -> Outcome | None:
    settings = services().settings
    registry.load(settings.runnable_packages)
    spec = record.runnable
    module = kind(spec["kind"])
    try:
        config = module.Config.model_validate(spec["config"])
    except ValidationError as problem:
        return fail_outcome(f"the runnable's config is no longer valid: {problem}", ErrorCode.invalid_config)
    payload = _read_payload(record, lease)
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
        state=record.state or {},
        partial_outputs=record.partial_outputs or {},
        signing_secrets=lambda: signing_secrets(record.account_id),
    )

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
            on_heartbeat=lease.renew,
            answer=partial(children.answer, record),
            progress=lease,
        )
    if outcome is None:
        return None
    return _checked_outputs(outcome, spec.get("output_schema")).model_copy(
        update={"telemetry_span_id": span_id}
    )


def _read_payload(record: RunRecord, lease: Lease) -> dict:
    """The run's inputs and resources, read again through transient errors while the lease holds."""
    pause = 0.2
    while True:
        try:
            return load_payload(record)
        except Exception:
            if lease.at_risk():
                raise
            logger.warning("payload not read yet; trying again", exc_info=True)
        time.sleep(pause)
        pause = min(pause * 2, 2.0)


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
