"""Runnables by name: a name is unique within an account (a claim item written with the runnable in one
transaction), found with GET /v1/runnables?name=, moved by a replace, freed by a delete; retried and
concurrent writes keep exactly one runnable per name."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from runplane.adapters import runnables as store
from runplane.domain.errors import Conflict
from runplane.domain.models import RunnableFields
from runplane.logic import keys
from runplane.logic.runnables import create_runnable

from tests.conftest import Api


def spec(name: str, function: str = "echo") -> dict[str, Any]:
    return {"name": name, "kind": "python", "config": {"function": function}}


def create(api: Api, name: str, function: str = "echo") -> str:
    reply = api.post("/v1/runnables", spec(name, function))
    assert reply.status == 201, reply.text
    return reply.json()["id"]


def named(api: Api, name: str) -> list[str]:
    reply = api.get(f"/v1/runnables?name={name}")
    assert reply.status == 200, reply.text
    assert reply.json()["next_cursor"] is None
    return [item["id"] for item in reply.json()["items"]]


def listed(api: Api) -> list[str]:
    return [item["id"] for item in api.get("/v1/runnables?limit=100").json()["items"]]


def test_a_runnable_is_found_by_its_exact_name(api: Api) -> None:
    nap = create(api, "nap", "sleep")
    echo = create(api, "echo")
    assert named(api, "nap") == [nap]
    assert named(api, "echo") == [echo]
    assert named(api, "Nap") == []
    assert named(api, "na") == []
    assert listed(api) == [echo, nap]  # the name claims never show in listings


def test_a_name_in_use_is_409_naming_the_runnable_that_has_it(api: Api) -> None:
    first = create(api, "nap", "sleep")
    reply = api.post("/v1/runnables", spec("nap"))
    assert reply.status == 409, reply.text
    assert reply.json()["code"] == "runnable_name_taken"
    assert first in reply.json()["error"]
    assert listed(api) == [first]


def test_names_are_unique_per_account_not_across_accounts(api: Api) -> None:
    other = Api(keys.create_key("globex", scopes=["admin"]).token)
    mine, theirs = create(api, "nap"), create(other, "nap")
    assert named(api, "nap") == [mine]
    assert named(other, "nap") == [theirs]


def test_a_replace_moves_the_name_and_frees_the_old_one(api: Api) -> None:
    runnable = create(api, "nap", "sleep")
    reply = api.call("PUT", f"/v1/runnable/{runnable}", spec("siesta", "sleep"))
    assert reply.status == 200, reply.text
    assert named(api, "siesta") == [runnable]
    assert named(api, "nap") == []
    again = create(api, "nap")  # the old name is free
    assert named(api, "nap") == [again]


def test_a_replace_onto_a_name_in_use_is_409_and_changes_nothing(api: Api) -> None:
    nap, echo = create(api, "nap", "sleep"), create(api, "echo")
    reply = api.call("PUT", f"/v1/runnable/{nap}", spec("echo", "fail"))
    assert reply.status == 409, reply.text
    assert reply.json()["code"] == "runnable_name_taken"
    assert api.get(f"/v1/runnable/{nap}").json()["config"] == {"function": "sleep"}
    assert named(api, "nap") == [nap]
    assert named(api, "echo") == [echo]


def test_a_replace_keeping_the_name_keeps_it(api: Api) -> None:
    nap = create(api, "nap", "sleep")
    assert api.call("PUT", f"/v1/runnable/{nap}", spec("nap", "echo")).status == 200
    assert named(api, "nap") == [nap]
    assert api.post("/v1/runnables", spec("nap")).status == 409


def test_a_delete_frees_the_name(api: Api) -> None:
    nap = create(api, "nap", "sleep")
    assert api.call("DELETE", f"/v1/runnable/{nap}").status == 204
    assert named(api, "nap") == []
    assert api.call("DELETE", f"/v1/runnable/{nap}").status == 404
    assert named(api, create(api, "nap")) == []  # (an id is no name)
    assert len(named(api, "nap")) == 1


def lost_answers(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every transaction of the runnables table is applied, its answer lost and sent again (as botocore
    retries a timed-out request): the second attempt finds the first's writes. Returns each retry's
    outcome."""
    transact, retries = store.transact, []

    def twice(client: Any, writes: list[dict[str, Any]]) -> list[str]:
        transact(client, writes)
        retries.append(transact(client, writes))
        return retries[-1]

    monkeypatch.setattr(store, "transact", twice)
    return retries


def test_writes_whose_answers_were_lost_are_not_refused(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    retries = lost_answers(monkeypatch)
    nap = create(api, "nap", "sleep")
    assert api.call("PUT", f"/v1/runnable/{nap}", spec("siesta", "sleep")).status == 200
    assert api.call("PUT", f"/v1/runnable/{nap}", spec("siesta", "echo")).status == 200
    echo = create(api, "echo")
    assert api.call("DELETE", f"/v1/runnable/{echo}").status == 204
    # a create's retry finds the first attempt's writes (and the claim names this runnable: no 409);
    # a replace's or a delete's applies again
    assert [bool(reasons) for reasons in retries] == [True, False, False, True, False], retries
    monkeypatch.undo()
    assert named(api, "siesta") == [nap]
    assert named(api, "nap") == named(api, "echo") == []
    assert listed(api) == [nap]


def test_concurrent_creates_of_one_name_make_one_runnable(api: Api, account: keys.CreatedKey) -> None:
    """Eight at once, as eight api instances would (one resolver serves one request at a time)."""

    def create_nap(_: int) -> str:
        try:
            return create_runnable(account.account_id, RunnableFields(**spec("nap"))).id
        except Conflict as taken:
            return taken.code

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(create_nap, range(8)))
    made = [outcome for outcome in outcomes if outcome != "runnable_name_taken"]
    assert len(made) == 1, outcomes
    assert listed(api) == named(api, "nap") == made


def test_a_runnable_registered_before_names_were_claimed_claims_its_name_when_replaced(
    api: Api, account: keys.CreatedKey, env: dict[str, str]
) -> None:
    nap = create(api, "nap", "sleep")
    table = boto3.client("dynamodb")
    name = env["RUNPLANE_RUNNABLES_TABLE"]
    table.delete_item(
        TableName=name, Key={"account_id": {"S": f"names#{account.account_id}"}, "id": {"S": "nap"}}
    )
    table.update_item(
        TableName=name,
        Key={"account_id": {"S": account.account_id}, "id": {"S": nap}},
        UpdateExpression="REMOVE #name",
        ExpressionAttributeNames={"#name": "name"},
    )
    assert named(api, "nap") == []
    assert api.call("PUT", f"/v1/runnable/{nap}", spec("nap", "sleep")).status == 200
    assert named(api, "nap") == [nap]
    assert api.call("DELETE", f"/v1/runnable/{nap}").status == 204
    assert named(api, "nap") == []
