"""The sweeper: finds runs nobody is working on and re-dispatches or ends them.

Runs carry a due time in a sparse index while someone may need to act: waiting runs come due if never
claimed, running runs when their lease expires (their worker stopped renewing it), ended runs whose
slots or callback were not seen to in time. Runs waiting for a concurrency slot are not in it: the scopes
they wait for are rechecked instead (`admission.recheck`).
"""

from __future__ import annotations

import time
from collections import Counter

from runplane import definitions as defs
from runplane.domain.models import RunRecord
from runplane.domain.states import ErrorCode, Status
from runplane.logic import admission
from runplane.logic.callbacks import requeue_overdue
from runplane.logic.runs import fail_outcome, finish_run, settle_ended
from runplane.logic.services import services
from runplane.observability import logger


def sweep(now: float | None = None, per_shard: int = 100) -> Counter[str]:
    now = time.time() if now is None else now
    actions: Counter[str] = Counter()
    for shard in range(defs.DUE_SHARDS):
        for account_id, run_id in services().runs.due(str(shard), now, per_shard):
            record = services().runs.get(account_id, run_id, consistent=True)
            if record is not None:
                actions[_settle(record, now)] += 1
        actions["callback_requeued"] += requeue_overdue(str(shard), now, per_shard)
        actions["scopes_rechecked"] += admission.recheck(str(shard), now, per_shard)
    actions = +actions  # drop zero counts
    if actions:
        logger.info("sweep", extra={"actions": dict(actions)})
    return actions


def _settle(record: RunRecord, now: float) -> str:
    settings = services().settings
    if record.status is Status.running:
        if (record.lease_until or 0) > now:
            return "lease_live"
        if record.cancel_requested:
            finish_run(
                record,
                fail_outcome("Run was cancelled on request", ErrorCode.cancelled, Status.cancelled),
                lease_seen=record.lease_until,
            )
            return "cancelled"
        if record.attempt >= settings.max_attempts:
            message = f"The worker stopped responding on each of {record.attempt} attempts"
            finish_run(record, fail_outcome(message, ErrorCode.worker_lost), lease_seen=record.lease_until)
            return "failed"
    elif record.status.terminal:  # ended, what follows not yet done
        settle_ended(record)
        return "settled"
    rescheduled = services().runs.reschedule(
        record.account_id,
        record.id,
        record.status,
        now + settings.redispatch_seconds,
        lease_seen=record.lease_until if record.status is Status.running else None,
    )
    if rescheduled is None:
        return "raced"
    services().queues.dispatch(record.account_id, record.id)
    return "redispatched"
