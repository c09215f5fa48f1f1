"""One test per defect the fault matrix found (D1-D9), each driving the real handlers and making one AWS
request fail the way it does in production: throttled after the SDK's retries, applied but its answer
lost, sent twice, or the process dying around it."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from runplane.adapters import aws
from runplane.logic import keys, services
from runplane.logic.accounts import set_credits
from runplane.logic.execute import process_dispatch
from runplane.logic.intake import accept_intake
from runplane.logic.keys import CreatedKey
from runplane.logic.sweep import sweep

from tests.conftest import LLM_RUN_COST, Api, drain, make_runnable


class Crash(BaseException):
    """The process died: nothing after this point of the invocation runs."""


def throttled(operation: str) -> ClientError:
    return ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, operation)


Matcher = Callable[[str, dict[str, Any]], bool]


@contextmanager
def broken(service: str, matches: Matcher, mode: str, times: int = 1) -> Iterator[list[str]]:
    """Within the block, the first `times` requests of `service` that `matches` fail by `mode`:
    "throttled" (not sent), "lost" (applied, then a timeout), "twice" (sent twice, the second answer
    returned) or "crash_before". Yields the operations hit."""
    client = aws.client(service)
    original = client._make_api_call
    hit: list[str] = []

    def call(operation: str, params: dict[str, Any]) -> Any:
        if len(hit) >= times or not matches(operation, params):
            return original(operation, params)
        hit.append(operation)
        if mode == "throttled":
            raise throttled(operation)
        if mode == "crash_before":
            raise Crash(operation)
        answer = original(operation, params)
        if mode == "lost":
            raise ReadTimeoutError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com")
        return original(operation, params) if mode == "twice" else answer

    client._make_api_call = call
    try:
        yield hit
    finally:
        del client._make_api_call


def on_table(table_env: str, *operations: str, containing: str = "") -> Matcher:
    """Requests naming the table of `table_env` (directly or in a transaction) whose text has `containing`."""

    def matches(operation: str, params: dict[str, Any]) -> bool:
        text = json.dumps(params)
        table = getattr(services.services().settings, table_env)
        return operation in operations and f'"{table}"' in text and containing in text

    return matches


def stores_a_run(operation: str, params: dict[str, Any]) -> bool:
    return on_table("runs_table", "PutItem", "TransactWriteItems", containing="live_key")(operation, params)


def ends_a_run(operation: str, params: dict[str, Any]) -> bool:
    return on_table("runs_table", "UpdateItem", "TransactWriteItems", containing="outcome_json")(
        operation, params
    )


@pytest.fixture
def lease(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> float:
    """A 9 s lease (renewed every 3 s), so tests see renewals and expiries in seconds."""
    monkeypatch.setenv("RUNPLANE_LEASE_SECONDS", "9")
    services.reset()
    return 9.0


def executions(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def state(api: Api, run_id: str) -> dict[str, Any]:
    return api.get(f"/v1/run/{run_id}").json()


def start(api: Api, runnable_id: str, inputs: dict[str, Any]) -> str:
    reply = api.post(f"/v1/runnable/{runnable_id}/runs", {"inputs": inputs})
    assert reply.status == 202, reply.text
    return reply.json()["id"]


def credits(api: Api) -> dict[str, Any]:
    return api.get("/v1/account").json()["credits"]


# --- D1: a transient error never makes a healthy worker abandon or re-execute its run ---


def test_d1_a_failed_lease_renewal_is_tried_again_and_the_run_completes_once(
    api: Api, account: CreatedKey, lease: float, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = make_runnable(account.account_id, "count")
    run_id = start(api, counted, {"path": str(tmp_path / "runs"), "seconds": 4})
    renewing = on_table("runs_table", "UpdateItem", containing="lease_until")
    with broken("dynamodb", renewing, "throttled") as renewals:
        drain("worker")
    assert renewals == ["UpdateItem"]
    assert state(api, run_id)["status"] == "completed"
    assert len(executions(tmp_path / "runs")) == 1


def test_d1_a_finish_that_fails_is_written_again(
    api: Api, account: CreatedKey, lease: float, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counted = make_runnable(account.account_id, "count")
    run_id = start(api, counted, {"path": str(tmp_path / "runs")})
    with broken("dynamodb", ends_a_run, "throttled") as finishes:
        drain("worker")
    assert finishes
    assert state(api, run_id)["status"] == "completed"
    assert len(executions(tmp_path / "runs")) == 1


def test_d1_d6_an_outcome_that_cannot_be_written_is_kept_and_recorded_by_the_sweeper_with_its_usage(
    api: Api, account: CreatedKey, lease: float, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tally = make_runnable(account.account_id, "tally")
    run_id = start(api, tally, {"path": str(tmp_path / "runs")})
    finishing = on_table("runs_table", "UpdateItem", "TransactWriteItems")
    ended: list[str] = []

    def runs_table_down(operation: str, params: dict[str, Any]) -> bool:
        """From the first try to record the outcome on, no write to the runs table gets through."""
        if ends_a_run(operation, params):
            ended.append(operation)
        return bool(ended) and finishing(operation, params)

    with broken("dynamodb", runs_table_down, "throttled", times=1000):
        drain("worker")  # the outcome is tried until the lease is at risk, then kept in S3
    assert ended
    assert state(api, run_id)["status"] == "running"
    actions = sweep(now=time.time() + lease + 1)
    assert actions["recovered"] == 1
    drain()
    run = state(api, run_id)
    assert (run["status"], run["result"]["outputs"]["attempt"]) == ("completed", 1)
    assert len(executions(tmp_path / "runs")) == 1
    assert credits(api)["used_usd"] == pytest.approx(LLM_RUN_COST)


# --- D2: only the lease holder's outcome is served ---


def test_d2_a_worker_that_lost_its_lease_does_not_overwrite_the_winners_outcome(
    api: Api, account: CreatedKey, lease: float, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNPLANE_INLINE_LIMIT_BYTES", "1024")  # the outcomes go to S3
    services.reset()
    tally = make_runnable(account.account_id, "tally")
    gate = tmp_path / "gate"
    run_id = start(api, tally, {"path": str(tmp_path / "runs"), "gate": str(gate), "pad": 4000})
    body = json.dumps({"account_id": account.account_id, "run_id": run_id})
    runs = services.services().runs
    renew = runs.renew
    stalled: list[str] = []

    def stalling(account_id: str, run_id: str, owner: str, until: float) -> Any:
        """The first worker stalls: its renewals never reach DynamoDB, though it believes they did."""
        stalled[:] = stalled or [owner]
        return (
            runs.get(account_id, run_id) if owner == stalled[0] else renew(account_id, run_id, owner, until)
        )

    monkeypatch.setattr(runs, "renew", stalling)
    slow = threading.Thread(target=process_dispatch, args=(body,))
    slow.start()

    def lease_expired() -> bool:
        record = runs.get(account.account_id, run_id, consistent=True)
        return record is not None and record.lease_until is not None and record.lease_until < time.time()

    while not lease_expired():
        time.sleep(0.1)
    Path(f"{gate}.2").touch()
    process_dispatch(body)  # the sweeper's re-dispatch: a second worker takes over and completes
    Path(f"{gate}.1").touch()
    slow.join()  # the first worker's body completes too, late
    ended = state(api, run_id)
    assert (ended["status"], ended["result"]["outputs"]["attempt"]) == ("completed", 2)
    assert len(executions(tmp_path / "runs")) == 2


# --- D3: one bad item does not stop the sweep ---


def test_d3_a_run_the_sweeper_cannot_handle_is_skipped_and_every_other_is_handled(
    api: Api, echo_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_ids = [start(api, echo_id, {"n": n}) for n in range(4)]
    runs = services.services().runs
    reschedule = runs.reschedule

    def poisoned(account_id: str, run_id: str, *args: Any, **kwargs: Any) -> Any:
        if run_id == run_ids[1]:
            raise throttled("UpdateItem")
        return reschedule(account_id, run_id, *args, **kwargs)

    monkeypatch.setattr(runs, "reschedule", poisoned)
    now = time.time() + services.services().settings.redispatch_seconds + 1
    actions = sweep(now=now)
    assert (actions["redispatched"], actions["errors"]) == (3, 1)
    postponed = runs.get("acme", run_ids[1], consistent=True)
    assert postponed is not None
    assert postponed.due_at == pytest.approx(now + 60)


# --- D4, D8: a stored run is answered as accepted; a charge never comes without its run ---


@pytest.mark.parametrize("budget", [None, 100], ids=["unbudgeted", "budgeted"])
def test_d4_a_create_whose_answer_was_lost_is_answered_202_and_charged_once(
    api: Api, account: CreatedKey, echo_id: str, budget: int | None
) -> None:
    set_credits(account.account_id, None, budget)  # without a budget the run is a PutItem, counted nowhere
    with broken("dynamodb", stores_a_run, "lost") as lost:
        reply = api.post(f"/v1/runnable/{echo_id}/runs", {"inputs": {}})
    assert lost
    assert reply.status == 202, reply.text
    assert state(api, reply.json()["id"])["status"] == "waiting"
    assert [run["id"] for run in api.get("/v1/runs").json()["items"]] == [reply.json()["id"]]
    assert credits(api)["used_runs"] == (1 if budget else 0)


@pytest.mark.parametrize("budget", [None, 100], ids=["unbudgeted", "budgeted"])
def test_d8_a_crash_before_the_run_is_stored_leaves_no_charge(
    api: Api, account: CreatedKey, echo_id: str, budget: int | None
) -> None:
    set_credits(account.account_id, None, budget)
    with broken("dynamodb", stores_a_run, "crash_before") as hit, pytest.raises(Crash):
        api.post(f"/v1/runnable/{echo_id}/runs", {"inputs": {}})
    assert hit
    assert api.get("/v1/runs").json()["items"] == []
    assert credits(api)["used_runs"] == 0


# --- D5: AWS errors while admitting a request are never an escape (a 502): authentication's are the JSON
# 500; the rate limit's counter is passed over (the instance limits the key alone: logic/keys.py) ---


def test_d5_an_aws_error_while_authenticating_is_the_json_500(api: Api) -> None:
    keys._cache = keys._PrincipalCache()
    with broken("dynamodb", on_table("keys_table", "GetItem"), "throttled") as hit:
        reply = api.get("/v1/runs")
    assert hit
    assert reply.status == 500
    assert reply.json()["code"] == "internal_error"
    assert "request id" in reply.json()["error"]


@pytest.mark.parametrize("mode", ["throttled", "lost"])
def test_d5_a_rate_limit_counter_that_fails_admits_the_request(
    api: Api, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    monkeypatch.setenv("RUNPLANE_RATE_LIMIT_BURST", "8")  # a share of 1: every request is counted
    services.reset()
    keys._cache = keys._PrincipalCache()
    api.get("/v1/runs")  # the key is verified and cached
    with broken("dynamodb", on_table("keys_table", "UpdateItem"), mode) as hit:
        reply = api.get("/v1/runs")
    assert hit
    assert reply.status == 200, reply.text


# --- D6, D7: usage and charges are counted once, whatever the SDK resends ---


def test_d6_usage_is_counted_when_the_finish_was_applied_but_its_answer_lost(
    api: Api, account: CreatedKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm = make_runnable(account.account_id, "llm")
    run_id = start(api, llm, {})
    with broken("dynamodb", ends_a_run, "lost") as lost:
        drain("worker")
    assert lost
    assert state(api, run_id)["status"] == "completed"
    assert credits(api)["used_usd"] == pytest.approx(LLM_RUN_COST)
    assert api.get("/v1/account/usage").json()["total_input_tokens"] == 150


@pytest.mark.parametrize("counter", ["used_runs", "used_usd"])
def test_d7_a_counter_resent_by_the_sdk_is_counted_once(
    api: Api, account: CreatedKey, monkeypatch: pytest.MonkeyPatch, counter: str
) -> None:
    llm = make_runnable(account.account_id, "llm")
    set_credits(account.account_id, None, 100)
    requests = ("UpdateItem", "TransactWriteItems")
    with broken("dynamodb", on_table("accounts_table", *requests, containing=counter), "twice", 10) as sent:
        run_id = start(api, llm, {})
        drain("worker")
    assert sent
    assert state(api, run_id)["status"] == "completed"
    assert credits(api)["used_runs"] == 1
    assert credits(api)["used_usd"] == pytest.approx(LLM_RUN_COST)


# --- D9: a cancel answered 202 ends cancelled ---


def test_d9_a_run_cancelled_while_its_body_finishes_ends_cancelled_with_its_outputs(
    api: Api, account: CreatedKey, tmp_path: Path
) -> None:
    tally = make_runnable(account.account_id, "tally")
    gate = tmp_path / "gate"
    run_id = start(api, tally, {"path": str(tmp_path / "runs"), "gate": str(gate)})
    worker = threading.Thread(target=drain, args=("worker",))
    worker.start()
    while state(api, run_id)["status"] != "running":
        time.sleep(0.05)
    assert api.post(f"/v1/run/{run_id}/cancel").status == 202
    Path(f"{gate}.1").touch()  # the body returns before the worker's next renewal
    worker.join()
    ended = state(api, run_id)
    assert ended["status"] == "cancelled"
    assert ended["result"]["outputs"]["attempt"] == 1
    assert ended["result"]["error"]["code"] == "cancelled"


# --- found in review of the fixes ---


@pytest.mark.parametrize("step", ["claim", "payload"])
def test_a_transient_error_before_the_body_starts_does_not_cost_an_at_most_once_run(
    api: Api, account: CreatedKey, tmp_path: Path, step: str
) -> None:
    """The claim applied with its answer lost, or the payload's read throttled: the worker keeps its run."""
    counted = make_runnable(account.account_id, "count", retry_on_worker_lost=False)
    run_id = start(api, counted, {"path": str(tmp_path / "runs"), "pad": "y" * 120_000})  # payload in S3
    if step == "claim":
        failing = broken(
            "dynamodb",
            on_table("runs_table", "UpdateItem", "TransactWriteItems", containing="lease_owner"),
            "lost",
        )  # the claim: the first write naming a lease owner
    else:
        failing = broken("s3", lambda operation, params: operation == "GetObject", "throttled")
    with failing as hit:
        drain("worker")
    assert hit
    assert state(api, run_id)["status"] == "completed"
    assert len(executions(tmp_path / "runs")) == 1


