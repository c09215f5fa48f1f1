"""Concurrency limits per runnable and per account: runs beyond a limit wait, start oldest first as room
frees, and none is lost, run twice or left waiting; a crash never leaves a slot taken."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from runplane.adapters.concurrency import HOLDER, WAIT
from runplane.domain.models import RunRecord
from runplane.logic import admission, services
from runplane.logic.accounts import set_concurrency
from runplane.logic.execute import process_dispatch
from runplane.logic.keys import CreatedKey, create_key
from runplane.logic.sweep import sweep

from tests.conftest import Api, drain, make_runnable, working
from tests.spans import most_at_once, spans


def start(api: Api, runnable_id: str, **inputs: Any) -> str:
    reply = api.post(f"/v1/runnable/{runnable_id}/runs", {"inputs": inputs})
    assert reply.status == 202, reply.text
    return reply.json()["id"]


def record(account_id: str, run_id: str) -> RunRecord:
    found = services.services().runs.get(account_id, run_id, consistent=True)
    assert found is not None
    return found


def concurrency_items() -> list[str]:
    """Waiting runs' queue entries and held slots."""
    table = services.services().settings.concurrency_table
    items = boto3.client("dynamodb").scan(TableName=table)["Items"]
    waiting = [i["entry"]["S"] for i in items if i["entry"]["S"].startswith(WAIT)]
    return waiting + [name for i in items for name in i if name.startswith(HOLDER)]


def hold_a_slot(account_id: str, run_id: str) -> None:
    """Start a run as a worker would, then let that worker vanish (it never finishes or renews)."""
    assert admission.admit(record(account_id, run_id), "vanished", 30) is not None


def waiting_behind_a_lost_run(api: Api, account_id: str) -> tuple[str, str]:
    """A runnable limited to one run: a run holding the slot, its worker gone, and a run waiting."""
    sleeper = make_runnable(account_id, "sleep", max_concurrency=1)
    holder = start(api, sleeper, seconds=0)
    hold_a_slot(account_id, holder)
    queued = start(api, sleeper, seconds=0)
    drain("worker")
    assert record(account_id, queued).status == "waiting"
    return holder, queued


@pytest.fixture(autouse=True)
def quick_sweeps(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The sweeper's safety nets, compressed: moto's SQS, hammered by threads, can lose a message."""
    monkeypatch.setenv("RUNPLANE_CONCURRENCY_RECHECK_SECONDS", "3")
    monkeypatch.setenv("RUNPLANE_REDISPATCH_SECONDS", "5")
    services.reset()


def run_burst(api: Api, account_id: str, runnables: list[str], count: int, path: Path) -> list[RunRecord]:
    """Start `count` runs in parallel (cycling through `runnables`) while 8 workers execute them. Each
    thread calls through an Api of its own: a resolver holds the request it serves, so one shared by
    threads can look up another request's route (or find it already cleared: a 500 KeyError)."""
    own = threading.local()

    def start_one(n: int) -> str:
        if not hasattr(own, "api"):
            own.api = Api(api.token)
        return start(own.api, runnables[n % len(runnables)], path=str(path), seconds=0.5)

    with working(8, sweeper=True):
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(start_one, range(count)))
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            records = [record(account_id, run_id) for run_id in ids]
            if all(r.status.terminal for r in records):
                break
            time.sleep(0.2)
    return records


def test_a_burst_never_runs_more_than_the_runnable_limit_and_every_run_completes(
    api: Api, account: CreatedKey, tmp_path: Path
) -> None:
    spanner = make_runnable(account.account_id, "span", max_concurrency=3)
    executions = tmp_path / "executions"
    records = run_burst(api, account.account_id, [spanner], 30, executions)

    assert [r.status for r in records] == ["completed"] * 30
    executed = spans(executions)
    assert len(executions.read_text().splitlines()) == len(executed) == 30  # each run executed once
    assert 2 <= most_at_once(list(executed.values())) <= 3  # never above; side by side (timing allowing)
    assert concurrency_items() == []  # every slot given back, no queue entry left


