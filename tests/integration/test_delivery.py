"""At-least-once delivery: duplicates, intake messages, crashed workers, dead letters."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import boto3
import pytest
from runplane.domain.ids import intake_run_id
from runplane.domain.models import RunQuery
from runplane.domain.states import IllegalMove
from runplane.handlers import dead_letters, worker
from runplane.local.lambda_context import LocalLambdaContext
from runplane.local.poller import sqs_record
from runplane.logic import services
from runplane.logic.keys import CreatedKey
from runplane.logic.sweep import sweep

from tests.conftest import Api, drain, make_runnable
from tests.contract import assert_run_state


def dispatch_event(account_id: str, run_id: str, message_id: str) -> dict:
    message = {
        "MessageId": message_id,
        "ReceiptHandle": message_id,
        "Body": json.dumps({"account_id": account_id, "run_id": run_id}),
    }
    return {"Records": [sqs_record(message, "arn:aws:sqs:us-east-1:123456789012:dispatch", "us-east-1")]}


def executions(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_ten_concurrent_deliveries_of_one_dispatch_run_the_runnable_once(
    api: Api, account: CreatedKey, tmp_path: Path
) -> None:
    counter = make_runnable(account.account_id, "count")
    path = tmp_path / "runs.txt"
    run_id = api.post(f"/v1/runnable/{counter}/runs", {"inputs": {"path": str(path), "seconds": 0.3}}).json()[
        "id"
    ]
    results: list[dict] = []
    threads = [
        threading.Thread(
            target=lambda i=i: results.append(
                worker.lambda_handler(
                    dispatch_event(account.account_id, run_id, f"m{i}"), LocalLambdaContext("worker")
                )
            )
        )
        for i in range(10)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    drain("worker")  # and the original message, once more
    assert len(executions(path)) == 1
    assert all(r == {"batchItemFailures": []} for r in results)  # duplicates are acknowledged, not retried
    assert api.get(f"/v1/run/{run_id}").json()["status"] == "completed"


def test_a_redelivered_message_for_a_finished_run_does_not_move_it(api: Api, echo_id: str, account) -> None:
    run_id = api.post(f"/v1/runnable/{echo_id}/runs", {"inputs": {"a": 1}}).json()["id"]
    drain("worker")
    before = api.get(f"/v1/run/{run_id}").json()
    worker.lambda_handler(dispatch_event(account.account_id, run_id, "again"), LocalLambdaContext("worker"))
    assert api.get(f"/v1/run/{run_id}").json() == before


def send_intake(env: dict[str, str], body: object) -> str:
    text = body if isinstance(body, str) else json.dumps(body)
    return boto3.client("sqs").send_message(QueueUrl=env["RUNPLANE_INTAKE_QUEUE_URL"], MessageBody=text)[
        "MessageId"
    ]


def intake_dead_letters(env: dict[str, str]) -> list[dict]:
    return (
        boto3.client("sqs")
        .receive_message(
            QueueUrl=env["RUNPLANE_INTAKE_DLQ_URL"], MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        )
        .get("Messages", [])
    )


def test_intake_message_starts_a_run_whose_id_derives_from_the_message_id(
    api: Api, env: dict[str, str], account: CreatedKey, echo_id: str
) -> None:
    message_id = send_intake(
        env,
        {
            "account_id": account.account_id,
            "runnable_id": echo_id,
            "inputs": {"via": "sqs"},
            "metadata": {"k": 1},
        },
    )
    drain("intake", "worker")
    run_id = intake_run_id(message_id)
    state = assert_run_state(api.get(f"/v1/run/{run_id}").json())
    assert state["status"] == "completed"
    assert state["result"]["outputs"] == {"via": "sqs"}
    assert state["created_by"] == "intake"


def test_intake_producer_may_choose_the_run_id_and_a_repeat_creates_no_second_run(
    api: Api, env: dict[str, str], account: CreatedKey, tmp_path: Path
) -> None:
    counter = make_runnable(account.account_id, "count")
    run_id = str(uuid.uuid4())
    message = {
        "account_id": account.account_id,
        "runnable_id": counter,
        "run_id": run_id,
        "inputs": {"path": str(tmp_path / "c")},
    }
    send_intake(env, message)
    send_intake(env, message)
    drain("intake", "worker")
    assert api.get(f"/v1/run/{run_id}").json()["status"] == "completed"
    assert len(executions(tmp_path / "c")) == 1
    assert len(api.get("/v1/runs").json()["items"]) == 1


def test_a_redelivered_intake_message_creates_one_run(
    env: dict[str, str], account: CreatedKey, echo_id: str
) -> None:
    from runplane.handlers import intake

    message = {
        "MessageId": "same-id",
        "ReceiptHandle": "r",
        "Body": json.dumps({"account_id": account.account_id, "runnable_id": echo_id}),
    }
    event = {"Records": [sqs_record(message, "arn:aws:sqs:us-east-1:123456789012:intake", "us-east-1")]}
    for _ in range(3):
        assert intake.lambda_handler(event, LocalLambdaContext("intake")) == {"batchItemFailures": []}
    records, _ = services.services().runs.list(account.account_id, RunQuery(), limit=10, cursor=None)
    assert [r.id for r in records] == [intake_run_id("same-id")]


@pytest.mark.parametrize(
    ("body", "code", "polled"),
    [
        ("not json at all", "invalid_json", False),
        ({"runnable_id": "7c1f7a9e-8e1a-4a39-9a53-5b8e4f0f1d11"}, "validation_error", False),
        (
            {"account_id": "acme", "runnable_id": "7c1f7a9e-8e1a-4a39-9a53-5b8e4f0f1d11"},
            "runnable_not_found",
            True,
        ),
        ({"account_id": "acme", "runnable_id": "RUNNABLE", "inputs": "nope"}, "validation_error", True),
        ({"account_id": "nobody", "runnable_id": "RUNNABLE"}, "account_not_found", False),
    ],
)
def test_an_invalid_intake_message_is_parked_in_the_dlq_with_its_reason_and_its_run_explains_it(
    api: Api, env: dict[str, str], account: CreatedKey, echo_id: str, body: object, code: str, polled: bool
) -> None:
    """Parked with its reason; for a known account, the run the producer polls (the message's id) is
    failed with the same code and reason instead of being missing."""
    if isinstance(body, dict) and body.get("runnable_id") == "RUNNABLE":
        body = {**body, "runnable_id": echo_id}
    message_id = send_intake(env, body)
    drain("intake")
    parked = intake_dead_letters(env)
    assert len(parked) == 1
    attributes = parked[0]["MessageAttributes"]
    assert attributes["runplane-error-code"]["StringValue"] == code
    reason = attributes["runplane-error"]["StringValue"]
    assert reason
    assert parked[0]["Body"] == (body if isinstance(body, str) else json.dumps(body))
    queue = boto3.client("sqs").get_queue_attributes(
        QueueUrl=env["RUNPLANE_INTAKE_QUEUE_URL"],
        AttributeNames=["ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessages"],
    )["Attributes"]
    assert queue == {"ApproximateNumberOfMessagesNotVisible": "0", "ApproximateNumberOfMessages": "0"}
    run = api.get(f"/v1/run/{intake_run_id(message_id)}")
    if not polled:
        assert run.status == 404
        return
    assert_run_state(run.json())
    assert run.json()["status"] == "failed"
    assert run.json()["result"]["error"] == {"message": reason, "code": code}
    assert api.get("/v1/account").json()["credits"]["used_runs"] == 0  # a rejection is not charged


def crash_mid_run(account_id: str, run_id: str, now: float) -> float:
    """A worker claims the run at `now` and dies; returns when its lease expires."""
    settings = services.services().settings
    lease_until = now + settings.lease_seconds
    runs = services.services().runs
    record = runs.get(account_id, run_id, consistent=True)
    claimed = runs.claim(record, "doomed", now, lease_until, settings.max_attempts)
    assert claimed is not None
    return lease_until


def test_sweeper_redispatches_a_run_whose_worker_died_and_it_completes(
    api: Api, account: CreatedKey, echo_id: str
) -> None:
    run_id = api.post(f"/v1/runnable/{echo_id}/runs", {"inputs": {"x": 1}}).json()["id"]
    boto3.client("sqs").purge_queue(
        QueueUrl=services.services().settings.dispatch_queue_url
    )  # the message is gone
    expiry = crash_mid_run(account.account_id, run_id, time.time() - 31)
    assert sweep(now=expiry - 1) == {}  # nothing to do while the lease is live
    assert sweep(now=expiry + 1)["redispatched"] == 1
    drain("worker")
    state = api.get(f"/v1/run/{run_id}").json()
    assert state["status"] == "completed"
    assert state["result"]["metadata"]["attempts"] == 2


def test_a_run_whose_workers_keep_dying_fails_after_max_attempts(
    api: Api, account: CreatedKey, echo_id: str
) -> None:
    run_id = api.post(f"/v1/runnable/{echo_id}/runs").json()["id"]
    boto3.client("sqs").purge_queue(QueueUrl=services.services().settings.dispatch_queue_url)
    now = time.time() - 1000
    for attempt in range(3):
        now = crash_mid_run(account.account_id, run_id, now) + 1
        assert sweep(now=now) == ({"redispatched": 1} if attempt < 2 else {"failed": 1})
    state = assert_run_state(api.get(f"/v1/run/{run_id}").json())
    assert state["status"] == "failed"
    assert state["result"]["error"]["code"] == "worker_lost"
    assert "3 attempts" in state["result"]["error"]["message"]
    assert sweep(now=time.time() + 10_000) == {}  # terminal runs leave the sweeper's index


def test_waiting_run_whose_dispatch_was_lost_is_dispatched_by_the_sweeper(api: Api, echo_id: str) -> None:
    run_id = api.post(f"/v1/runnable/{echo_id}/runs").json()["id"]
    boto3.client("sqs").purge_queue(QueueUrl=services.services().settings.dispatch_queue_url)
    assert sweep() == {}
    assert sweep(now=time.time() + 301)["redispatched"] == 1
    drain("worker")
    assert api.get(f"/v1/run/{run_id}").json()["status"] == "completed"


def test_a_dead_lettered_dispatch_fails_the_run(api: Api, account: CreatedKey, echo_id: str) -> None:
    run_id = api.post(f"/v1/runnable/{echo_id}/runs").json()["id"]
    result = dead_letters.lambda_handler(
        dispatch_event(account.account_id, run_id, "dl"), LocalLambdaContext("dead_letters")
    )
    assert result == {"batchItemFailures": []}
    state = assert_run_state(api.get(f"/v1/run/{run_id}").json())
    assert state["status"] == "failed"
    assert state["result"]["error"]["code"] == "dispatch_failed"


def test_a_terminal_run_cannot_be_moved_even_by_a_direct_store_write(
    api: Api, account: CreatedKey, echo_id: str
) -> None:
    run_id = api.post(f"/v1/runnable/{echo_id}/runs", {"inputs": {"x": 1}}).json()["id"]
    drain()
    state = api.get(f"/v1/run/{run_id}").json()
    assert state["status"] == "completed"
    store = services.services().runs
    record = store.get(account.account_id, state["id"], consistent=True)
    with pytest.raises(IllegalMove):
        store.finish_write(record, {"status": "failed"})
    assert api.get(f"/v1/run/{state['id']}").json() == state
