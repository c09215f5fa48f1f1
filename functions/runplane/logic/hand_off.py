"""The worker's part in an asynchronous agent's run (domain/agents.py): give the attempt its run token,
send the run to the agent, and once the agent accepted it, hand the run's lease to the agent and return.
From then on the agent's reports (logic/agent_reports.py) keep the run going and end it; the sweeper ends
it when the agent goes silent or its time is up (logic/ending.take_over). A worker also tells an agent
that its run was cancelled."""

from __future__ import annotations

import math
import time
from functools import partial

from pydantic import ValidationError

from runplane.domain.agents import agent_owner, heartbeat_seconds, new_run_token, timeout_reason, token_hash
from runplane.domain.models import RunRecord
from runplane.domain.states import ErrorCode, Status
from runplane.logic import children
from runplane.logic.ending import fail_outcome
from runplane.logic.lease import Lease, read_payload, record_outcome, run_context
from runplane.logic.services import services
from runplane.observability import logger
from runplane.runnables.context import RunFailed
from runplane.runnables.kinds import kind
from runplane.runnables.supervise import Limits, supervise


def hand_off_run(lease: Lease, *, until: float) -> None:
    """Send the claimed run to its agent and hand it over; an agent that does not accept it (an error,
    a non-2xx answer) fails the run as a sync call would. `until`: when the invocation must be done."""
    record, settings = lease.record, services().settings
    module = kind(record.runnable["kind"])
    try:
        config = module.Config.model_validate(record.runnable["config"])
    except ValidationError as problem:
        outcome = fail_outcome(
            f"the runnable's config is no longer valid: {problem}", ErrorCode.invalid_config
        )
        record_outcome(outcome, lease, until=until)
        return
    # the run's time counts from its first attempt
    limit = record.timeout_seconds or settings.max_async_run_seconds
    deadline = record.deadline_at or time.time() + limit
    token = new_run_token(record.account_id)
    armed = services().runs.arm(record, token_hash(token), deadline)
    if armed is None:
        logger.warning("lease lost before the run was sent to its agent")
        return
    lease.record = armed
    heartbeat = heartbeat_seconds(record.runnable, settings.agent_heartbeat_seconds)
    agent = {
        "mode": "async",
        "report_url": f"{settings.public_url.rstrip('/')}/v1/run/{record.id}/report",
        "run_token": token,
        "heartbeat_seconds": heartbeat,
    }
    inputs = read_payload(armed, lease).get("inputs", {})
    reason = timeout_reason(record.timeout_seconds, settings.max_async_run_seconds)
    outcome = supervise(
        lambda ctx: module.hand_off(config, inputs, ctx, agent) or {},
        run_context(armed, {}, deadline),
        isolated=False,
        limits=Limits(max(0.0, deadline - time.time()), reason, settings.heartbeat_seconds),
        on_heartbeat=lease.renew,
        answer=partial(children.answer, armed),
        progress=lease,
    )
    if outcome is None:
        logger.warning("lease lost while the agent was called")
    elif outcome.status is Status.completed:
        _hand_over(lease, heartbeat, deadline)
    else:
        record_outcome(outcome, lease, until=until)


def _hand_over(lease: Lease, heartbeat: int, deadline: float) -> None:
    """Give the run's lease to the agent that accepted it. A report may come first (it changes the run),
    or the write's answer may be lost (it is looked for): tried a few times, then the lease runs out and
    the run is sent again (a new attempt, a new token)."""
    settings, runs = services().settings, services().runs
    record, handed = lease.record, None
    pause = 0.2
    for _ in range(10):
        seconds = settings.agent_cancel_grace_seconds if record.cancel_requested else heartbeat
        try:
            handed = runs.hand_off(record, min(time.time() + seconds, deadline))
            if handed is not None:
                break
            fresh = runs.get(record.account_id, record.id, consistent=True)
        except Exception:
            logger.warning("run not handed to its agent yet; trying again", exc_info=True)
            time.sleep(pause)
            pause *= 2
            continue
        if fresh is None or fresh.status.terminal:
            logger.debug("the agent ended the run before it was handed over")
            return
        if fresh.lease_owner == agent_owner(record.attempt):
            handed = fresh  # our write, its answer lost
            break
        if fresh.lease_owner != lease.owner:
            logger.warning("lease lost before the run was handed to its agent")
            return
        record = fresh  # a report or a cancellation came first
    if handed is None:
        logger.error("run not handed to its agent; it is sent again once its lease runs out")
        return
    logger.debug("run handed to its agent", extra={"until": handed.lease_until, "deadline": deadline})
    if handed.cancel_requested:
        tell_cancel(handed)
        grace = math.ceil(settings.agent_cancel_grace_seconds) + 1
        services().queues.dispatch(handed.account_id, handed.id, delay_seconds=grace)


def tell_cancel(record: RunRecord) -> None:
    """Tell the agent holding `record` that it is cancelled, once (the run ends `cancelled` when its
    agent reports the end, or when the grace period has passed whatever the agent does)."""
    if not services().runs.note_cancel_notified(record):
        return
    module = kind(record.runnable["kind"])
    context = run_context(record, {}, record.deadline_at or time.time())
    try:
        module.cancel(module.Config.model_validate(record.runnable["config"]), context)
    except (RunFailed, ValidationError) as problem:
        logger.warning("agent not told of the cancellation", extra={"problem": str(problem)})
