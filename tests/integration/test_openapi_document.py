"""The served OpenAPI document is complete: typed answers, exactly the errors sent, a word for each operation."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api

METHODS = ("get", "put", "post", "delete", "patch")
# the operations whose logic answers 422: a run that ended without succeeding (Roe AI and Cotool results)
SENDS_422 = {
    ("post", "/v1/agents/run/{agent_id}/"),
    ("post", "/v1/agents/run/{agent_id}/versions/{version_id}/"),
    ("get", "/v1/agents/jobs/{job_id}/result/"),
    ("post", "/api/agents/{agentId}/run-sync"),
    ("get", "/api/agents/{agentId}/run-async/{runId}/result"),
}


@pytest.fixture
def document(api: Api) -> dict[str, Any]:
    return api.get("/openapi.json", token=None).json()


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for p, ops in document["paths"].items() for m, op in ops.items() if m in METHODS]


OPERATIONS = 53  # 46, the five of /v1/resources, and the account's dead callbacks (list, replay)
RESOURCE_OPERATIONS = {
    ("post", "/v1/resources"),
    ("post", "/v1/resources/uploads"),
    ("get", "/v1/resources"),
    ("get", "/v1/resources/{id}"),
    ("delete", "/v1/resources/{id}"),
}


def test_the_resources_operations_are_documented(document: dict[str, Any]) -> None:
    documented = {(m, p) for m, p, _ in _operations(document) if p.startswith("/v1/resources")}
    assert documented == RESOURCE_OPERATIONS


def test_every_success_answer_is_typed_or_empty(document: dict[str, Any]) -> None:
    operations = _operations(document)
    assert len(operations) == OPERATIONS
    for method, path, operation in operations:
        successes = {s: a for s, a in operation["responses"].items() if s.startswith("2")}
        assert successes, (method, path)
        for status, answer in successes.items():
            if status == "204":
                assert "content" not in answer, (method, path)
            else:
                assert answer["content"]["application/json"]["schema"], (method, path, status)


def test_no_operation_documents_a_422_it_never_sends(document: dict[str, Any]) -> None:
    assert not {"HTTPValidationError", "ValidationError", "ResponseValidationError"} & set(
        document["components"]["schemas"]
    )
    documented = {(m, p) for m, p, op in _operations(document) if "422" in op["responses"]}
    assert documented == SENDS_422


def test_errors_use_the_dialects_error_schema_and_the_shared_errors_are_everywhere(
    document: dict[str, Any],
) -> None:
    expected = {
        "re-factor": "ErrorBody",
        "Roe AI": "ErrorResponse",
        "Cotool": "ErrorBody",
        "Service": "ErrorBody",
    }
    for method, path, operation in _operations(document):
        secured = operation.get("security") != []
        assert {"500", *(["401", "429"] if secured else [])} <= set(operation["responses"]), path
        if method in ("post", "put"):
            assert {"400", "413", "415"} <= set(operation["responses"]), path
        for status, answer in operation["responses"].items():
            if int(status) >= 400:
                ref = answer["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith("/" + expected[operation["tags"][0]]), (path, status)


def test_every_operation_says_what_it_does(document: dict[str, Any]) -> None:
    summaries = set()
    for method, path, operation in _operations(document):
        assert operation["summary"], path
        assert not operation["summary"].startswith(method.upper()), path  # not the resolver's default
        assert len(operation.get("description", "")) > 20, path
        summaries.add(operation["summary"])
    assert len(summaries) == OPERATIONS
    native = next(tag for tag in document["tags"] if tag["name"] == "re-factor")
    assert "native" in native["description"]


def test_roe_single_runs_take_json_forms_and_multipart(document: dict[str, Any]) -> None:
    for path in (
        "/v1/agents/run/{agent_id}/",
        "/v1/agents/run/{agent_id}/async/",
        "/v1/agents/run/{agent_id}/versions/{version_id}/",
        "/v1/agents/run/{agent_id}/versions/{version_id}/async/",
    ):
        operation = document["paths"][path]["post"]
        assert set(operation["requestBody"]["content"]) == {
            "application/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
        }
        assert not any(key.startswith("x-") for key in operation), path
    assert set(
        document["paths"]["/v1/agents/run/{agent_id}/async/many/"]["post"]["requestBody"]["content"]
    ) == {"application/json"}


def test_roe_paths_end_with_a_slash_and_public_doors_need_no_key(document: dict[str, Any]) -> None:
    roe = [path for path in document["paths"] if path.startswith("/v1/agents/")]
    assert len(roe) == 17
    assert all(path.endswith("/") for path in roe)
    assert document["paths"]["/"]["get"]["security"] == []
    assert document["paths"]["/health"]["get"]["security"] == []
    assert document["security"] == [{"bearerAuth": []}]


def test_rules_the_server_enforces_are_in_the_schema(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    body = document["paths"]["/v1/runnables"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["discriminator"]["propertyName"] == "kind"
    assert {"python", "http", "bedrock"} <= set(body["discriminator"]["mapping"])  # lambda: if allowed
    assert schemas["PythonConfig"]["properties"]["function"]["enum"]  # the functions registered here
    assert schemas["HttpConfig"]["properties"]["url"]["format"] == "uri"
    callback = schemas["StartRunRequest"]["properties"]["callback_url"]
    assert callback["anyOf"][0]["format"] == "uri"  # or null: the body may say "no callback" explicitly
    assert schemas["AgentRunRequest"]["properties"]["attachments"]["uniqueItems"] is True
    runs = {p["name"]: p for p in document["paths"]["/v1/runs"]["get"]["parameters"]}
    assert runs["created_after"]["schema"]["format"] == "date-time"
    assert runs["cursor"]["schema"]["type"] == "string"
    assert "null" not in str(runs["cursor"]["schema"])  # a parameter is sent or not, never null
    result = schemas["RunResult"]["properties"]
    assert all("anyOf" not in result[name] for name in ("outputs", "metadata", "error"))


def test_the_docs_page_shows_the_same_document(api: Api, document: dict[str, Any]) -> None:
    page = api.get("/docs", token=None).text
    assert "swagger" in page.lower()
    assert "HTTPValidationError" not in page
    assert '"/health"' in page
