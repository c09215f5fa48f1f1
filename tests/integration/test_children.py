"""Child runs: a python runnable starts runs of other runnables with ctx.run; children carry their
parent's id, a retried parent gets the same children back, and cancelling a parent cancels them."""

from __future__ import annotations

import time
from typing import Any

import pytest
from runplane.logic import children, services

from tests.conftest import Api, make_runnable, working


def wait_for(api: Api, run_id: str, *statuses: str, seconds: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while (state := api.get(f"/v1/run/{run_id}").json())["status"] not in statuses:
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    return state


@pytest.fixture(autouse=True)
def quick_leases(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNPLANE_LEASE_SECONDS", "1")
    services.reset()


def test_a_parent_waits_for_its_children_and_gets_their_results(api: Api, account) -> None:
    parent = make_runnable(account.account_id, "parent")
    echo = make_runnable(account.account_id, "echo")
    body = {"inputs": {"child": echo, "items": [{"n": 1}, {"n": 2}]}}
    with working(2):
        run_id = api.post(f"/v1/runnable/{parent}/runs", body).json()["id"]
        state = wait_for(api, run_id, "completed", "failed")
    assert state["status"] == "completed", state["result"]["error"]
    assert state["result"]["outputs"]["outputs"] == [{"n": 1}, {"n": 2}]
    child_ids = state["result"]["outputs"]["children"]
    for child_id in child_ids:
        child = api.get(f"/v1/run/{child_id}").json()
        assert (child["parent_run_id"], child["runnable_id"]) == (run_id, echo)
    listed = api.get(f"/v1/runs?parent_run_id={run_id}").json()["items"]
    assert sorted(r["id"] for r in listed) == sorted(child_ids)


def test_a_retried_parent_gets_the_children_it_started_instead_of_new_ones(api: Api, account) -> None:
    parent = make_runnable(account.account_id, "sleep")
    echo = make_runnable(account.account_id, "echo")
    run_id = api.post(f"/v1/runnable/{parent}/runs", {}).json()["id"]
    record = services.services().runs.get(account.account_id, run_id)
    asked = {"sequence": 1, "runnable_id": echo, "inputs": {"n": 1}, "metadata": {}, "timeout_seconds": None}
    first = children.answer(record, "start_child", asked)
    again = children.answer(record, "start_child", asked)  # the parent's second attempt
    assert first == again
    assert len(api.get(f"/v1/runs?parent_run_id={run_id}").json()["items"]) == 1
    other = children.answer(record, "start_child", {**asked, "sequence": 2})
    assert other["id"] != first["id"]


def test_a_child_of_a_missing_runnable_fails_the_parent_with_the_reason(api: Api, account) -> None:
    parent = make_runnable(account.account_id, "parent")
    body = {"inputs": {"child": "01a20000-0000-7000-8000-000000000000"}}
    with working(1):
        state = wait_for(api, api.post(f"/v1/runnable/{parent}/runs", body).json()["id"], "failed")
    assert state["result"]["error"]["code"] == "runnable_not_found"


def test_cancelling_a_parent_cancels_its_children(api: Api, account) -> None:
    parent = make_runnable(account.account_id, "parent")
    sleeper = make_runnable(account.account_id, "sleep")
    body = {
        "inputs": {
            "child": sleeper,
            "items": [{"seconds": 60}, {"seconds": 60}],
            "wait": False,
            "seconds": 60,
        }
    }
    with working(3):
        run_id = api.post(f"/v1/runnable/{parent}/runs", body).json()["id"]
        deadline = time.monotonic() + 20
        while len(kids := api.get(f"/v1/runs?parent_run_id={run_id}&status=running").json()["items"]) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert api.post(f"/v1/run/{run_id}/cancel").status == 202
        assert wait_for(api, run_id, "cancelled", "completed", "failed")["status"] == "cancelled"
        for kid in kids:
            assert (
                wait_for(api, kid["id"], "cancelled", "completed", "failed", seconds=10)["status"]
                == "cancelled"
            )
