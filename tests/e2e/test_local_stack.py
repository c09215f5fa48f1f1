"""End to end: `runplane local` as a subprocess, spoken to over real HTTP and real (moto) SQS."""

from __future__ import annotations

import json
import os
import shlex
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
import requests
from runplane.domain.ids import intake_run_id
from standardwebhooks.webhooks import Webhook

from tests.cli import cli
from tests.contract import assert_run_state
from tests.local_stack import Stack, start_stack, wait_for
from tests.receiver import Answer, receiving
from tests.spans import most_at_once, spans

pytestmark = pytest.mark.e2e


TEST_ENV = {
    "RUNPLANE_RUNNABLE_PACKAGES": "tests.fixtures.runnables",
    "RUNPLANE_LEASE_SECONDS": "2",
    "RUNPLANE_LOCAL_SWEEP_SECONDS": "0.5",
    "RUNPLANE_SYNC_WAIT_SECONDS": "10",
    "RUNPLANE_ALLOW_LOOPBACK": "1",
    "RUNPLANE_CALLBACK_SCHEDULE": "0.5,0.5",
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    started = start_stack(tmp_path_factory.mktemp("stack"), **TEST_ENV)
    started.keep_draining_output()
    yield started
    started.stop()


def test_local_json_names_everything_a_caller_needs(stack: Stack) -> None:
    info = stack.info
    for key in ("api_url", "api_key", "account_id", "aws_endpoint_url", "region", "intake_queue_url"):
        assert info[key], key
    assert info["account_id"] == "local"
    organization_id = info["organization_id"]
    assert str(uuid.UUID(organization_id)) == organization_id
    assert f"account       local (organization id {organization_id})" in stack.banner
    account = stack.call("GET", "/v1/account").json()
    assert account["organization_id"] == organization_id


def test_the_printed_curl_line_works_as_printed(stack: Stack) -> None:
    start = stack.banner.index("curl ")
    line = stack.banner[start : stack.banner.index("\n\n", start)].replace("\\\n", " ")
    words = shlex.split(line)
    assert words[0] == "curl"
    url = next(w for w in words if w.startswith("http"))
    headers = dict(words[i + 1].split(": ", 1) for i, w in enumerate(words) if w == "-H")
    data = words[words.index("-d") + 1]
    assert words[words.index("-X") + 1] == "POST"
    reply = requests.post(url, data=data, headers=headers, timeout=30)
    assert reply.status_code == 200
    state = assert_run_state(reply.json())
    assert state["status"] == "completed"
    assert state["result"]["outputs"] == {"hello": "world"}


def test_sync_run(stack: Stack) -> None:
    reply = stack.start_run("echo", {"inputs": {"q": "sync"}}, mode="sync")
    assert reply.status_code == 200
    assert assert_run_state(reply.json())["result"]["outputs"] == {"q": "sync"}


def test_sync_run_longer_than_the_wait_returns_202_and_location(stack: Stack) -> None:
    reply = stack.start_run("sleep", {"inputs": {"seconds": 2}}, mode="sync", headers={"Prefer": "wait=1"})
    assert reply.status_code == 202
    location = reply.headers["Location"]
    assert location == f"{stack.info['api_url']}/v1/run/{reply.json()['id']}"
    assert requests.get(location, headers={"Authorization": f"Bearer {stack.info['api_key']}"}, timeout=10).ok
    assert stack.wait_terminal(reply.json()["id"])["status"] == "completed"


def test_async_run_and_poll(stack: Stack) -> None:
    reply = stack.start_run("echo", {"inputs": {"q": "async"}, "metadata": {"source": "e2e"}})
    assert reply.status_code == 202
    state = assert_run_state(stack.wait_terminal(reply.json()["id"]))
    assert state["status"] == "completed"
    assert state["metadata"] == {"source": "e2e"}


def test_failure_and_timeout(stack: Stack) -> None:
    failed = stack.wait_terminal(stack.start_run("fail", {"inputs": {"message": "nope"}}).json()["id"])
    assert (failed["status"], failed["result"]["error"]["message"]) == ("failed", "nope")
    timed = stack.wait_terminal(
        stack.start_run("sleep", {"inputs": {"seconds": 20}, "timeout_seconds": 1}).json()["id"]
    )
    assert timed["status"] == "timeout"
    assert timed["result"]["error"]["code"] == "timeout"


def test_cancel_running_and_waiting_runs(stack: Stack) -> None:
    run_id = stack.start_run("sleep", {"inputs": {"seconds": 30}}).json()["id"]
    deadline = time.monotonic() + 10
    while (
        stack.call("GET", f"/v1/run/{run_id}").json()["status"] != "running" and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    reply = stack.call("POST", f"/v1/run/{run_id}/cancel")
    assert reply.status_code == 202
    state = stack.wait_terminal(run_id, seconds=10)
    assert state["status"] == "cancelled"
    assert state["result"]["error"]["code"] == "cancelled"


def test_list_runs(stack: Stack) -> None:
    ids = [stack.start_run("echo", {"inputs": {"i": i}}).json()["id"] for i in range(3)]
    for run_id in ids:
        stack.wait_terminal(run_id)
    page = stack.call("GET", "/v1/runs?limit=3").json()
    assert [item["id"] for item in page["items"]] == list(reversed(ids))
    assert page["next_cursor"]
    following = stack.call("GET", f"/v1/runs?limit=3&cursor={page['next_cursor']}").json()
    assert not set(ids) & {item["id"] for item in following["items"]}


def test_intake_messages_start_runs_and_bad_ones_are_parked_with_a_reason(stack: Stack) -> None:
    sqs, info = stack.sqs(), stack.info
    message = {"account_id": "local", "runnable_id": stack.runnable("echo"), "inputs": {"from": "sqs"}}
    message_id = sqs.send_message(QueueUrl=info["intake_queue_url"], MessageBody=json.dumps(message))[
        "MessageId"
    ]
    chosen = str(uuid.uuid4())
    sqs.send_message(QueueUrl=info["intake_queue_url"], MessageBody=json.dumps({**message, "run_id": chosen}))
    sqs.send_message(QueueUrl=info["intake_queue_url"], MessageBody="{broken")
    assert stack.wait_terminal(intake_run_id(message_id))["result"]["outputs"] == {"from": "sqs"}
    assert stack.wait_terminal(chosen)["status"] == "completed"
    deadline, parked = time.monotonic() + 10, []
    while not parked and time.monotonic() < deadline:
        parked = sqs.receive_message(
            QueueUrl=info["intake_dlq_url"], MessageAttributeNames=["All"], WaitTimeSeconds=1
        ).get("Messages", [])
    assert parked[0]["Body"] == "{broken"
    assert parked[0]["MessageAttributes"]["runplane-error-code"]["StringValue"] == "invalid_json"


def test_duplicate_dispatch_deliveries_execute_the_run_once(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "executions.txt"
    run_id = stack.start_run("count", {"inputs": {"path": str(path), "seconds": 1}}).json()["id"]
    body = json.dumps({"account_id": "local", "run_id": run_id})
    for _ in range(5):
        stack.sqs().send_message(QueueUrl=stack.info["dispatch_queue_url"], MessageBody=body)
    assert stack.wait_terminal(run_id)["status"] == "completed"
    time.sleep(1)  # let the duplicates be received and dropped
    assert len(path.read_text().splitlines()) == 1


def test_a_worker_killed_mid_run_is_replaced_and_the_run_retried(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "executions.txt"
    run_id = stack.start_run("count", {"inputs": {"path": str(path), "seconds": 3}}).json()["id"]
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in stack.info["worker_pids"]:
        os.kill(pid, signal.SIGKILL)
    state = stack.wait_terminal(run_id, seconds=40)
    assert state["status"] == "completed"
    assert state["result"]["metadata"]["attempts"] == 2
    attempts = [line.split()[1] for line in path.read_text().splitlines()]
    assert attempts == ["1", "2"]


@pytest.mark.parametrize(
    ("data", "headers", "status", "code"),
    [
        ("{oops", {}, 400, "invalid_json"),
        (json.dumps({"inputs": 5}), {}, 400, "validation_error"),
        ("x" * (2 * 1024 * 1024), {}, 413, "payload_too_large"),
        ("{}", {"Authorization": "Bearer wrong"}, 401, "unauthorized"),
    ],
)
def test_bad_input_gets_a_clear_4xx(stack: Stack, data: str, headers: dict, status: int, code: str) -> None:
    url = f"{stack.info['api_url']}/v1/runnable/{stack.runnable('echo')}/runs"
    sent = {"Authorization": f"Bearer {stack.info['api_key']}", "Content-Type": "application/json", **headers}
    reply = requests.post(url, data=data, headers=sent, timeout=30)
    assert reply.status_code == status
    assert reply.json()["code"] == code


def test_unknown_runnable_is_404(stack: Stack) -> None:
    reply = stack.call("POST", f"/v1/runnable/{uuid.uuid4()}/runs", {})
    assert reply.status_code == 404


def test_a_burst_of_concurrent_clients_is_served_without_resets(stack: Stack) -> None:
    url, headers = (
        stack.info["api_url"] + "/v1/runs?limit=1",
        {"Authorization": f"Bearer {stack.info['api_key']}"},
    )
    barrier = threading.Barrier(64)

    def call(_: int) -> int:
        barrier.wait()  # every client connects at once
        return requests.get(url, headers=headers, timeout=60).status_code

    with ThreadPoolExecutor(64) as pool:
        assert set(pool.map(call, range(64))) == {200}


def test_openapi_and_docs(stack: Stack) -> None:
    assert (
        requests.get(stack.info["api_url"] + "/openapi.json", timeout=10).json()["openapi"].startswith("3.")
    )
    assert requests.get(stack.info["api_url"] + "/docs", timeout=10).status_code == 200


def test_only_the_main_thread_of_the_stack_can_take_a_ctrl_c(stack: Stack) -> None:
    """Every other thread blocks SIGINT and SIGTERM: one that took the signal would leave the main
    thread waiting for it, and the stack running (runplane.local.stack.stop_signals_to_the_main_thread)."""
    tasks = Path(f"/proc/{stack.process.pid}/task")
    if not tasks.is_dir():
        pytest.skip("reads thread signal masks from /proc")
    stop = (1 << (signal.SIGINT - 1)) | (1 << (signal.SIGTERM - 1))
    blocked = {}
    for task in tasks.iterdir():
        try:
            status = (task / "status").read_text()
        except FileNotFoundError:  # a thread that just ended
            continue
        blocked[int(task.name)] = int(status.split("SigBlk:")[1].split()[0], 16) & stop
    assert blocked.pop(stack.process.pid) == 0
    assert len(blocked) >= 4  # moto's, the gateway's, the supervisor and the sweeper, at least
    assert set(blocked.values()) == {stop}


def callbacks_of(stack: Stack, run_id: str) -> list[dict]:
    return stack.call("GET", f"/v1/run/{run_id}/callbacks").json()["items"]


def test_a_callback_is_signed_retried_and_delivered(stack: Stack) -> None:
    with receiving(Answer(503), Answer(200)) as receiver:
        run_id = stack.start_run("echo", {"inputs": {"hi": 1}, "callback_url": receiver.url}).json()["id"]
        wait_for(lambda: any(d["state"] == "succeeded" for d in callbacks_of(stack, run_id)))
    secret = stack.call("GET", "/v1/callbacks/secret").json()["secret"]
    first, second = receiver.received
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert (
        Webhook(secret).verify(second.body, second.headers) == stack.call("GET", f"/v1/run/{run_id}").json()
    )
    [delivery] = callbacks_of(stack, run_id)
    assert [a["status_code"] for a in delivery["attempts"]] == [503, 200]


def test_dead_callbacks_are_listed_in_the_dlq_and_replayed_from_the_cli(stack: Stack) -> None:
    began = datetime.now(UTC).isoformat()
    with receiving(Answer(500)) as receiver:
        run_id = stack.start_run("echo", {"callback_url": receiver.url}).json()["id"]
        wait_for(lambda: any(d["state"] == "dead" for d in callbacks_of(stack, run_id)))
        assert len(receiver.received) == 3  # the first attempt and the two compressed retries

        letters = [json.loads(line) for line in cli(stack, "callbacks", "dlq").splitlines()]
        assert {"run_id": run_id, "state": "dead", "error": "HTTP 500"}.items() <= next(
            letter for letter in letters if letter["run_id"] == run_id
        ).items()
        receiver.script = [Answer(200)]
        assert json.loads(cli(stack, "callbacks", "replay", "--since", began))["replayed"] >= 1
        wait_for(lambda: callbacks_of(stack, run_id)[0]["state"] == "succeeded")
    assert len(receiver.received) == 4
    assert len(receiver.unique_ids()) == 1


def test_scoped_keys_idempotency_and_credits_over_http(stack: Stack) -> None:
    reader = stack.call("POST", "/v1/keys", {"name": "reader", "scopes": ["runs:read"]}).json()["api_key"]
    refused = stack.call(
        "POST",
        f"/v1/runnable/{stack.runnable('echo')}/runs",
        {},
        headers={"Authorization": f"Bearer {reader}"},
    )
    assert refused.status_code == 403
    assert refused.json()["missingPerms"] == ["runs:write"]

    retry = {"Idempotency-Key": f"e2e-{uuid.uuid4()}"}
    first = stack.start_run("echo", {"inputs": {"n": 1}}, headers=retry)
    again = stack.start_run("echo", {"inputs": {"n": 1}}, headers=retry)
    assert first.json()["id"] == again.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"

    metered = json.loads(cli(stack, "keys", "create", "--account", "metered", "--scope", "admin"))["api_key"]
    cli(stack, "accounts", "set-credits", "--account", "metered", "--runs", "1")
    as_metered = {"Authorization": f"Bearer {metered}"}
    runnable = stack.call(
        "POST",
        "/v1/runnables",
        {"name": "echo", "kind": "python", "config": {"function": "echo"}},
        headers=as_metered,
    ).json()["id"]
    statuses = [
        stack.call("POST", f"/v1/runnable/{runnable}/runs", {}, headers=as_metered).status_code
        for _ in range(2)
    ]
    assert statuses == [202, 402]
    assert json.loads(cli(stack, "accounts", "show", "--account", "metered"))["credits"]["used_runs"] == 1


def test_concurrency_limits_hold_a_burst_back_and_every_run_completes(stack: Stack, tmp_path: Path) -> None:
    spec = {"name": "one at a time", "kind": "python", "config": {"function": "span"}, "max_concurrency": 1}
    runnable = stack.call("POST", "/v1/runnables", spec).json()["id"]
    assert stack.call("GET", f"/v1/runnable/{runnable}").json()["max_concurrency"] == 1
    executions = tmp_path / "executions"
    body = {"inputs": {"path": str(executions), "seconds": 0.3}}
    with ThreadPoolExecutor(8) as pool:
        replies = list(
            pool.map(lambda _: stack.call("POST", f"/v1/runnable/{runnable}/runs", body), range(8))
        )
    assert {r.status_code for r in replies} == {202}
    states = [stack.wait_terminal(r.json()["id"], seconds=60) for r in replies]
    assert {s["status"] for s in states} == {"completed"}
    assert most_at_once(list(spans(executions).values())) == 1  # two workers, yet one run at a time

    account = stack.call("GET", "/v1/account").json()["concurrency"]
    assert account == {"max_concurrency": 20, "running": 0}
    shown = json.loads(cli(stack, "accounts", "set-concurrency", "--account", "local", "--max", "5"))
    assert shown["concurrency"]["max_concurrency"] == 5
    assert stack.call("GET", "/v1/account").json()["concurrency"]["max_concurrency"] == 5


def test_an_http_agent_and_a_parent_with_children_run_over_http_with_usage_totals(stack: Stack) -> None:
    usage = {"provider": "openai", "model": "gpt-4o", "prompt_tokens": 1000, "completion_tokens": 100}
    reply_body = json.dumps({"outputs": {"label": "bug"}, "usage": [usage]}).encode()
    with receiving(Answer(body=reply_body)) as agent:
        spec = {"name": "triage", "kind": "http", "config": {"url": agent.url}}
        runnable = stack.call("POST", "/v1/runnables", spec).json()["id"]
        reply = stack.call("POST", f"/v1/runnable/{runnable}/runs?mode=sync", {"inputs": {"title": "crash"}})
    state = assert_run_state(reply.json())
    assert (state["status"], state["result"]["outputs"]) == ("completed", {"label": "bug"})
    assert state["total_token_cost_usd"] == pytest.approx((1000 * 2.5 + 100 * 10) / 1e6)  # built-in gpt-4o
    assert json.loads(agent.received[0].body)["inputs"] == {"title": "crash"}
    page = stack.call("GET", f"/v1/runs?runnable_id={runnable}").json()
    assert page["totals"]["total_input_tokens"] == 1000

    body = {"inputs": {"child": stack.runnable("echo"), "items": [{"n": 1}, {"n": 2}]}}
    parent = stack.start_run("parent", body, mode="sync").json()
    assert parent["status"] == "completed", parent
    assert parent["result"]["outputs"]["outputs"] == [{"n": 1}, {"n": 2}]
    children = stack.call("GET", f"/v1/runs?parent_run_id={parent['id']}").json()["items"]
    assert {c["parent_run_id"] for c in children} == {parent["id"]}
    assert stack.call("GET", "/v1/account/usage").json()["total_input_tokens"] >= 1000


def roe_values(outputs: list[dict]) -> dict:
    return {
        o["key"]: json.loads(o["value"]) if o["data_type"] == "application/json" else o["value"]
        for o in outputs
    }


def test_the_same_runnable_gives_the_same_outputs_in_all_three_dialects(stack: Stack) -> None:
    echo = stack.runnable("echo")
    inputs = {"text": "same", "items": [1, {"a": None}], "ratio": 2.5}
    native = stack.call("POST", f"/v1/runnable/{echo}/runs?mode=sync", {"inputs": inputs})
    roe = stack.call("POST", f"/v1/agents/run/{echo}/", inputs)
    cotool = stack.call("POST", f"/api/agents/{echo}/run-sync", {"inputs": inputs})
    assert (native.status_code, roe.status_code, cotool.status_code) == (200, 200, 200)
    assert (
        native.json()["result"]["outputs"]
        == roe_values(roe.json())
        == cotool.json()["structuredOutputResult"]
    )
    assert cotool.json()["structuredOutputResult"] == inputs


def test_a_run_started_in_one_dialect_is_read_and_cancelled_in_another(stack: Stack) -> None:
    echo = stack.runnable("echo")
    job_id = stack.call("POST", f"/v1/agents/run/{echo}/async/", {"text": "from roe"}).json()
    assert stack.wait_terminal(job_id)["result"]["outputs"] == {"text": "from roe"}
    result = stack.call("GET", f"/api/agents/{echo}/run-async/{job_id}/result").json()
    assert result["finalAssistantMessage"] == "from roe"

    run_id = stack.call("POST", f"/api/agents/{echo}/run-async", {"inputs": {"text": "from cotool"}}).json()[
        "runId"
    ]
    stack.wait_terminal(run_id)
    assert stack.call("GET", f"/v1/agents/jobs/{run_id}/status/").json()["status"] == 3
    job = stack.call("GET", f"/v1/agents/jobs/{run_id}/result/").json()
    assert roe_values(job["outputs"]) == {"text": "from cotool"}

    sleeper = stack.runnable("sleep")
    slow = stack.call("POST", f"/api/agents/{sleeper}/run-async", {"inputs": {"seconds": 30}}).json()["runId"]
    assert stack.call("POST", f"/v1/agents/jobs/{slow}/cancel/").status_code == 204
    assert stack.wait_terminal(slow)["status"] == "cancelled"
    status = stack.call("GET", f"/api/agents/{sleeper}/run-async/{slow}/status").json()
    assert status["status"] == "interrupted"