def test_an_account_limit_holds_across_runnables_and_a_runnable_limit_inside_it(
    api: Api, account: CreatedKey, tmp_path: Path
) -> None:
    set_concurrency(account.account_id, 3)
    narrow = make_runnable(account.account_id, "span", max_concurrency=1)
    wide = make_runnable(account.account_id, "span")
    records = run_burst(api, account.account_id, [narrow, wide], 24, tmp_path / "executions")

    assert [r.status for r in records] == ["completed"] * 24
    executed = spans(tmp_path / "executions")
    assert 2 <= most_at_once(list(executed.values())) <= 3
    assert most_at_once([executed[r.id] for r in records if r.runnable_id == narrow]) == 1
    assert concurrency_items() == []


def test_waiting_runs_start_oldest_first_whatever_order_their_messages_arrive_in(
    api: Api, account: CreatedKey, env: dict[str, str], tmp_path: Path
) -> None:
    executions = tmp_path / "executions"
    counter = make_runnable(account.account_id, "count", max_concurrency=1)
    first = start(api, counter, path=str(executions))
    hold_a_slot(account.account_id, first)
    later = [start(api, counter, path=str(executions)) for _ in range(5)]
    boto3.client("sqs").purge_queue(QueueUrl=env["RUNPLANE_DISPATCH_QUEUE_URL"])
    for run_id in reversed(later):  # newest first
        process_dispatch(json.dumps({"account_id": account.account_id, "run_id": run_id}))
    assert {record(account.account_id, r).status for r in later} == {"waiting"}

    # the slot frees (the first run ends); a run that arrives just then does not jump the queue
    admission.release(record(account.account_id, first))
    newcomer = start(api, counter, path=str(executions))
    drain("worker")

    order = executions.read_text().split()[::2]
    assert order == [*later, newcomer]
    assert concurrency_items() == []


