"""What an asynchronous agent reports (`POST /v1/run/{id}/report`, domain/agents.py): heartbeats, progress
(state, partial outputs, log lines), usage and metadata, and at last the run's end.

A report is recorded with one conditional write on the run as read (its progress, what it adds up to,
the agent's lease extended), its events then stored as a batch; a final report then ends the run with the
one terminal write every end is. Nothing of a report that is refused (a bad token, bad input, a run that
changed) is recorded. A report that changes nothing and leaves the lease fresh (a heartbeat soon after
the last) writes nothing to the run (only its report-rate counter)."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any

from runplane.domain.access import RateLimit
from runplane.domain.agents import (
    ReportAnswer,
    Reported,
    agent_holds,
    heartbeat_seconds,
    opens,
    token_account,
)
from runplane.domain.errors import Conflict, InvalidRequest, Issue, NotFound, Unauthorized
from runplane.domain.events import MAX_BATCH_BYTES, Progress, callback_event
from runplane.domain.models import MAX_METADATA_BYTES, ModelUsage, Outcome, RunError, RunRecord
from runplane.domain.outputs import checked_outputs
from runplane.domain.reports import Report
from runplane.domain.states import Status
from runplane.logic.callbacks import start_event_delivery
from runplane.logic.ending import finish_run, with_reported
from runplane.logic.keys import count_or_refuse
from runplane.logic.progress import Reporter, store_events
from runplane.logic.services import services
from runplane.observability import logger
from runplane.runnables.context import RunContext, RunFailed
from runplane.runnables.kinds import apply_report

NOT_OPENED = "The run token does not open this run: it is another run's, an earlier attempt's, or not one"


def receive(run_id: str, authorization: str | None, report: Report) -> ReportAnswer:
    """Record `report` for the run the bearer's run token opens; the run as it is then."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    account_id = token_account(token) if scheme.lower() == "bearer" else None
    if account_id is None:
        raise Unauthorized("Missing or invalid run token (Authorization: Bearer rpt_…)")
    settings = services().settings
    ending = f"report:{hashlib.sha256(report.model_dump_json().encode()).hexdigest()[:16]}"
    for tried in range(4):  # another report, the hand-off or a cancellation may change the run meanwhile
        record = services().runs.get(account_id, run_id, consistent=True)
        if record is None:
            raise NotFound("Run", run_id)
        if not opens(record, token):
            raise Unauthorized(NOT_OPENED)
        if not tried:  # counted once the token is the run's: a forged one cannot use up the run's rate
            limit = RateLimit(per_second=settings.report_rate_per_second, burst=settings.report_burst)
            count_or_refuse(f"run#{account_id}#{run_id}", limit)
        if record.status.terminal:
            if record.ended_by == ending:  # this very report ended it; its answer was lost
                return _answer(record)
            raise Conflict(f"run {run_id} already ended {record.status}", "run_terminal")
        if record.status is not Status.running or time.time() >= (record.deadline_at or 0):
            raise Unauthorized("The run token has expired: the run's time is up")
        recorded = _record(record, report, ending)
        if recorded is not None:
            return _answer(recorded)
    raise Conflict(f"run {run_id} is changing state; report again", "run_busy")


class _Collected:
    """What applying a report to a run's context sends: progress for the Reporter, usage, metadata."""

    def __init__(self, reporter: Reporter):
        self.reporter = reporter
        self.usage: list[ModelUsage] = []
        self.metadata: dict[str, Any] = {}

    def __call__(self, kind: str, payload: Any) -> None:
        if kind == "usage":
            self.usage.append(ModelUsage(**payload))
        elif kind == "metadata":
            self.metadata.update(payload)
        else:
            self.reporter.report(kind, payload)


