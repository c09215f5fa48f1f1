"""Authentication, account isolation, runnables, bad input and the OpenAPI document."""

from __future__ import annotations

import json

import pytest
from runplane.logic import keys
from runplane.logic.keys import CreatedKey

from tests.conftest import Api, drain, make_runnable

UNKNOWN = "7c1f7a9e-8e1a-4a39-9a53-5b8e4f0f1d11"


def assert_error(reply, status: int, code: str) -> dict:
    assert reply.status == status, reply.text
    body = reply.json()
    assert set(body) == {"error", "code", "issues"}
    assert body["code"] == code
    assert body["error"]
    return body


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer nonsense", "Basic dXNlcjpwYXNz", "Bearer rpk_0000000000000000_wrongsecret"],
)
def test_missing_or_bad_key_is_401(api: Api, echo_id: str, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else None
    reply = api.call("GET", "/v1/runs", token=None, headers=headers)
    assert_error(reply, 401, "unauthorized")
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_key_with_the_right_id_and_a_wrong_secret_is_401(api: Api, account: CreatedKey) -> None:
    forged = account.token[:-4] + "AAAA"
    assert_error(api.get("/v1/runs", token=forged), 401, "unauthorized")


def test_a_revoked_key_stops_working(api: Api, account: CreatedKey) -> None:
    assert api.get("/v1/runs").status == 200
    keys.revoke_key(account.key_id)
    assert_error(api.get("/v1/runs"), 401, "unauthorized")


def test_keys_are_stored_only_as_hashes(env: dict[str, str]) -> None:
    import boto3

    created = keys.create_key("hashco")
    item = boto3.client("dynamodb").get_item(
        TableName=env["RUNPLANE_KEYS_TABLE"], Key={"id": {"S": created.key_id}}
    )["Item"]
    secret = created.token.split("_", 2)[2]  # rp_{key id}_{secret}: the secret may hold "_" itself
    assert secret not in json.dumps(item)
    assert item["account_id"]["S"] == "hashco"


def test_another_accounts_runs_and_runnables_are_404_and_never_listed(
    api: Api, account: CreatedKey, echo_id: str
) -> None:
    run_id = api.post(f"/v1/runnable/{echo_id}/runs").json()["id"]
    drain("worker")
    other = Api(keys.create_key("globex").token)
    assert_error(other.get(f"/v1/run/{run_id}"), 404, "run_not_found")
    assert_error(other.post(f"/v1/run/{run_id}/cancel"), 404, "run_not_found")
    assert_error(other.get(f"/v1/runnable/{echo_id}"), 404, "runnable_not_found")
    assert_error(
        other.call(
            "PUT", f"/v1/runnable/{echo_id}", {"name": "x", "kind": "python", "config": {"function": "echo"}}
        ),
        404,
        "runnable_not_found",
    )
    assert_error(other.call("DELETE", f"/v1/runnable/{echo_id}"), 404, "runnable_not_found")
    assert_error(other.post(f"/v1/runnable/{echo_id}/runs"), 404, "runnable_not_found")
    assert other.get("/v1/runs").json()["items"] == []
    assert other.get(f"/v1/runs?runnable_id={echo_id}").json()["items"] == []
    assert other.get("/v1/runnables").json()["items"] == []
    assert api.get(f"/v1/run/{run_id}").status == 200


def test_a_cursor_from_another_account_is_rejected(api: Api, account: CreatedKey) -> None:
    for _ in range(3):
        make_runnable(account.account_id)
    cursor = api.get("/v1/runnables?limit=1").json()["next_cursor"]
    assert cursor
    other = Api(keys.create_key("globex").token)
    assert_error(other.get(f"/v1/runnables?cursor={cursor}"), 400, "invalid_cursor")
    assert_error(api.get("/v1/runs?cursor=garbage!"), 400, "invalid_cursor")


def test_runnable_lifecycle(api: Api) -> None:
    spec = {
        "name": "greeter",
        "kind": "python",
        "config": {"function": "echo"},
        "tags": ["demo"],
        "timeout_seconds": 30,
    }
    created = api.post("/v1/runnables", spec)
    assert created.status == 201
    runnable = created.json()
    assert runnable["name"] == "greeter"
    assert runnable["tags"] == ["demo"]
    assert api.get(f"/v1/runnable/{runnable['id']}").json() == runnable

    replaced = api.call("PUT", f"/v1/runnable/{runnable['id']}", {**spec, "name": "greeter2"}).json()
    assert replaced["name"] == "greeter2"
    assert replaced["created_at"] == runnable["created_at"]
    assert replaced["updated_at"] > runnable["updated_at"]

    second = api.post("/v1/runnables", {**spec, "name": "later"}).json()
    assert [r["id"] for r in api.get("/v1/runnables").json()["items"]] == [second["id"], runnable["id"]]

    assert api.call("DELETE", f"/v1/runnable/{runnable['id']}").status == 204
    assert_error(api.get(f"/v1/runnable/{runnable['id']}"), 404, "runnable_not_found")


def test_runs_of_a_deleted_runnable_still_finish(api: Api, echo_id: str) -> None:
    run_id = api.post(f"/v1/runnable/{echo_id}/runs", {"inputs": {"a": 1}}).json()["id"]
    api.call("DELETE", f"/v1/runnable/{echo_id}")
    drain("worker")
    assert api.get(f"/v1/run/{run_id}").json()["result"]["outputs"] == {"a": 1}


@pytest.mark.parametrize(
    ("spec", "code", "field"),
    [
        (
            {"name": "x", "kind": "python", "config": {"function": "os.system"}},
            "unknown_function",
            "body.config.function",
        ),
        ({"name": "x", "kind": "shell", "config": {"function": "echo"}}, "validation_error", "body.kind"),
        ({"name": "x", "kind": "python", "config": {}}, "validation_error", "body.config.function"),
        (
            {"name": "x", "kind": "python", "config": {"function": "echo"}, "input_schema": {"type": 12}},
            "invalid_input_schema",
            "body.input_schema",
        ),
        (
            {"name": "x", "kind": "python", "config": {"function": "echo"}, "timeout_seconds": 99999},
            "timeout_too_long",
            "body.timeout_seconds",
        ),
        ({"kind": "python", "config": {"function": "echo"}}, "validation_error", "body.name"),
    ],
)
def test_bad_runnable_definitions_are_400_naming_the_field(
    api: Api, spec: dict, code: str, field: str
) -> None:
    body = assert_error(api.post("/v1/runnables", spec), 400, code)
    assert field in [issue["field"] for issue in body["issues"]]


@pytest.mark.parametrize(
    ("body", "query", "field"),
    [
        ({"inputs": "text"}, "", "body.inputs"),
        ({"metadata": [1]}, "", "body.metadata"),
        ({"timeout_seconds": "soon"}, "", "body.timeout_seconds"),
        ({"telemetry_strategy": "loud"}, "", "body.telemetry_strategy"),
        ({"callback_url": "ftp://example.com"}, "", "body.callback_url"),
        (
            {"callback_url": "https://example.com", "callback_headers": {"Content-Type": "text/plain"}},
            "",
            "body.callback_headers",
        ),
        ({"callback_headers": {"webhook-signature": "v1,forged"}}, "", "body.callback_headers"),
        ({"callback_headers": {"X-A": "line\r\nbreak"}}, "", "body.callback_headers"),
        ({"resources": [{"name": "r", "resource": {"id": "not-a-uuid"}}]}, "", "body.resources.0.resource"),
        ({"inptus": {}}, "", "body.inptus"),
        ({}, "?mode=later", "query.mode"),
    ],
)
def test_bad_run_requests_are_400_naming_the_field(
    api: Api, echo_id: str, body: dict, query: str, field: str
) -> None:
    reply = api.post(f"/v1/runnable/{echo_id}/runs{query}", body)
    result = assert_error(reply, 400, "validation_error")
    assert any(issue["field"].startswith(field) for issue in result["issues"]), result["issues"]
    assert api.get("/v1/runs").json()["items"] == []  # nothing was created


def test_inputs_are_checked_against_the_runnables_input_schema(api: Api, account: CreatedKey) -> None:
    schema = {
        "type": "object",
        "required": ["city"],
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    }
    runnable = make_runnable(account.account_id, input_schema=schema)
    body = assert_error(
        api.post(f"/v1/runnable/{runnable}/runs", {"inputs": {"days": "two"}}), 400, "invalid_inputs"
    )
    fields = {issue["field"] for issue in body["issues"]}
    assert fields == {"body.inputs", "body.inputs.days"}
    assert api.post(f"/v1/runnable/{runnable}/runs", {"inputs": {"city": "Oslo", "days": 2}}).status == 202


@pytest.mark.parametrize(
    ("method", "path", "raw", "headers", "status", "code"),
    [
        ("POST", "/v1/runnable/{echo}/runs", "{not json", None, 400, "invalid_json"),
        ("POST", "/v1/runnable/{echo}/runs", "[1, 2]", None, 400, "invalid_body"),
        (
            "POST",
            "/v1/runnable/{echo}/runs",
            "inputs=1",
            {"Content-Type": "application/x-www-form-urlencoded"},
            415,
            "unsupported_media_type",
        ),
        (
            "POST",
            "/v1/runnable/{echo}/runs",
            json.dumps({"inputs": {"x": "y" * 1_100_000}}),
            None,
            413,
            "payload_too_large",
        ),
        ("POST", "/v1/runnable/not-a-uuid/runs", "{}", None, 400, "validation_error"),
        ("POST", f"/v1/runnable/{UNKNOWN}/runs", "{}", None, 404, "runnable_not_found"),
        ("GET", f"/v1/run/{UNKNOWN}", None, None, 404, "run_not_found"),
        ("GET", "/v1/run/../../etc", None, None, 404, "route_not_found"),
        ("GET", "/v1/runs?status=sleeping", None, None, 400, "validation_error"),
        ("GET", "/v1/runs?limit=0", None, None, 400, "validation_error"),
        ("GET", "/v1/runs?limit=1000", None, None, 400, "validation_error"),
        ("GET", "/v1/runs?runnable_id=abc", None, None, 400, "validation_error"),
        ("GET", "/v2/anything", None, None, 404, "route_not_found"),
    ],
)
def test_malformed_requests_get_a_clear_4xx(
    api: Api, echo_id: str, method, path, raw, headers, status, code
) -> None:
    reply = api.call(method, path.replace("{echo}", echo_id), raw=raw, headers=headers)
    assert_error(reply, status, code)


def test_openapi_document_and_docs_page_are_served_without_a_key(api: Api) -> None:
    document = api.get("/openapi.json", token=None).json()
    assert document["info"]["title"] == "Runplane API"
    assert {"/v1/runnable/{id}/runs", "/v1/run/{run_id}", "/v1/runs", "/v1/runnables"} <= set(
        document["paths"]
    )
    assert "bearerAuth" in document["components"]["securitySchemes"]
    run_state = document["components"]["schemas"]["RunState"]
    assert set(run_state["required"]) == {"id", "account_id", "status", "created_at"}
    docs = api.get("/docs", token=None)
    assert docs.status == 200
    assert "swagger" in docs.text.lower()