def test_a_run_that_stopped_without_ending_keeps_its_slot_until_the_sweeper_ends_it(
    api: Api, account: CreatedKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNPLANE_MAX_ATTEMPTS", "1")
    services.reset()
    lost, queued = waiting_behind_a_lost_run(api, account.account_id)

    assert sweep(time.time() + 31)["failed"] == 1  # the lease ran out, no attempts left
    drain("worker")
    assert api.get(f"/v1/run/{lost}").json()["result"]["error"]["code"] == "worker_lost"
    assert api.get(f"/v1/run/{queued}").json()["status"] == "completed"
    assert concurrency_items() == []


def test_a_slot_an_end_left_taken_is_given_back_by_the_sweeper_once_a_run_waits_for_it(
    api: Api, account: CreatedKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeper = make_runnable(account.account_id, "sleep", max_concurrency=1)
    first, second = start(api, sleeper, seconds=0), start(api, sleeper, seconds=0)
    release = admission.release
    monkeypatch.setattr(admission, "release", lambda record: (_ for _ in ()).throw(OSError("crash")))
    drain("worker")
    assert [record(account.account_id, r).status for r in (first, second)] == ["completed", "waiting"]

    monkeypatch.setattr(admission, "release", release)
    checked = sweep(time.time() + 4)  # the recheck is due, the slot too young to be taken back
    assert (checked["scopes_rechecked"], checked.get("slots_given_back")) == (1, None)
    drain("worker")
    assert record(account.account_id, second).status == "waiting"
    assert sweep(time.time() + admission.STALE_SECONDS + 8)["slots_given_back"] == 1
    drain("worker")
    assert record(account.account_id, second).status == "completed"
    assert concurrency_items() == []


def test_a_wake_up_lost_in_a_crash_is_made_up_by_the_sweeper(api: Api, account: CreatedKey) -> None:
    holder, queued = waiting_behind_a_lost_run(api, account.account_id)
    for slot in record(account.account_id, holder).slots:  # the run ended, then its worker died
        scope, index = slot.rsplit("|", 1)
        services.services().concurrency.release(scope, int(index), holder)

    assert sweep(time.time()).get("scopes_rechecked") is None  # not yet: wake-ups are on their way
    assert sweep(time.time() + 4)["scopes_rechecked"] == 1
    drain("worker")
    assert record(account.account_id, queued).status == "completed"
    assert sweep(time.time() + 8).get("scopes_rechecked") == 1  # nobody waits: the recheck ends
    assert sweep(time.time() + 16).get("scopes_rechecked") is None


def test_cancelling_a_waiting_run_takes_it_out_of_the_queue(api: Api, account: CreatedKey) -> None:
    sleeper = make_runnable(account.account_id, "sleep", max_concurrency=1)
    running = start(api, sleeper, seconds=0)
    hold_a_slot(account.account_id, running)
    cancelled, after = start(api, sleeper, seconds=0), start(api, sleeper, seconds=0)
    drain("worker")
    reply = api.post(f"/v1/run/{cancelled}/cancel")
    assert (reply.status, reply.json()["status"]) == (200, "cancelled")

    admission.release(record(account.account_id, running))
    drain("worker")
    assert record(account.account_id, after).status == "completed"
    assert record(account.account_id, cancelled).started_at is None
    assert concurrency_items() == []


def test_raising_or_removing_a_limit_starts_waiting_runs_at_once(api: Api, account: CreatedKey) -> None:
    sleeper = make_runnable(account.account_id, "sleep", max_concurrency=1)

    def hold_and_queue(holders: int) -> list[str]:
        for _ in range(holders):
            hold_a_slot(account.account_id, start(api, sleeper, seconds=0))
        queued = [start(api, sleeper, seconds=0) for _ in range(3)]
        drain("worker")
        assert {record(account.account_id, r).status for r in queued} == {"waiting"}
        return queued

    def replace(**limit: int) -> None:
        fields = {"name": "sleep", "kind": "python", "config": {"function": "sleep"}, **limit}
        assert api.call("PUT", f"/v1/runnable/{sleeper}", fields).status == 200

    queued = hold_and_queue(1)
    replace(max_concurrency=2)  # no run ended: only the change can start them
    drain("worker")
    assert {record(account.account_id, r).status for r in queued} == {"completed"}

    queued = hold_and_queue(1)  # the one earlier holder and this one fill the new limit of 2
    replace()
    drain("worker")
    assert {record(account.account_id, r).status for r in queued} == {"completed"}


def test_one_account_at_its_limit_does_not_hold_up_another(api: Api, account: CreatedKey) -> None:
    set_concurrency(account.account_id, 1)
    sleeper = make_runnable(account.account_id, "sleep")
    hold_a_slot(account.account_id, start(api, sleeper, seconds=0))
    backlog = [start(api, sleeper, seconds=0) for _ in range(5)]
    other = create_key("globex", scopes=["admin"])
    theirs = start(Api(other.token), make_runnable("globex", "sleep"), seconds=0)
    drain("worker")
    assert record("globex", theirs).status == "completed"
    assert {record(account.account_id, r).status for r in backlog} == {"waiting"}


def test_limits_are_visible_and_validated(api: Api, account: CreatedKey) -> None:
    assert api.get("/v1/account").json()["concurrency"] == {"max_concurrency": 20, "running": 0}
    sleeper = make_runnable(account.account_id, "sleep")
    hold_a_slot(account.account_id, start(api, sleeper, seconds=0))
    assert api.get("/v1/account").json()["concurrency"] == {"max_concurrency": 20, "running": 1}
    set_concurrency(account.account_id, 0)
    assert api.get("/v1/account").json()["concurrency"] == {"max_concurrency": None, "running": None}

    body = {"name": "n", "kind": "python", "config": {"function": "echo"}, "max_concurrency": 4}
    created = api.post("/v1/runnables", body)
    assert created.status == 201
    assert api.get(f"/v1/runnable/{created.json()['id']}").json()["max_concurrency"] == 4
    refused = api.post("/v1/runnables", {**body, "max_concurrency": 0})
    assert refused.status == 400
    assert refused.json()["issues"][0]["field"] == "body.max_concurrency"