def _record(record: RunRecord, report: Report, ending: str) -> RunRecord | None:
    """Record the report on the run as read; None when the run changed meanwhile (nothing recorded)."""
    settings = services().settings
    collected = _Collected(Reporter(record, settings.max_log_bytes))
    context = RunContext(
        run_id=record.id,
        account_id=record.account_id,
        runnable_id=record.runnable_id,
        attempt=record.attempt,
        deadline=record.deadline_at or 0.0,
        state=record.state or {},
        partial_outputs=record.partial_outputs or {},
        send=collected,
    )
    outputs, error = None, None
    try:
        outputs = apply_report(report, context, strict=True)
    except RunFailed as failure:
        error = RunError(message=failure.message, code=failure.code)
    if collected.reporter.waiting_bytes > MAX_BATCH_BYTES:
        raise InvalidRequest(
            f"a report's log lines may be {MAX_BATCH_BYTES} bytes as stored: send them in several reports",
            "report_too_large",
            [Issue("body.logs", f"at most {MAX_BATCH_BYTES} bytes of lines")],
        )
    final = outputs is not None or error is not None
    # the report the run recorded last, sent again (its answer was lost): its parts are not recorded twice
    repeat = record.last_report == ending
    reported = Reported.model_validate(record.reported or {})
    if final or not repeat:
        reported = reported.plus(collected.usage, collected.metadata)
    _check_totals(reported)
    progress = collected.reporter.take()
    if repeat and progress is not None:  # its events again, in case their put was lost (same seqs),
        after = record.seq - progress.events  # unless a status event came since (then they are not last)
        if all(event["seq"] <= after for event in record.history):
            store_events(record, progress, after=after)
        progress = None
    lease_until = None if final else _lease(record)
    changed = reported.model_dump() != (record.reported or Reported().model_dump())
    written = record
    if progress is not None or lease_until is not None or (changed and not final):
        sent = progress or Progress(at=time.time())
        written = services().runs.record_report(
            record,
            sent,
            lease_until=lease_until,
            reported=None if final else reported.model_dump(mode="json"),
            digest=ending,
        )
        if written is None:
            written = _applied(record, sent, ending)
        if written is None:
            return None
        if progress is not None:
            _call_back(record, written, store_events(written, progress, after=record.seq))
    if not final:
        return written
    status = Status.completed if error is None else Status.failed
    outcome = with_reported(
        written.model_copy(update={"reported": reported.model_dump(mode="json")}),
        checked_outputs(
            Outcome(status=status, outputs=outputs, error=error), record.runnable.get("output_schema")
        ),
    )
    finished = finish_run(written, outcome, owner=written.lease_owner, ended_by=ending)
    if finished is None:
        logger.warning(
            "a final report did not end the run: it changed meanwhile", extra={"run_id": record.id}
        )
    return finished


MAX_MODELS = 50  # models one run's usage names


def _check_totals(reported: Reported) -> None:
    """400 when what a run's reports add up to would outgrow the run: too many models, too much metadata."""
    metadata = len(json.dumps(reported.metadata, separators=(",", ":"), default=str).encode())
    for field, too_much, limit in (
        ("usage", len(reported.usage) > MAX_MODELS, f"{MAX_MODELS} models a run"),
        ("metadata", metadata > MAX_METADATA_BYTES, f"{MAX_METADATA_BYTES} bytes of metadata a run"),
    ):
        if too_much:
            raise InvalidRequest(
                f"the run's reports may add up to at most {limit}",
                "report_too_large",
                [Issue(f"body.{field}", limit)],
            )


def _applied(record: RunRecord, sent: Progress, digest: str) -> RunRecord | None:
    """The run, when the write that failed its condition was applied after all (botocore sent it again
    after a lost answer): its `progress_at` and report digest are this report's."""
    fresh = services().runs.get(record.account_id, record.id, consistent=True)
    if fresh is not None and fresh.progress_at == sent.at and fresh.last_report == digest:
        return fresh
    return None


def _lease(record: RunRecord) -> float | None:
    """The agent's lease extended by a heartbeat (never past the deadline); None when it stays: a worker
    holds the run still, it is being cancelled (its grace runs), or the lease was extended less than a
    third of a heartbeat ago (a cheaper write, or none)."""
    if not agent_holds(record) or record.cancel_requested:
        return None
    heartbeat = heartbeat_seconds(record.runnable, services().settings.agent_heartbeat_seconds)
    until = min(time.time() + heartbeat, record.deadline_at or 0.0)
    return until if until - (record.lease_until or 0.0) >= heartbeat / 3 else None


def _call_back(before: RunRecord, after: RunRecord, events: list) -> None:
    """Event callbacks for a report's events: at most one per report, and none when the run's previous
    report came less than RUNPLANE_CALLBACK_EVENT_SECONDS ago (a burst of reports calls back once)."""
    wanted = after.event_callbacks
    interval = services().settings.callback_event_seconds
    if not wanted or (before.progress_at is not None and time.time() - before.progress_at < interval):
        return
    for event in reversed(events):
        kind = callback_event(event)
        if kind in wanted:
            try:
                start_event_delivery(after, kind, event.seq)
            except Exception:
                logger.warning("event callback not enqueued", exc_info=True, extra={"event": kind})
            return


def _answer(record: RunRecord) -> ReportAnswer:
    def at(epoch: float | None) -> datetime | None:
        return datetime.fromtimestamp(epoch, UTC) if epoch else None

    held = record.status is Status.running and agent_holds(record)
    return ReportAnswer(
        run_id=record.id,
        status=record.status,
        cancel_requested=record.cancel_requested,
        report_by=at(record.lease_until) if held else None,
        deadline=at(record.deadline_at) if record.status is Status.running else None,
    )