def test_a_failed_renewal_is_tried_again_with_a_short_lease(
    api: Api, account: CreatedKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNPLANE_LEASE_SECONDS", "6")
    services.reset()
    counted = make_runnable(account.account_id, "count")
    run_id = start(api, counted, {"path": str(tmp_path / "runs"), "seconds": 3})
    with broken(
        "dynamodb", on_table("runs_table", "UpdateItem", containing="lease_until"), "throttled"
    ) as hit:
        drain("worker")
    assert hit == ["UpdateItem"]
    assert state(api, run_id)["status"] == "completed"
    assert len(executions(tmp_path / "runs")) == 1


def test_an_outcome_that_fits_the_inline_limit_but_not_the_item_goes_to_s3(
    api: Api, account: CreatedKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The item also holds the runnable's snapshot and the inline payload: together over 400 KB, the
    outcome is stored in S3 (DynamoDB would refuse the item, which no retry cures)."""
    schema = {"type": "object", "description": "z" * 215_000}
    producer = make_runnable(account.account_id, "big", output_schema=schema)
    run_id = start(api, producer, {"size": 99_000, "pad": "p" * 99_000})
    drain("worker")
    ended = state(api, run_id)
    assert ended["status"] == "completed"
    assert len(ended["result"]["outputs"]["text"]) == 99_000
    record = services.services().runs.get(account.account_id, run_id, consistent=True)
    assert record is not None
    assert record.outcome_ref is not None


def test_an_outcome_dynamodb_refuses_fails_the_run_instead_of_retrying(
    api: Api, echo_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = ClientError(
        {"Error": {"Code": "ValidationException", "Message": "Item too large"}}, "UpdateItem"
    )
    client = aws.client("dynamodb")
    original = client._make_api_call

    def call(operation: str, params: dict[str, Any]) -> Any:
        if ends_a_run(operation, params) and "unstorable_outcome" not in json.dumps(params):
            raise refused
        return original(operation, params)

    run_id = start(api, echo_id, {"x": 1})
    monkeypatch.setattr(client, "_make_api_call", call)
    started = time.monotonic()
    drain("worker")
    assert time.monotonic() - started < 30
    monkeypatch.undo()
    ended = state(api, run_id)
    assert (ended["status"], ended["result"]["error"]["code"]) == ("failed", "unstorable_outcome")


def test_a_corrected_intake_message_replaces_the_rejection_under_the_same_run_id(
    api: Api, account: CreatedKey, echo_id: str
) -> None:
    set_credits(account.account_id, None, 100)
    run_id = str(uuid.uuid4())
    wrong = {"account_id": account.account_id, "runnable_id": str(uuid.uuid4()), "run_id": run_id}
    assert accept_intake(json.dumps(wrong), "first") is None
    assert state(api, run_id)["result"]["error"]["code"] == "runnable_not_found"
    assert accept_intake(json.dumps({**wrong, "runnable_id": echo_id, "inputs": {"n": 1}}), "fixed") == run_id
    drain("worker")
    assert state(api, run_id)["status"] == "completed"
    assert credits(api)["used_runs"] == 1


def test_an_account_whose_key_predates_opened_accounts_is_known_to_intake_once_it_authenticates(
    api: Api, account: CreatedKey, env: dict[str, str]
) -> None:
    accounts = services.services().accounts
    accounts.client.delete_item(TableName=env["RUNPLANE_ACCOUNTS_TABLE"], Key={"account_id": {"S": "acme"}})
    keys._cache = keys._PrincipalCache()
    api.get("/v1/runs")
    assert accounts.get("acme") is not None
