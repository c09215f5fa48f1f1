"""The v1 run API against moto: create, dispatch, execute, read, list, cancel."""

from __future__ import annotations

import threading
import time

from runplane.domain.states import Status

from tests.conftest import Api, drain, make_runnable
from tests.contract import assert_run_state


def start(api: Api, runnable_id: str, body: dict | None = None, mode: str = "async", **kw):
    return api.post(f"/v1/runnable/{runnable_id}/runs?mode={mode}", body if body is not None else {}, **kw)


def test_async_run_is_accepted_then_executed_by_the_worker(api: Api, echo_id: str) -> None:
    reply = start(api, echo_id, {"inputs": {"hello": "world"}, "metadata": {"ticket": 7}})
    assert reply.status == 202
    run_id = reply.json()["id"]
    assert reply.headers["Location"] == f"/v1/run/{run_id}"

    waiting = assert_run_state(api.get(f"/v1/run/{run_id}").json())
    assert waiting["status"] == "waiting"
    assert waiting["result"] is None

    drain("worker")
    done = assert_run_state(api.get(f"/v1/run/{run_id}").json())
    assert done["status"] == "completed"
    assert done["result"]["outputs"] == {"hello": "world"}
    assert "error" not in done["result"]  # the seed's RunResult has no null error: it is left out
    assert done["metadata"] == {"ticket": 7}
    assert done["runnable_id"] == echo_id
    assert done["completed_at"] >= done["created_at"]
    assert done["failed_at"] is None


def test_sync_run_answers_with_the_terminal_run_state(api: Api, echo_id: str) -> None:
    stop = threading.Event()
    worker = threading.Thread(
        target=lambda: [drain("worker") or time.sleep(0.02) for _ in iter(stop.is_set, True)]
    )
    worker.start()
    try:
        reply = start(api, echo_id, {"inputs": {"n": 1}}, mode="sync")
    finally:
        stop.set()
        worker.join()
    assert reply.status == 200
    state = assert_run_state(reply.json())
    assert state["status"] == "completed"
    assert state["result"]["outputs"] == {"n": 1}


def test_sync_run_that_outlasts_the_wait_answers_202_with_location_and_keeps_going(api: Api, account) -> None:
    sleeper = make_runnable(account.account_id, "sleep")
    reply = start(api, sleeper, {"inputs": {"seconds": 0}}, mode="sync", headers={"Prefer": "wait=0"})
    assert reply.status == 202
    state = assert_run_state(reply.json())
    assert state["status"] == "waiting"
    assert reply.headers["Location"] == f"/v1/run/{state['id']}"
    drain("worker")
    assert api.get(f"/v1/run/{state['id']}").json()["status"] == "completed"


def test_failed_run_carries_the_error_and_failed_at(api: Api, account) -> None:
    failing = make_runnable(account.account_id, "fail")
    run_id = start(api, failing, {"inputs": {"message": "bad day", "code": "E42"}}).json()["id"]
    drain("worker")
    state = assert_run_state(api.get(f"/v1/run/{run_id}").json())
    assert state["status"] == "failed"
    assert state["result"]["error"] == {"message": "bad day", "code": "E42"}
    assert state["failed_at"] == state["completed_at"]


def test_usage_reported_by_the_runnable_is_totalled(api: Api, account) -> None:
    agent = make_runnable(account.account_id, "llm")
    doc = api.post("/v1/resources", {"name": "doc.txt", "directory_path": "", "content": "data:,hi"})
    assert doc.status == 201, doc.text
    body = {"inputs": {}, "resources": [{"name": "doc", "resource": {"id": doc.json()["id"]}}]}
    run_id = start(api, agent, body).json()["id"]
    drain("worker")
    state = assert_run_state(api.get(f"/v1/run/{run_id}").json())
    assert state["total_input_tokens"] == 150
    assert state["total_output_tokens"] == 30
    assert state["total_cached_tokens"] == 5
    assert abs(state["total_token_cost_usd"] - 0.003) < 1e-9
    assert [u["model"] for u in state["result"]["usage"]] == ["gpt-4o", "claude"]
    assert state["result"]["outputs"]["resources"] == ["doc"]


def test_run_timeout_ends_the_run_with_status_timeout(api: Api, account) -> None:
    sleeper = make_runnable(account.account_id, "sleep")
    run_id = start(api, sleeper, {"inputs": {"seconds": 5}, "timeout_seconds": 1}).json()["id"]
    began = time.monotonic()
    drain("worker")
    assert time.monotonic() - began < 4
    state = assert_run_state(api.get(f"/v1/run/{run_id}").json())
    assert state["status"] == "timeout"
    assert state["result"]["error"]["code"] == "timeout"
    assert "timeout_seconds=1" in state["result"]["error"]["message"]


def test_runnable_default_timeout_applies_when_the_request_omits_it(api: Api, account) -> None:
    sleeper = make_runnable(account.account_id, "sleep", timeout_seconds=1)
    run_id = start(api, sleeper, {"inputs": {"seconds": 5}}).json()["id"]
    drain("worker")
    assert api.get(f"/v1/run/{run_id}").json()["status"] == "timeout"


