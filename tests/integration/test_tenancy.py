"""One account never sees another's objects: every endpoint answers 404, every listing leaves them out."""

from __future__ import annotations

from typing import Any

import pytest
from runplane.logic.accounts import set_credits
from runplane.logic.keys import CreatedKey, create_key

from tests.conftest import Api, drain, make_runnable

SPEC = {"name": "echo", "kind": "python", "config": {"function": "echo"}}
CALLS = [
    ("GET", "/v1/runnable/{runnable}", None),
    ("PUT", "/v1/runnable/{runnable}", SPEC),
    ("DELETE", "/v1/runnable/{runnable}", None),
    ("POST", "/v1/runnable/{runnable}/runs", {}),
    ("POST", "/v1/runnable/{runnable}/runs?mode=sync", {}),
    ("GET", "/v1/run/{run}", None),
    ("POST", "/v1/run/{run}/cancel", None),
    ("GET", "/v1/run/{run}/callbacks", None),
    ("POST", "/v1/run/{run}/callbacks/redeliver", None),
    ("DELETE", "/v1/keys/{key}", None),
]


@pytest.fixture
def acmes(api: Api, account: CreatedKey, echo_id: str) -> dict[str, str]:
    set_credits(account.account_id, limit_usd=None, limit_runs=10)  # so the run is counted
    run = api.post(f"/v1/runnable/{echo_id}/runs", {"callback_url": "https://hooks.example.com/x"}).json()[
        "id"
    ]
    drain("worker")
    return {"runnable": echo_id, "run": run, "key": account.key_id}


@pytest.fixture
def intruder() -> Api:
    make_runnable("globex", "echo")
    return Api(create_key("globex", scopes=["admin"]).token)


@pytest.mark.parametrize(("method", "path", "body"), CALLS, ids=[f"{m} {p}" for m, p, _ in CALLS])
def test_another_accounts_objects_are_not_found(
    api: Api, acmes: dict[str, str], intruder: Api, method: str, path: str, body: Any
) -> None:
    reply = intruder.call(method, path.format(**acmes), body)
    assert reply.status == 404, reply.text
    assert api.get(f"/v1/run/{acmes['run']}").json()["status"] == "completed"  # untouched
    assert api.get(f"/v1/runnable/{acmes['runnable']}").status == 200


def test_listings_never_show_another_accounts_items(api: Api, acmes: dict[str, str], intruder: Api) -> None:
    theirs = intruder.get("/v1/runnables").json()["items"]
    assert [r["account_id"] for r in theirs] == ["globex"]
    for query in ("", "?status=completed", f"?runnable_id={acmes['runnable']}"):
        assert intruder.get(f"/v1/runs{query}").json()["items"] == []
    assert {k["account_id"] for k in intruder.get("/v1/keys").json()["items"]} == {"globex"}
    assert intruder.get("/v1/account").json()["credits"]["used_runs"] == 0
    assert api.get("/v1/account").json()["credits"]["used_runs"] == 1
