"""When the sweeper looks at a run: a prompt claim leaves the run's `live` entry as the create wrote it
(no index write), and the sweeper, looking then, finds either a live lease (it looks again when the lease
ends, so a dead worker is still found within a minute of it) or a run still waiting for its first worker
(it waits for the redispatch delay before sending it again)."""

from __future__ import annotations

import time
from typing import Any

import boto3
from runplane.domain.models import RunRecord
from runplane.logic import admission, services
from runplane.logic.sweep import sweep

from tests.conftest import Api, make_runnable


def start(api: Api, runnable_id: str) -> str:
    reply = api.post(f"/v1/runnable/{runnable_id}/runs", {"inputs": {"seconds": 0}})
    assert reply.status == 202, reply.text
    return reply.json()["id"]


def record(account_id: str, run_id: str) -> RunRecord:
    found = services.services().runs.get(account_id, run_id, consistent=True)
    assert found is not None
    return found


def live_entry(account_id: str, run_id: str) -> dict[str, Any]:
    """The run's entry in the `live` index, as the index holds it."""
    settings = services.services().settings
    items = boto3.client("dynamodb").scan(TableName=settings.runs_table, IndexName="live")["Items"]
    (entry,) = [item for item in items if item["pk"]["S"].endswith(run_id)]
    return entry


def drop_dispatches(env: dict[str, str]) -> None:
    """The dispatch messages are lost: only the sweeper can send the runs again."""
    sqs, url = boto3.client("sqs"), env["RUNPLANE_DISPATCH_QUEUE_URL"]
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        for message in messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def test_a_prompt_claim_leaves_the_live_entry_as_the_create_wrote_it(
    api: Api, account: Any, env: dict[str, str]
) -> None:
    run_id = start(api, make_runnable(account.account_id, "sleep"))
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
    run_id = start(api, make_runnable(account.account_id, "sleep"))
    drop_dispatches(env)
    claimed = admission.admit(record(account.account_id, run_id), "a-worker", 30)
    assert claimed is not None
    renewed = services.services().runs.renew(claimed, "a-worker", time.time() + 90)  # a long run
    assert renewed is not None
    assert renewed.lease_until is not None

    assert sweep(renewed.lease_until - 10) == {"lease_live": 1}
    assert record(account.account_id, run_id).due_at == renewed.lease_until
    assert sweep(renewed.lease_until - 5) == {}  # not due again before the lease ends
    assert sweep(renewed.lease_until + 1)["redispatched"] == 1  # its worker stopped renewing it


def test_a_run_still_waiting_at_its_first_look_is_sent_again_after_the_redispatch_delay(
    api: Api, account: Any, env: dict[str, str]
) -> None:
    run_id = start(api, make_runnable(account.account_id, "sleep"))
    drop_dispatches(env)
    created_at = record(account.account_id, run_id).created_at.timestamp()
    settings = services.services().settings
    assert settings.lease_seconds < settings.redispatch_seconds

    assert sweep(created_at + settings.lease_seconds + 1) == {"dispatch_pending": 1}
    assert record(account.account_id, run_id).due_at == created_at + settings.redispatch_seconds
    assert sweep(created_at + settings.redispatch_seconds - 1) == {}
    assert sweep(created_at + settings.redispatch_seconds + 1) == {"redispatched": 1}