def test_zero_timeout_means_no_timeout(api: Api, account) -> None:
    sleeper = make_runnable(account.account_id, "sleep", timeout_seconds=1)
    run_id = start(api, sleeper, {"inputs": {"seconds": 1.2}, "timeout_seconds": 0}).json()["id"]
    drain("worker")
    assert api.get(f"/v1/run/{run_id}").json()["status"] == "completed"


def test_cancel_of_a_waiting_run_is_immediate_and_the_worker_skips_it(api: Api, tmp_path, account) -> None:
    counter = make_runnable(account.account_id, "count")
    path = tmp_path / "count.txt"
    run_id = start(api, counter, {"inputs": {"path": str(path)}}).json()["id"]
    reply = api.post(f"/v1/run/{run_id}/cancel")
    assert reply.status == 200
    assert reply.json()["status"] == "cancelled"
    assert reply.json()["result"]["error"]["code"] == "cancelled"
    drain("worker")
    assert not path.exists()
    assert api.get(f"/v1/run/{run_id}").json()["status"] == "cancelled"
    assert api.post(f"/v1/run/{run_id}/cancel").status == 200  # repeating is harmless


def test_cancel_of_a_running_run_ends_it_cancelled(api: Api, account, env, monkeypatch) -> None:
    monkeypatch.setenv("RUNPLANE_LEASE_SECONDS", "1.5")
    from runplane.logic import services

    services.reset()
    sleeper = make_runnable(account.account_id, "sleep")
    run_id = start(api, sleeper, {"inputs": {"seconds": 30}}).json()["id"]
    worker = threading.Thread(target=drain, args=("worker",))
    worker.start()
    deadline = time.monotonic() + 5
    while api.get(f"/v1/run/{run_id}").json()["status"] != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    reply = api.post(f"/v1/run/{run_id}/cancel")
    assert reply.status == 202
    assert reply.json()["status"] == "running"
    worker.join(10)
    assert not worker.is_alive()
    state = api.get(f"/v1/run/{run_id}").json()
    assert state["status"] == "cancelled"
    assert state["result"]["metadata"]["duration_seconds"] < 5


def test_cancel_of_a_finished_run_is_a_conflict(api: Api, echo_id: str) -> None:
    run_id = start(api, echo_id).json()["id"]
    drain("worker")
    reply = api.post(f"/v1/run/{run_id}/cancel")
    assert reply.status == 409
    assert reply.json()["code"] == "run_terminal"


def test_list_runs_newest_first_with_cursor_pagination_and_filters(api: Api, account, echo_id: str) -> None:
    failing = make_runnable(account.account_id, "fail")
    ids = [start(api, echo_id, {"inputs": {"i": i}}).json()["id"] for i in range(5)]
    failed_id = start(api, failing).json()["id"]
    drain("worker")

    seen, cursor = [], None
    while True:
        page = api.get("/v1/runs?limit=2" + (f"&cursor={cursor}" if cursor else "")).json()
        assert len(page["items"]) <= 2
        seen += [item["id"] for item in page["items"]]
        for item in page["items"]:
            assert_run_state(item)
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [failed_id, *reversed(ids)]

    failed = api.get("/v1/runs?status=failed").json()["items"]
    assert [r["id"] for r in failed] == [failed_id]
    by_runnable = api.get(f"/v1/runs?runnable_id={echo_id}&limit=100").json()["items"]
    assert [r["id"] for r in by_runnable] == list(reversed(ids))
    both = api.get(f"/v1/runs?runnable_id={echo_id}&status=failed").json()["items"]
    assert both == []


def test_outputs_too_large_for_an_item_are_stored_in_s3_and_served_transparently(
    api: Api, account, env
) -> None:
    import boto3

    producer = make_runnable(account.account_id, "big")
    run_id = start(api, producer, {"inputs": {"size": 500_000}}).json()["id"]
    drain("worker")
    state = api.get(f"/v1/run/{run_id}").json()
    assert state["status"] == "completed"
    assert len(state["result"]["outputs"]["text"]) == 500_000
    objects = boto3.client("s3").list_objects_v2(Bucket=env["RUNPLANE_PAYLOAD_BUCKET"])["Contents"]
    assert any(o["Key"].endswith(f"{run_id}/outcome-1.json") for o in objects)


def test_large_inputs_are_stored_in_s3_and_reach_the_runnable(api: Api, echo_id: str, env) -> None:
    run_id = start(api, echo_id, {"inputs": {"blob": "y" * 300_000}}).json()["id"]
    drain("worker")
    state = api.get(f"/v1/run/{run_id}").json()
    assert state["status"] == "completed"
    assert len(state["result"]["outputs"]["blob"]) == 300_000


def test_run_state_never_contains_internal_fields(api: Api, echo_id: str) -> None:
    body = {"callback_url": "https://example.com/hook", "callback_headers": {"X-Secret": "s3cr3t"}}
    run_id = start(api, echo_id, body).json()["id"]
    drain("worker")
    reply = api.get(f"/v1/run/{run_id}")
    assert "s3cr3t" not in reply.text
    assert "example.com" not in reply.text
    assert_run_state(reply.json())  # additionalProperties: false
    assert Status(reply.json()["status"]) is Status.completed
