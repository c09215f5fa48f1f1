"""API key scopes and the admin endpoints for keys."""

from __future__ import annotations

from typing import Any, get_args

import boto3
import pytest
from runplane.domain.access import DEFAULT_SCOPES, Scope
from runplane.logic.keys import CreatedKey, create_key

from tests.conftest import Api, drain

SPEC = {"name": "echo", "kind": "python", "config": {"function": "echo"}}

# (method, path template, body, the scope the endpoint needs)
ENDPOINTS = [
    ("POST", "/v1/runnables", SPEC, "runnables:write"),
    ("GET", "/v1/runnables", None, "runnables:read"),
    ("GET", "/v1/runnable/{runnable}", None, "runnables:read"),
    ("PUT", "/v1/runnable/{runnable}", SPEC, "runnables:write"),
    ("DELETE", "/v1/runnable/{runnable}", None, "runnables:write"),
    ("POST", "/v1/runnable/{runnable}/runs", {}, "runs:write"),
    ("GET", "/v1/run/{run}", None, "runs:read"),
    ("POST", "/v1/run/{run}/cancel", None, "runs:write"),
    ("GET", "/v1/runs", None, "runs:read"),
    ("GET", "/v1/run/{run}/callbacks", None, "runs:read"),
    ("POST", "/v1/run/{run}/callbacks/redeliver", None, "runs:write"),
    ("GET", "/v1/callbacks/secret", None, "admin"),
    ("POST", "/v1/callbacks/secret/rotate", None, "admin"),
    ("GET", "/v1/keys", None, "admin"),
    ("POST", "/v1/keys", {"scopes": ["runs:read"]}, "admin"),
    ("DELETE", "/v1/keys/{key}", None, "admin"),
]


@pytest.fixture
def objects(api: Api, account: CreatedKey, echo_id: str) -> dict[str, str]:
    run_id = api.post(f"/v1/runnable/{echo_id}/runs", {}).json()["id"]
    drain()
    spare = create_key(account.account_id)
    return {"runnable": echo_id, "run": run_id, "key": spare.key_id}


def with_scopes(account: CreatedKey, scopes: list[str]) -> Api:
    return Api(create_key(account.account_id, scopes=scopes).token)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("method", "path", "body", "needed"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _, _ in ENDPOINTS]
)
def test_each_endpoint_needs_its_scope(
    account: CreatedKey, objects: dict[str, str], method: str, path: str, body: Any, needed: str
) -> None:
    url = path.format(**objects)
    others = [s for s in get_args(Scope) if s not in (needed, "admin")]
    refused = with_scopes(account, others).call(method, url, body)
    assert refused.status == 403, refused.text
    assert refused.json() == {
        "error": f"This API key lacks the permissions {needed}",
        "code": "forbidden",
        "issues": [],
        "missingPerms": [needed],
    }
    allowed = with_scopes(account, [needed]).call(method, url, body)
    assert allowed.status not in (401, 403), allowed.text


def test_admin_manages_the_accounts_keys_and_never_sees_secrets(api: Api, account: CreatedKey) -> None:
    created = api.post("/v1/keys", {"name": "ci", "scopes": ["runs:read"]})
    assert created.status == 201
    key = created.json()
    assert key["scopes"] == ["runs:read"]
    assert key["api_key"].startswith(f"rpk_{key['id']}_")
    reader = Api(key["api_key"])
    assert reader.get("/v1/runs").status == 200
    assert reader.post("/v1/runnables", SPEC).json()["missingPerms"] == ["runnables:write"]

    listed = api.get("/v1/keys").json()["items"]
    assert {k["id"] for k in listed} == {account.key_id, key["id"]}
    assert all("api_key" not in k and "secret_hash" not in k for k in listed)

    assert api.call("DELETE", f"/v1/keys/{key['id']}").status == 204
    assert reader.get("/v1/runs").status == 401
    assert next(k for k in api.get("/v1/keys").json()["items"] if k["id"] == key["id"])["revoked_at"]


def test_keys_of_another_account_are_not_found(api: Api) -> None:
    other = create_key("globex", scopes=["admin"])
    assert api.call("DELETE", f"/v1/keys/{other.key_id}").status == 404
    assert Api(other.token).get("/v1/runs").status == 200
    assert other.key_id not in {k["id"] for k in api.get("/v1/keys").json()["items"]}


def test_a_key_made_without_scopes_gets_the_defaults(api: Api, account: CreatedKey) -> None:
    key = api.post("/v1/keys", {}).json()
    assert key["scopes"] == sorted(DEFAULT_SCOPES)
    assert Api(key["api_key"]).get("/v1/keys").json()["missingPerms"] == ["admin"]


@pytest.mark.parametrize("scopes", [[], ["runs:*"], ["root"]])
def test_unknown_or_empty_scopes_are_a_400(api: Api, scopes: list[str]) -> None:
    reply = api.post("/v1/keys", {"scopes": scopes})
    assert reply.status == 400
    assert reply.json()["issues"][0]["field"].startswith("body.scopes")


def test_keys_made_before_scopes_existed_keep_full_access(env: dict[str, str], account: CreatedKey) -> None:
    legacy = create_key(account.account_id, scopes=["runs:read"])
    boto3.client("dynamodb").update_item(
        TableName=env["RUNPLANE_KEYS_TABLE"],
        Key={"id": {"S": legacy.key_id}},
        UpdateExpression="REMOVE scopes",
    )
    assert Api(legacy.token).get("/v1/keys").status == 200


def test_created_by_is_the_key_id(api: Api, account: CreatedKey, echo_id: str) -> None:
    run_id = api.post(f"/v1/runnable/{echo_id}/runs", {}).json()["id"]
    assert api.get(f"/v1/run/{run_id}").json()["created_by"] == account.key_id
