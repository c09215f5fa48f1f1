"""When the sweeper looks at a run: a prompt claim leaves the run's `live` entry as the create wrote it
(no index write), and the sweeper, looking then, finds either a live lease (it looks again when the lease
ends, so a dead worker is still found within a minute of it) or a run still waiting for its first worker
(it waits for the redispatch delay before sending it again)."""

from __future__ import annotations

import time
from typing import Any

import boto3
from runplane.logic import admission, services
from runplane.logic.execute import _claim
from runplane.logic.sweep import sweep

from tests.conftest import Api, drop_dispatches, make_runnable
from tests.integration.test_concurrency import record, start


def live_entry(account_id: str, run_id: str) -> dict[str, Any]:
    """The run's entry in the `live` index, as the index holds it."""
    settings = services.services().settings
    items = boto3.client("dynamodb").scan(TableName=settings.runs_table, IndexName="live")["Items"]
    (entry,) = [item for item in items if item["pk"]["S"].endswith(run_id)]
    return entry


def test_a_prompt_claim_leaves_the_live_entry_as_the_create_wrote_it(
    api: Api, account: Any, env: dict[str, str]
) -> None:
    run_id = start(api, make_runnable(account.account_id, "sleep"), seconds=0)
    drop_dispatches(env)
    created = live_entry(account.account_id, run_id)
    claimed = admission.admit(record(account.account_id, run_id), "a-worker", 30)
    assert claimed is not None
    assert live_entry(account.account_id, run_id) == created
    assert claimed.due_at is not None
    assert claimed.lease_until is not None
    assert claimed.due_at <= claimed.lease_until  # the sweeper looks no later than the lease ends


def test_a_live_lease_at_the_due_time_is_looked_at_again_when_it_ends(
    api: Api, account: Any, env: dict[str, str]
) -> None:
    """A renewal that leaves the due time (it falls in the second half of the new lease) and then stops:
    the sweeper, finding the lease live at the due time, looks again when it ends, and then finds the
    worker gone."""
    run_id = start(api, make_runnable(account.account_id, "sleep"), seconds=0)
    drop_dispatches(env)
    claimed = admission.admit(record(account.account_id, run_id), "a-worker", 30)
    assert claimed is not None
    assert claimed.due_at is not None
    renewed = services.services().runs.renew(claimed, "a-worker", claimed.due_at + 20)
    assert renewed is not None
    assert renewed.lease_until is not None
    assert renewed.due_at == claimed.due_at

    assert sweep(claimed.due_at + 1) == {"lease_live": 1}
    assert record(account.account_id, run_id).due_at == renewed.lease_until
    assert sweep(renewed.lease_until - 5) == {}  # not due again before the lease ends
    assert sweep(renewed.lease_until + 1)["redispatched"] == 1  # its worker stopped renewing it


def test_a_renewal_moves_the_due_time_before_the_sweeper_would_look(
    api: Api, account: Any, env: dict[str, str]
) -> None:
    run_id = start(api, make_runnable(account.account_id, "sleep"), seconds=0)
    drop_dispatches(env)
    claimed = admission.admit(record(account.account_id, run_id), "a-worker", 30)
    assert claimed is not None
    renewed = services.services().runs.renew(claimed, "a-worker", time.time() + 90)  # a long run
    assert renewed is not None
    assert renewed.due_at == renewed.lease_until
    assert sweep(renewed.lease_until - 1) == {}


def test_a_run_still_waiting_at_its_first_look_is_sent_again_after_the_redispatch_delay(
    api: Api, account: Any, env: dict[str, str]
) -> None:
    run_id = start(api, make_runnable(account.account_id, "sleep"), seconds=0)
    drop_dispatches(env)
    created_at = record(account.account_id, run_id).created_at.timestamp()
    settings = services.services().settings
    assert settings.lease_seconds < settings.redispatch_seconds

    assert sweep(created_at + settings.lease_seconds + 1) == {"dispatch_pending": 1}
    assert record(account.account_id, run_id).due_at == created_at + settings.redispatch_seconds
    assert sweep(created_at + settings.redispatch_seconds - 1) == {}
    assert sweep(created_at + settings.redispatch_seconds + 1) == {"redispatched": 1}


