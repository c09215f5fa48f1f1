"""Idempotency keys: a retried request never starts a second run."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import boto3
import pytest
from runplane.domain.ids import intake_run_id
from runplane.domain.models import StartRunRequest
from runplane.logic import runs, services
from runplane.logic.keys import CreatedKey, create_key

from tests.conftest import Api, drain, make_runnable
from tests.integration.test_delivery import send_intake


def start(api: Api, runnable_id: str, key: str, body: dict | None = None, mode: str = "async"):
    return api.post(
        f"/v1/runnable/{runnable_id}/runs?mode={mode}", body or {}, headers={"Idempotency-Key": key}
    )


def run_ids(api: Api) -> list[str]:
    return [r["id"] for r in api.get("/v1/runs?limit=100").json()["items"]]


def test_a_repeated_request_gets_the_same_run_marked_as_a_replay(api: Api, echo_id: str) -> None:
    first = start(api, echo_id, "order-17", {"inputs": {"n": 1}})
    again = start(api, echo_id, "order-17", {"inputs": {"n": 1}})
    assert first.status == again.status == 202
    assert first.json()["id"] == again.json()["id"]
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert run_ids(api) == [first.json()["id"]]


def test_the_same_key_with_a_different_request_is_a_409(api: Api, echo_id: str) -> None:
    start(api, echo_id, "order-18", {"inputs": {"n": 1}})
    reply = start(api, echo_id, "order-18", {"inputs": {"n": 2}})
    assert reply.status == 409
    assert reply.json()["code"] == "idempotency_key_reused"
    assert len(run_ids(api)) == 1


def test_a_retried_sync_request_answers_with_the_runs_current_state(api: Api, echo_id: str) -> None:
    run_id = start(api, echo_id, "sync-1", {"inputs": {"x": 1}}).json()["id"]
    drain()
    reply = start(api, echo_id, "sync-1", {"inputs": {"x": 1}}, mode="sync")
    assert reply.status == 200
    assert reply.headers["Idempotent-Replayed"] == "true"
    assert reply.json()["id"] == run_id
    assert reply.json()["result"]["outputs"] == {"x": 1}


def test_keys_belong_to_an_account(api: Api, echo_id: str) -> None:
    other = Api(create_key("globex").token)
    theirs = make_runnable("globex", "echo")
    mine = start(api, echo_id, "shared-key").json()["id"]
    assert start(other, theirs, "shared-key").json()["id"] != mine


def test_parallel_duplicates_create_one_run(account: CreatedKey, echo_id: str) -> None:
    def attempt(_: int) -> str:
        reply = start(Api(account.token), echo_id, "burst-1", {"inputs": {"same": True}})
        assert reply.status == 202, reply.text
        return reply.json()["id"]

    with ThreadPoolExecutor(16) as pool:
        ids = set(pool.map(attempt, range(32)))
    assert len(ids) == 1
    assert run_ids(Api(account.token)) == list(ids)


def test_a_binding_left_by_a_crash_before_the_run_existed_is_completed_by_the_retry(
    api: Api, account: CreatedKey, echo_id: str
) -> None:
    bound = "00000000-0000-7000-8000-000000000000"
    request = StartRunRequest(inputs={"a": 1})
    fingerprint = runs._fingerprint(echo_id, request)
    now = time.time()
    services.services().runs.remember_idempotency(
        account.account_id, "crashed", bound, fingerprint, now, now + 60
    )
    reply = start(api, echo_id, "crashed", {"inputs": {"a": 1}})
    assert reply.json()["id"] == bound
    assert api.get(f"/v1/run/{reply.json()['id']}").status == 200


def test_after_24_hours_a_key_starts_a_new_run(api: Api, env: dict[str, str], echo_id: str) -> None:
    first = start(api, echo_id, "daily").json()["id"]
    table = boto3.resource("dynamodb").Table(env["RUNPLANE_RUNS_TABLE"])
    for item in table.scan()["Items"]:
        if "#idempotency#" in item["pk"]:
            table.update_item(
                Key={"pk": item["pk"]},
                UpdateExpression="SET expires_at = :t",
                ExpressionAttributeValues={":t": int(time.time()) - 1},
            )
    second = start(api, echo_id, "daily")
    assert second.json()["id"] != first
    assert "Idempotent-Replayed" not in second.headers


@pytest.mark.parametrize("key", ["", "x" * 256, "has space", "ünïcode"])
def test_an_unusable_key_is_a_400(api: Api, echo_id: str, key: str) -> None:
    reply = start(api, echo_id, key)
    assert reply.status == 400, reply.text
    assert len(run_ids(api)) == 0


def test_intake_messages_with_the_same_idempotency_key_start_one_run(
    api: Api, env: dict[str, str], account: CreatedKey, echo_id: str
) -> None:
    message = {
        "account_id": account.account_id,
        "runnable_id": echo_id,
        "inputs": {"k": 1},
        "idempotency_key": "batch-9",
    }
    first = send_intake(env, message)
    second = send_intake(env, message)
    drain("intake", "worker")
    assert run_ids(api) == [intake_run_id(first)]
    assert api.get(f"/v1/run/{intake_run_id(second)}").status == 404
