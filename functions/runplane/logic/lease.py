"""A worker's lease on a run: renewed while it works (each renewal writes the progress that waits), and
how an outcome is recorded under it through transient errors."""

from __future__ import annotations

import time
from functools import partial
from typing import Any

from runplane.adapters.aws import is_permanent
from runplane.domain.events import Progress
from runplane.domain.models import Outcome, RunRecord
from runplane.domain.states import ErrorCode, Status
from runplane.logic.callbacks import signing_secrets
from runplane.logic.ending import fail_outcome, finish_run, keep_outcome
from runplane.logic.event_callbacks import EventCallbacks
from runplane.logic.progress import Reporter, store_events
from runplane.logic.resources import download_url
from runplane.logic.runs import load_payload
from runplane.logic.services import services
from runplane.observability import logger
from runplane.runnables.context import RunContext
from runplane.runnables.resources import ResourceFile, load_model, run_directory
from runplane.runnables.supervise import Verdict

# Time the worker keeps for itself: to keep an outcome it could not record before its lease (or the
# invocation) runs out.
FINISH_MARGIN_SECONDS = 5.0


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


def record_outcome(outcome: Outcome, lease: Lease, *, until: float) -> None:
    """Record the outcome (after the progress that waits), trying again through transient errors while
    the lease (renewed between tries) and the invocation last; then keep it for `take_over` rather than
    lose it."""
    write_progress(lease)
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
                logger.debug(
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


def write_progress(lease: Lease) -> None:
    """Write what progress waits (a batch a write) before the end, through a few transient errors."""
    failures = 0
    while (lease.reporter.pending or lease.unsure) and failures < 3:
        verdict = lease.renew()
        if verdict is Verdict.lost:
            return
        failures += verdict is Verdict.unsure


def read_payload(record: RunRecord, lease: Lease) -> dict:
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


def run_resource(record: RunRecord, seen: dict[str, Any]) -> ResourceFile:
    """A resource as the attempt's code sees it."""
    settings = services().settings
    return ResourceFile(
        run_directory(record.id, record.attempt),
        settings.payload_bucket,
        seen,
        partial(download_url, seen, settings.resource_url_seconds),
    )


def run_context(record: RunRecord, payload: dict, deadline: float) -> RunContext:
    """What the run's code (or its agent's envelope) sees of the run."""
    if payload.get("resources"):
        load_model()  # before the run's process is forked
    return RunContext(
        run_id=record.id,
        account_id=record.account_id,
        runnable_id=record.runnable_id,
        attempt=record.attempt,
        deadline=deadline,
        resources={r["name"]: run_resource(record, r["resource"]) for r in payload.get("resources", [])},
        metadata=record.metadata,
        output_schema=record.runnable.get("output_schema"),
        state=record.state or {},
        partial_outputs=record.partial_outputs or {},
        signing_secrets=lambda: signing_secrets(record.account_id),
    )
