"""Concurrency slots under duplicate dispatches, lost answers and crashes: a run that starts holds its
slot, a slot nobody holds is given back, and the end of a run wakes the runs waiting for its room."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from runplane.adapters.concurrency import attempt_token
from runplane.domain.models import Outcome, RunRecord
from runplane.domain.states import Status
from runplane.logic import admission, services
from runplane.logic.admission import runnable_scope
from runplane.logic.ending import finish_run
from runplane.logic.sweep import sweep

from tests.conftest import Api, drain, drop_dispatches, make_runnable
from tests.integration.test_concurrency import quick_sweeps, record, start, waiting_behind_a_lost_run

__all__ = ["quick_sweeps"]  # the module's autouse fixture


def holders(scope: str) -> set[str]:
    return set(services.services().concurrency.holders(scope)[0])


def duplicate_update(monkeypatch: pytest.MonkeyPatch, picks: Callable[[dict[str, Any]], bool]) -> list[int]:
    """UpdateItem requests `picks` chooses are sent twice, the second answer returned: a response lost on
    the way that botocore retried (a plain UpdateItem has no idempotency token)."""
    client = services.services().concurrency.client
    assert client is services.services().runs.client  # the adapters share one client
    real = client.update_item
    duplicated: list[int] = []

    def update_item(**request: Any) -> Any:
        if not picks(request):
            return real(**request)
        duplicated.append(1)
        real(**request)
        return real(**request)

    monkeypatch.setattr(client, "update_item", update_item)
    return duplicated


def _is_claim(request: dict[str, Any]) -> bool:
    names = set(request.get("ExpressionAttributeNames", {}).values())
    return "lease_owner" in names and "admissions" in names and "queued_on" in names


def _is_release(request: dict[str, Any]) -> bool:
    return request.get("UpdateExpression", "").startswith("REMOVE #h")


def test_a_duplicate_dispatch_that_loses_the_claim_does_not_take_the_winners_slot_away(
    api: Api, account: Any, env: dict[str, str]
) -> None:
    """Both workers hold the slot for the run; the one that loses the claim leaves it to the winner."""
    sleeper = make_runnable(account.account_id, "sleep", max_concurrency=1)
    scope = runnable_scope(account.account_id, sleeper)
    first = start(api, sleeper, seconds=0)
    drop_dispatches(env)
    as_read: RunRecord = record(account.account_id, first)  # both workers read the waiting run

    assert admission.admit(as_read, "worker-a", 30) is not None  # A claims it
    assert admission.admit(as_read, "worker-b", 30) is None  # B's claim fails: the run moved
    assert record(account.account_id, first).status == "running"
    assert first in holders(scope), "the running run no longer holds its slot"

    second = start(api, sleeper, seconds=0)
    drop_dispatches(env)
    assert admission.admit(record(account.account_id, second), "worker-c", 30) is None, (
        "a second run started beside the first under max_concurrency=1"
    )


def test_a_claim_whose_answer_was_lost_keeps_its_slot(
    api: Api, account: Any, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim is a plain UpdateItem: botocore's retry of a claim that was applied fails its condition,
    and the worker, finding the claim its own, runs the run with the slot it took."""
    sleeper = make_runnable(account.account_id, "sleep", max_concurrency=1)
    scope = runnable_scope(account.account_id, sleeper)
    first = start(api, sleeper, seconds=0)
    drop_dispatches(env)
    duplicated = duplicate_update(monkeypatch, _is_claim)

    claimed = admission.admit(record(account.account_id, first), "worker-a", 30)
    assert duplicated, "the claim was not a plain UpdateItem"
    assert claimed is not None
    assert claimed.lease_owner == "worker-a"
    assert first in holders(scope), "the run executes without holding its slot"


def test_a_slot_taken_by_a_run_cancelled_before_its_claim_is_given_back(
    api: Api, account: Any, env: dict[str, str]
) -> None:
    """A worker takes the slot and crashes before the claim; the run is then cancelled while waiting, never
    having listed the slot: the sweeper's recheck gives the holder back and the queue starts."""
    sleeper = make_runnable(account.account_id, "sleep", max_concurrency=1)
    scope = runnable_scope(account.account_id, sleeper)
    crashed = start(api, sleeper, seconds=0)
    drop_dispatches(env)
    assert services.services().concurrency.take(
        scope, 0, 1, crashed, attempt_token(time.time() - 120), queued=False
    )
    reply = api.post(f"/v1/run/{crashed}/cancel")
    assert (reply.status, reply.json()["status"]) == (200, "cancelled")

    queued = start(api, sleeper, seconds=0)
    drain("worker")
    assert record(account.account_id, queued).status == "waiting"
    for later in (4, 8, admission.STALE_SECONDS + 8, admission.STALE_SECONDS + 16):
        sweep(time.time() + later)
        drain("worker")
    assert crashed not in holders(scope), "the cancelled run's holder is never given back"
    assert record(account.account_id, queued).status == "completed"


def test_a_release_whose_answer_was_lost_still_wakes_the_waiting_runs(
    api: Api, account: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """botocore's retry of an applied release fails its condition: the answer still tells that runs wait,
    and the end wakes them rather than leaving them to the recheck (90 s by default)."""
    holder, queued = waiting_behind_a_lost_run(api, account.account_id)
    duplicated = duplicate_update(monkeypatch, _is_release)
    admission.release(record(account.account_id, holder))
    assert duplicated
    client = services.services().concurrency.client
    monkeypatch.delattr(client, "update_item")  # the class's own method again
    drain("worker")
    assert record(account.account_id, queued).status == "completed"


def test_a_duplicate_dispatch_after_the_run_ended_leaves_its_slot_taken(
    api: Api, account: Any, env: dict[str, str]
) -> None:
    """A duplicate dispatch's worker read the run while it was waiting; the run is claimed by another
    worker, runs and ends (its slots given back) before the duplicate takes its slots: the duplicate's
    take makes a new holder, its claim fails, and it gives back every slot it took (an ended run holds
    none, though it still lists them), so the runnable's next run starts at once."""
    runnable_id = make_runnable(account.account_id, "sleep", max_concurrency=1)
    first = start(api, runnable_id, seconds=0)
    drop_dispatches(env)
    stale = record(account.account_id, first)  # the duplicate's worker reads the run: waiting
    winner = admission.admit(record(account.account_id, first), "winner", 30)
    assert winner is not None
    ended = finish_run(winner, Outcome(status=Status.completed, outputs={}), owner="winner")
    assert ended is not None
    assert ended.status is Status.completed
    assert admission.admit(stale, "duplicate", 30) is None  # it finds the run ended
    scope = runnable_scope(account.account_id, runnable_id)
    holders, _ = services.services().concurrency.holders(scope)
    assert first not in holders, "the ended run still holds the runnable's slot"
    second = start(api, runnable_id, seconds=0)
    drop_dispatches(env)
    assert admission.admit(record(account.account_id, second), "worker", 30) is not None
