"""The sweeper: finds runs nobody is working on and re-dispatches or ends them.

Runs carry a due time in a sparse index while someone may need to act: waiting runs come due if never
claimed, running runs when their lease expires (their worker stopped renewing it), ended runs whose
slots, children or callback (one that could not be enqueued before the end) were not seen to in time. Runs waiting for a concurrency slot have no due time: the scopes
they wait for are rechecked instead (`admission.recheck`), which also gives back slots a crash left taken.

Every item is handled on its own: one that fails is logged, counted (`SweepErrors`, which has an alarm),
postponed and skipped, so every other due item is still handled in the same sweep.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

from runplane import definitions as defs
from runplane.domain.models import RunRecord
from runplane.domain.states import Status
from runplane.logic import admission, callbacks
from runplane.logic.ending import settle_ended, take_over
from runplane.logic.services import services
from runplane.observability import count_sweep_error, logger

T = TypeVar("T")

# How long a run whose handling failed waits before the sweeper looks at it again.
RETRY_FAILED_SECONDS = 60


def sweep(now: float | None = None, per_sweep: int = 800) -> Counter[str]:
    """One sweep: the `per_sweep` runs due longest, whichever shards they are in (one account's runs are
    all in one), then each shard's overdue callbacks and concurrency rechecks, its share of `per_sweep`."""
    now = time.time() if now is None else now
    actions: Counter[str] = Counter()
    shards = [str(shard) for shard in range(defs.DUE_SHARDS)]
    per_shard = max(1, per_sweep // len(shards))
    due = [run for shard in shards for run in _read(actions, services().runs.due, shard, now, per_sweep)]
    for account_id, run_id, due_at in sorted(due, key=lambda run: run[2])[:per_sweep]:
        try:
            record = services().runs.get(account_id, run_id, consistent=True)
            if record is not None:
                actions[_settle(record, due_at, now)] += 1
        except Exception:
            _failed(actions, "run not swept", run_id=run_id)
            _postpone(account_id, run_id, due_at, now)
    for shard in shards:
        for account_id, run_id, delivery_id, due_at in _read(
            actions, callbacks.overdue, shard, now, per_shard
        ):
            try:
                actions["callback_requeued"] += callbacks.requeue(
                    account_id, run_id, delivery_id, due_at, now
                )
            except Exception:
                _failed(actions, "overdue callback not requeued", delivery_id=delivery_id)
        for scope_id, seen in _read(actions, admission.due_rechecks, shard, now, per_shard):
            try:
                actions["slots_given_back"] += admission.recheck(scope_id, seen, now)
                actions["scopes_rechecked"] += 1
            except Exception:
                _failed(actions, "concurrency scope not rechecked", scope=scope_id)
    actions = +actions  # drop zero counts
    if actions:
        logger.info("sweep", extra={"actions": dict(actions)})
    return actions


def _read(actions: Counter[str], query: Callable[[str, float, int], list[T]], *args: Any) -> list[T]:
    """One of the sweeper's index queries; nothing (counted as an error) when it fails."""
    try:
        return query(*args)
    except Exception:
        _failed(actions, f"{query.__name__} not read", shard=args[0])
        return []


def _failed(actions: Counter[str], message: str, **about: str) -> None:
    logger.exception(f"sweep: {message}; skipped", extra=about)
    count_sweep_error()
    actions["errors"] += 1


def _postpone(account_id: str, run_id: str, due_at: float, now: float) -> None:
    """Move a run that could not be handled back in its shard, so it does not hold up the ones behind."""
    try:
        services().runs.postpone(account_id, run_id, due_at, now + RETRY_FAILED_SECONDS)
    except Exception:
        logger.exception("sweep: run not postponed", extra={"run_id": run_id})


def _settle(record: RunRecord, due_at: float, now: float) -> str:
    settings = services().settings
    if record.status is Status.running:
        if (lease_until := record.lease_until or 0) > now:  # renewed since: look when the lease ends
            services().runs.postpone(record.account_id, record.id, due_at, lease_until)
            return "lease_live"
        if ended := take_over(record):
            return ended
    elif record.status.terminal:  # ended, what follows not yet done
        settle_ended(record)
        return "settled"
    elif (first := record.created_at.timestamp() + settings.redispatch_seconds) > now:
        services().runs.postpone(record.account_id, record.id, due_at, first)  # its message may be queued
        return "dispatch_pending"
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