def test_a_takeover_claim_racing_the_sweepers_redispatch_is_not_looked_at_after_its_lease(
    api: Api, account: Any, env: dict[str, str]
) -> None:
    """A worker takes over a run whose lease expired (a redelivered dispatch message) while the sweeper
    re-dispatches it (due then in 300 s): the due time the worker read has passed, so its claim sets the
    due time to its lease's end, and the run is not left under a 30 s lease due five minutes later."""
    account_id = account.account_id
    run_id = start(api, make_runnable(account_id, "sleep"), seconds=0)
    drop_dispatches(env)
    runs = services.services().runs
    claimed = admission.admit(record(account_id, run_id), "crashed-worker", 30)
    assert claimed is not None
    assert runs.renew(claimed, "crashed-worker", time.time() - 1) is not None  # its worker died
    found = record(account_id, run_id)  # a redelivered message: a second worker reads the run
    created = found.created_at.timestamp()
    assert sweep(created + 31)["redispatched"] == 1  # meanwhile the sweeper re-dispatches it
    taken = _claim(found, "second-worker")  # its claim, on the run as it read it
    assert taken is not None
    assert taken.due_at == taken.lease_until  # not the sweeper's 300 s
    drop_dispatches(env)  # the sweeper's message finds a live lease: nothing to do
    assert sweep(taken.lease_until + 1).get("redispatched") == 1  # that worker dies too


def test_a_claim_racing_the_dispatch_pending_postpone_is_not_looked_at_after_its_lease(
    api: Api, account: Any, env: dict[str, str]
) -> None:
    """A waiting run's worker reads it; the sweeper, at the run's first look, finds it still waiting and
    postpones it to created + redispatch_seconds; the worker's claim, conditional on the due time it read,
    is tried again on the run as it is now and sets the due time to its lease's end."""
    account_id = account.account_id
    run_id = start(api, make_runnable(account_id, "sleep"), seconds=0)
    drop_dispatches(env)
    settings = services.services().settings
    stale = record(account_id, run_id)  # the worker reads the run its dispatch message names
    created = stale.created_at.timestamp()
    assert sweep(created + settings.lease_seconds + 1) == {"dispatch_pending": 1}
    claimed = admission.admit(stale, "crashed-worker", settings.lease_seconds)
    assert claimed is not None
    assert claimed.lease_until is not None
    stored = record(account_id, run_id)
    assert stored.due_at == stored.lease_until
    assert sweep(claimed.lease_until + 1).get("redispatched") == 1


def test_healthy_long_runs_are_not_due_and_leave_the_sweep_to_a_crashed_run(
    api: Api, account: Any, env: dict[str, str]
) -> None:
    """Renewals move the due time often enough that a run whose worker renews it is never due: it takes
    none of the sweep's `per_sweep` places (800 in production), which stay for the runs that need them.
    Here 16 healthy runs and a sweep of 8 places: the crashed run is re-dispatched within two sweeps of
    its lease's end."""
    account_id = account.account_id
    runnable_id = make_runnable(account_id, "sleep")
    healthy = [start(api, runnable_id, seconds=0) for _ in range(16)]
    crashed = start(api, runnable_id, seconds=0)  # created last: its first look is the latest
    drop_dispatches(env)
    runs = services.services().runs
    workers = {}
    for run_id in healthy:
        claimed = admission.admit(record(account_id, run_id), f"worker-{run_id}", 30)
        assert claimed is not None
        workers[run_id] = claimed
    assert admission.admit(record(account_id, crashed), "crashed-worker", 30) is not None
    lease_end = record(account_id, crashed).lease_until
    assert lease_end is not None
    handled = False
    for k in (1, 2):  # the two sweeps after the crashed run's lease ended
        at = lease_end + 60 * k - 30
        for run_id, held in list(workers.items()):  # the healthy runs' workers keep renewing
            renewed = runs.renew(held, f"worker-{run_id}", at + 30)
            assert renewed is not None
            workers[run_id] = renewed
        sweep(at, per_sweep=8)
        handled = handled or record(account_id, crashed).dispatches > 0
    assert handled, "the crashed run was not re-dispatched in the two sweeps after its lease ended"
