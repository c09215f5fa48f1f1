"""Credit budgets: 402 once spent, running runs finish, usage visible, never charged twice."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from runplane.logic.accounts import set_credits
from runplane.logic.keys import CreatedKey

from tests.conftest import Api, drain, make_runnable
from tests.integration.test_delivery import send_intake


def start(api: Api, runnable_id: str, **headers: str):
    return api.post(f"/v1/runnable/{runnable_id}/runs", {"inputs": {"prompt": "hi"}}, headers=headers)


def test_runs_are_counted_only_against_a_budget(api: Api, account: CreatedKey, echo_id: str) -> None:
    start(api, echo_id)
    start(api, echo_id)
    assert api.get("/v1/account").json()["credits"] == {
        "limit_usd": None,
        "used_usd": 0.0,
        "limit_runs": None,
        "used_runs": 0,
    }
    set_credits(account.account_id, limit_usd=None, limit_runs=10)
    start(api, echo_id)
    assert api.get("/v1/account").json()["credits"]["used_runs"] == 1


def test_a_budget_set_by_another_process_applies_within_a_minute(
    api: Api, account: CreatedKey, echo_id: str, monkeypatch
) -> None:
    from runplane.adapters.accounts import AccountStore
    from runplane.logic.runs import BUDGET_SECONDS
    from runplane.logic.services import services

    start(api, echo_id)  # this process now knows the account has no budget
    elsewhere = AccountStore(services().settings.accounts_table)  # `runplane accounts` in another process
    elsewhere.set_credits(account.account_id, None, 1)
    start(api, echo_id)
    assert api.get("/v1/account").json()["credits"]["used_runs"] == 0
    budgets = services().accounts._budgets
    known = budgets[account.account_id]
    monkeypatch.setitem(budgets, account.account_id, (known[0] - BUDGET_SECONDS, known[1]))
    assert start(api, echo_id).status == 202
    assert api.get("/v1/account").json()["credits"]["used_runs"] == 1
    assert start(api, echo_id).status == 402


def test_a_run_budget_admits_exactly_that_many_runs_even_in_parallel(
    api: Api, account: CreatedKey, echo_id: str
) -> None:
    set_credits(account.account_id, limit_usd=None, limit_runs=5)

    def attempt(_: int) -> int:
        return start(Api(account.token), echo_id).status

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(attempt, range(12)))
    assert sorted(statuses) == [202] * 5 + [402] * 7
    refused = start(api, echo_id)
    assert refused.json() == {"error": "Insufficient credits", "code": "insufficient_credits", "issues": []}
    assert len(api.get("/v1/runs?limit=100").json()["items"]) == 5
    assert api.get("/v1/account").json()["credits"]["used_runs"] == 5


def test_a_usd_budget_stops_new_runs_once_recorded_cost_reaches_it_and_running_runs_finish(
    api: Api, account: CreatedKey
) -> None:
    llm = make_runnable(account.account_id, "llm")
    set_credits(account.account_id, limit_usd=0.005, limit_runs=None)  # each llm run costs 0.003
    first, second = (
        start(api, llm).json()["id"],
        start(api, llm).json()["id"],
    )  # both admitted: nothing spent yet
    drain()
    assert {api.get(f"/v1/run/{r}").json()["status"] for r in (first, second)} == {"completed"}
    spent = api.get("/v1/account").json()["credits"]["used_usd"]
    assert spent == 0.006
    assert start(api, llm).status == 402
    set_credits(account.account_id, limit_usd=1.0, limit_runs=None)
    assert start(api, llm).status == 202


def test_idempotent_replays_and_redelivered_intake_messages_are_charged_once(
    api: Api, env: dict[str, str], account: CreatedKey, echo_id: str
) -> None:
    set_credits(account.account_id, limit_usd=None, limit_runs=100)
    for _ in range(3):
        start(api, echo_id, **{"Idempotency-Key": "once"})
    message = {
        "account_id": account.account_id,
        "runnable_id": echo_id,
        "run_id": "0195f3c1-0000-7000-8000-000000000001",
    }
    send_intake(env, message)
    send_intake(env, message)
    drain("intake")
    assert api.get("/v1/account").json()["credits"]["used_runs"] == 2


def test_an_exhausted_budget_parks_intake_messages_with_the_reason(
    api: Api, env: dict[str, str], account: CreatedKey, echo_id: str
) -> None:
    from tests.integration.test_delivery import intake_dead_letters

    set_credits(account.account_id, limit_usd=None, limit_runs=0)
    send_intake(env, {"account_id": account.account_id, "runnable_id": echo_id})
    drain("intake")
    [parked] = intake_dead_letters(env)
    assert parked["MessageAttributes"]["runplane-error-code"]["StringValue"] == "insufficient_credits"
