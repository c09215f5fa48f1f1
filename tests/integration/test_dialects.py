"""The Roe AI (/v1/agents) and Cotool (/api/agents) dialects on the same core.

Every answer these tests receive from a dialect route is validated against the schemas transcribed in
tests/schemas (see `Api.call`), success and error alike.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from runplane.logic import keys, services
from runplane.logic.accounts import set_credits
from runplane.logic.keys import CreatedKey

from tests.conftest import Api, drain, make_runnable, working

UNKNOWN = "7c1f7a9e-8e1a-4a39-9a53-5b8e4f0f1d11"
SCHEMA = {
    "type": "object",
    "properties": {
        "topic": {"type": "string", "description": "What to write about"},
        "n": {"type": "integer"},
    },
    "required": ["topic"],
}


def roe_outputs(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Roe's serialized outputs back to values."""
    return {
        item["key"]: json.loads(item["value"]) if item["data_type"] == "application/json" else item["value"]
        for item in items
    }


def refactor_outputs(api: Api, run_id: str) -> dict[str, Any]:
    return api.get(f"/v1/run/{run_id}").json()["result"]["outputs"]


def short_sync_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNPLANE_SYNC_WAIT_SECONDS", "0.2")
    services.reset()


# --- Roe AI ---


def test_roe_async_job_status_and_result(api: Api, echo_id: str) -> None:
    reply = api.post(f"/v1/agents/run/{echo_id}/async/", {"text": "hi", "n": 3, "metadata": {"team": "a"}})
    assert reply.status == 200
    job_id = reply.json()
    assert api.get(f"/v1/agents/jobs/{job_id}/status/").json()["status"] == 0  # PENDING
    assert api.get(f"/v1/agents/jobs/{job_id}/result/").status == 409  # not ended yet
    drain("worker")
    status = api.get(f"/v1/agents/jobs/{job_id}/status/").json()
    assert status["status"] == 3
    assert "error_message" not in status
    result = api.get(f"/v1/agents/jobs/{job_id}/result/").json()
    assert result["agent_id"] == echo_id
    assert {i["key"]: (i["value"], i["data_type"]) for i in result["inputs"]} == {
        "text": ("hi", "text/plain"),
        "n": ("3", "application/json"),
    }
    assert roe_outputs(result["outputs"]) == {"text": "hi", "n": 3} == refactor_outputs(api, job_id)
    assert (result["input_tokens"], result["output_tokens"]) == (0, 0)
    assert api.get(f"/v1/run/{job_id}").json()["metadata"] == {"team": "a"}


@pytest.mark.parametrize(
    ("body", "inputs", "metadata"),
    [
        ({"inputs": {"topic": "x"}}, {"topic": "x"}, {}),  # the wrapped form of Roe's examples
        ({"topic": "x", "metadata": '{"k": 1}'}, {"topic": "x"}, {"k": 1}),  # metadata as JSON text
        ({"topic": "x", "metadata": None, "organization_id": "acme"}, {"topic": "x"}, {}),
    ],
)
def test_roe_inputs_are_the_bodys_keys(api: Api, body: dict, inputs: dict, metadata: dict) -> None:
    agent = make_runnable("acme", "echo")
    job_id = api.post(f"/v1/agents/run/{agent}/async/", body).json()
    drain("worker")
    assert refactor_outputs(api, job_id) == inputs
    assert api.get(f"/v1/run/{job_id}").json()["metadata"] == metadata


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"n": 1}, "body.inputs"),  # input_schema: topic is required
        ({"topic": 5}, "body.inputs.topic"),
        ({"topic": "x", "metadata": "[1]"}, "body.metadata"),
        ({"topic": "x", "metadata": "{not json"}, "body.metadata"),
    ],
)
def test_roe_bad_input_is_400_invalid_agent_input_data(api: Api, body: dict, field: str) -> None:
    agent = make_runnable("acme", "echo", input_schema=SCHEMA)
    reply = api.post(f"/v1/agents/run/{agent}/async/", body)
    assert reply.status == 400
    error = reply.json()
    assert error["error"] == "Invalid agent input data"
    assert any(issue["field"] == field for issue in error["issues"]), error
    assert api.get(f"/v1/agents/{agent}/jobs/").json()["results"] == []


def test_roe_body_that_is_not_an_object_or_json_is_400(api: Api, echo_id: str) -> None:
    for raw in ("[1, 2]", "{broken"):
        reply = api.call("POST", f"/v1/agents/run/{echo_id}/async/", raw=raw)
        assert reply.status == 400
        assert reply.json()["error"] == "Invalid agent input data"


def test_roe_organization_id_that_is_not_a_string_is_400(api: Api, echo_id: str) -> None:
    for bad in (["acme"], {"id": "acme"}, 5):
        reply = api.post(f"/v1/agents/run/{echo_id}/async/", {"a": 1, "organization_id": bad})
        assert reply.status == 400
        assert reply.json()["issues"] == [{"field": "body.organization_id", "message": "not a string"}]


def test_roe_organization_id_must_be_the_keys_account(api: Api, echo_id: str) -> None:
    assert api.post(f"/v1/agents/run/{echo_id}/async/?organization_id=acme", {"a": 1}).status == 200
    for path, body in [
        (f"/v1/agents/run/{echo_id}/async/?organization_id=globex", {"a": 1}),
        (f"/v1/agents/run/{echo_id}/async/", {"a": 1, "organization_id": "globex"}),
        (f"/v1/agents/{echo_id}/jobs/?organization_id=globex", None),
    ]:
        reply = api.call("POST" if body else "GET", path, body)
        assert reply.status == 403
        assert reply.json()["code"] == "organization_mismatch"


def test_roe_sync_run_returns_outputs_or_the_job_id_when_it_outlasts_the_wait(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = make_runnable("acme", "echo")
    with working():
        reply = api.post(f"/v1/agents/run/{agent}/", {"text": "hello", "items": [1, 2]})
    assert reply.status == 200
    assert roe_outputs(reply.json()) == {"text": "hello", "items": [1, 2]}
    short_sync_wait(monkeypatch)
    slow = make_runnable("acme", "sleep")
    reply = api.post(f"/v1/agents/run/{slow}/", {"seconds": 0.5})
    assert reply.status == 504  # Roe's SDK parses a 200 as outputs only: an error it raises names the job
    still = reply.json()
    assert (still["code"], still["error"]) == ("still_running", "Job is still running")
    assert reply.headers["Location"] == f"/v1/agents/jobs/{still['job_id']}/status/"
    drain("worker")
    assert api.get(f"/v1/agents/jobs/{still['job_id']}/status/").json()["status"] == 3


def test_roe_failed_job_is_failure_with_its_message_and_its_result_is_422(api: Api) -> None:
    agent = make_runnable("acme", "fail")
    with working():
        reply = api.post(f"/v1/agents/run/{agent}/", {"message": "no luck"})
    assert reply.status == 422
    assert "no luck" in reply.json()["message"]
    job_id = api.get(f"/v1/agents/{agent}/jobs/").json()["results"][0]["id"]
    status = api.get(f"/v1/agents/jobs/{job_id}/status/").json()
    assert status == {"status": 4, "timestamp": status["timestamp"], "error_message": "no luck"}
    result = api.get(f"/v1/agents/jobs/{job_id}/result/")
    assert result.status == 422
    assert result.json()["code"] == "run_failed"


def test_roe_batch_starts_one_job_per_item_in_order(api: Api, echo_id: str) -> None:
    reply = api.post(
        f"/v1/agents/run/{echo_id}/async/many/", {"inputs": [{"i": 0}, {"i": 1, "metadata": "x"}]}
    )
    assert reply.status == 200
    job_ids = reply.json()
    drain("worker")
    assert [refactor_outputs(api, job)["i"] for job in job_ids] == [0, 1]


@pytest.mark.parametrize(
    "body",
    [{"inputs": []}, {"inputs": [{"i": n} for n in range(101)]}, {"inputs": {"i": 0}}, {"inputs": [1]}, {}],
)
def test_roe_batch_of_bad_shape_is_400(api: Api, echo_id: str, body: dict) -> None:
    reply = api.post(f"/v1/agents/run/{echo_id}/async/many/", body)
    assert reply.status == 400
    assert reply.json()["error"] == "Invalid agent input data"


def test_roe_batch_with_one_bad_item_starts_no_job(api: Api) -> None:
    agent = make_runnable("acme", "echo", input_schema=SCHEMA)
    reply = api.post(f"/v1/agents/run/{agent}/async/many/", {"inputs": [{"topic": "a"}, {"topic": 1}]})
    assert reply.status == 400
    assert reply.json()["issues"][0]["field"] == "body.inputs.1.topic"
    assert api.get(f"/v1/agents/{agent}/jobs/").json()["results"] == []


def test_roe_batch_that_runs_out_of_credits_names_the_jobs_it_started(
    api: Api, account: CreatedKey, echo_id: str
) -> None:
    set_credits(account.account_id, limit_usd=None, limit_runs=2)
    reply = api.post(f"/v1/agents/run/{echo_id}/async/many/", {"inputs": [{"i": 0}, {"i": 1}, {"i": 2}]})
    assert reply.status == 402
    error = reply.json()
    assert error["error"] == "Insufficient credits"
    assert len(error["job_ids"]) == 2
    drain("worker")
    assert [refactor_outputs(api, job)["i"] for job in error["job_ids"]] == [0, 1]


def test_roe_batch_is_idempotent_as_a_whole_under_one_key(api: Api, echo_id: str) -> None:
    body = {"inputs": [{"i": 0}, {"i": 1}]}
    key = {"Idempotency-Key": "batch-1"}
    # a single run whose key looks like a batch item's does not collide with the batch
    assert (
        api.post(
            f"/v1/agents/run/{echo_id}/async/", {"i": 9}, headers={"Idempotency-Key": "batch-1/1"}
        ).status
        == 200
    )
    first = api.post(f"/v1/agents/run/{echo_id}/async/many/", body, headers=key).json()
    assert api.post(f"/v1/agents/run/{echo_id}/async/many/", body, headers=key).json() == first
    assert len(api.get(f"/v1/agents/{echo_id}/jobs/").json()["results"]) == 3
    changed = api.post(f"/v1/agents/run/{echo_id}/async/many/", {"inputs": [{"i": 0}]}, headers=key)
    assert changed.status == 409
    assert changed.json()["code"] == "idempotency_key_reused"


def test_a_key_used_for_one_run_is_not_reused_for_a_batch_of_the_same_one(api: Api, echo_id: str) -> None:
    key = {"Idempotency-Key": "one-or-many"}
    assert api.post(f"/v1/agents/run/{echo_id}/async/", {"text": "a"}, headers=key).status == 200
    batch = api.post(f"/v1/agents/run/{echo_id}/async/many/", {"inputs": [{"text": "a"}]}, headers=key)
    assert batch.status == 409
    assert len(api.get(f"/v1/agents/{echo_id}/jobs/").json()["results"]) == 1


def test_sync_runs_of_both_dialects_replay_under_an_idempotency_key(api: Api, echo_id: str) -> None:
    key = {"Idempotency-Key": "sync-1"}
    with working():
        first = api.post(f"/v1/agents/run/{echo_id}/", {"a": 1}, headers=key)
    again = api.post(f"/v1/agents/run/{echo_id}/", {"a": 1}, headers=key)  # no worker: answered at once
    assert first.json() == again.json()
    with working():
        first = api.post(
            f"/api/agents/{echo_id}/run-sync", {"inputs": {"b": 2}}, headers={"Idempotency-Key": "s2"}
        )
    again = api.post(
        f"/api/agents/{echo_id}/run-sync", {"inputs": {"b": 2}}, headers={"Idempotency-Key": "s2"}
    )
    assert first.json() == again.json()
    assert len(api.get(f"/v1/runs?runnable_id={echo_id}").json()["items"]) == 2


def test_roe_cancel(api: Api, echo_id: str) -> None:
    job_id = api.post(f"/v1/agents/run/{echo_id}/async/", {"a": 1}).json()
    reply = api.post(f"/v1/agents/jobs/{job_id}/cancel/")
    assert (reply.status, reply.text) == (204, "")
    assert api.get(f"/v1/agents/jobs/{job_id}/status/").json()["status"] == 5
    assert api.post(f"/v1/agents/jobs/{job_id}/cancel/").status == 204  # cancelling again is harmless
    done = api.post(f"/v1/agents/run/{echo_id}/async/", {"a": 1}).json()
    drain("worker")
    assert api.post(f"/v1/agents/jobs/{done}/cancel/").status == 409
    missing = api.post(f"/v1/agents/jobs/{UNKNOWN}/cancel/")
    assert missing.status == 404
    assert missing.json()["error"] == "Job not found"


def test_roe_list_jobs_pages_newest_first_through_next(api: Api, echo_id: str) -> None:
    job_ids = [api.post(f"/v1/agents/run/{echo_id}/async/", {"i": i}).json() for i in range(5)]
    other = make_runnable("acme", "echo")
    api.post(f"/v1/agents/run/{other}/async/", {"i": 9})
    drain("worker")
    seen, path, number = [], f"/v1/agents/{echo_id}/jobs/?page_size=2", 1
    while path:
        page = api.get(path, headers={"Host": "runs.example.com", "X-Forwarded-Proto": "https"}).json()
        assert page["count"] == len(page["results"]) <= 2
        if number == 1:
            assert page["previous"] is None
        else:
            assert parse_qs(urlsplit(page["previous"]).query) == {
                "page_size": ["2"],
                "page": [str(number - 1)],
            }
        seen += page["results"]
        path = None
        if page["next"]:
            parts = urlsplit(page["next"])
            assert (parts.scheme, parts.netloc) == ("https", "runs.example.com")
            number += 1
            assert parse_qs(parts.query)["page"] == [str(number)]
            path = f"{parts.path}?{parts.query}"
    assert [job["id"] for job in seen] == job_ids[::-1]
    assert number == 3
    assert all(
        job["status_code"] == 3 and [e["status_code"] for e in job["status_events"]] == [0, 1, 3]
        for job in seen
    )
    assert seen[0]["job_inputs"] == [
        {"key": "i", "description": "", "value": "4", "data_type": "application/json"}
    ]
    # page numbers, as Roe's SDK asks for them: page N skips N - 1 pages
    by_number = [
        [job["id"] for job in api.get(f"/v1/agents/{echo_id}/jobs/?page={n}&page_size=2").json()["results"]]
        for n in (1, 2, 3, 4)
    ]
    assert by_number == [job_ids[4:2:-1], job_ids[2:0:-1], job_ids[:1], []]


def test_locations_are_absolute_urls_of_this_api(api: Api, echo_id: str) -> None:
    host = {"Host": "runs.example.com", "X-Forwarded-Proto": "https"}
    reply = api.post(f"/v1/agents/run/{echo_id}/async/", {"a": 1}, headers=host)
    assert reply.headers["Location"] == f"https://runs.example.com/v1/agents/jobs/{reply.json()}/status/"
    reply = api.post(f"/api/agents/{echo_id}/run-async", {"inputs": {}}, headers={"Host": "runs.example.com"})
    run_id = reply.json()["runId"]
    assert (
        reply.headers["Location"] == f"http://runs.example.com/api/agents/{echo_id}/run-async/{run_id}/status"
    )
    reply = api.post(f"/v1/runnable/{echo_id}/runs", headers=host)
    assert reply.headers["Location"] == f"https://runs.example.com/v1/run/{reply.json()['id']}"


def test_roe_list_jobs_filters_by_creation_time_and_status(api: Api, echo_id: str) -> None:
    api.post(f"/v1/agents/run/{echo_id}/async/", {"i": 0})
    assert (
        len(api.get(f"/v1/agents/{echo_id}/jobs/?created_from=2000-01-01T00:00:00Z").json()["results"]) == 1
    )
    assert api.get(f"/v1/agents/{echo_id}/jobs/?created_to=2000-01-01T00:00:00Z").json()["results"] == []
    # Roe's SDK sends the datetime it is given: without a zone, it is UTC
    assert api.get(f"/v1/agents/{echo_id}/jobs/?created_to=2000-01-01T00:00:00").json()["results"] == []
    assert api.get(f"/v1/agents/{echo_id}/jobs/?created_from=yesterday").status == 400
    assert len(api.get(f"/v1/agents/{echo_id}/jobs/?status_code=0").json()["results"]) == 1
    assert api.get(f"/v1/agents/{echo_id}/jobs/?status_code=3,4").json()["results"] == []
    assert api.get(f"/v1/agents/{echo_id}/jobs/?status_code=2").json()["results"] == []  # never reported
    assert api.get(f"/v1/agents/{echo_id}/jobs/?status_code=done").status == 400
    too_deep = api.get(f"/v1/agents/{echo_id}/jobs/?page=102&page_size=100")
    assert too_deep.status == 400
    assert too_deep.json()["issues"][0]["field"] == "query.page"
    missing = api.get(f"/v1/agents/{UNKNOWN}/jobs/")
    assert missing.status == 404
    assert missing.json()["error"] == "Agent not found"


def test_roe_errors_keep_roes_texts(api: Api, account: CreatedKey, echo_id: str) -> None:
    assert api.post(f"/v1/agents/run/{UNKNOWN}/async/", {"a": 1}).json()["error"] == "Agent not found"
    assert api.get(f"/v1/agents/jobs/{UNKNOWN}/status/").json()["error"] == "Job not found"
    assert api.get(f"/v1/agents/jobs/{UNKNOWN}/result/").status == 404
    assert api.get("/v1/agents/jobs/not-a-uuid/status/").status == 400
    unauthorized = api.get(f"/v1/agents/jobs/{UNKNOWN}/status/", token="rpk_nope")
    assert unauthorized.status == 401
    assert unauthorized.json()["status_code"] == 401
    reader = Api(keys.create_key(account.account_id, scopes=["runs:read"]).token)
    forbidden = reader.post(f"/v1/agents/run/{echo_id}/async/", {"a": 1})
    assert forbidden.status == 403
    assert forbidden.json()["missingPerms"] == ["runs:write"]
    set_credits(account.account_id, limit_usd=None, limit_runs=0)
    broke = api.post(f"/v1/agents/run/{echo_id}/async/", {"a": 1})
    assert broke.status == 402
    assert broke.json() | {"message": ""} == {
        "detail": "Insufficient credits",
        "error": "Insufficient credits",
        "message": "",
        "status_code": 402,
        "code": "insufficient_credits",
    }


def test_roe_jobs_of_another_account_are_not_found(api: Api, echo_id: str) -> None:
    job_id = api.post(f"/v1/agents/run/{echo_id}/async/", {"a": 1}).json()
    other = Api(keys.create_key("globex").token)
    assert other.get(f"/v1/agents/jobs/{job_id}/status/").status == 404
    assert other.post(f"/v1/agents/jobs/{job_id}/cancel/").status == 404
    assert other.get(f"/v1/agents/{echo_id}/jobs/").status == 404


# --- Cotool ---

ATTACHMENT = {
    "fileId": "file-1",
    "fileName": "notes.txt",
    "size": 12,
    "fileType": "document",
    "previewText": "hi",
}


def test_cotool_async_run_status_and_result(api: Api, echo_id: str) -> None:
    reply = api.post(f"/api/agents/{echo_id}/run-async", {"inputs": {"text": "hello", "n": 2}})
    assert reply.status == 200
    run_id = reply.json()["runId"]
    status = api.get(f"/api/agents/{echo_id}/run-async/{run_id}/status").json()
    assert (status["status"], status["isStreaming"]) == ("waiting", True)
    assert api.get(f"/api/agents/{echo_id}/run-async/{run_id}/result").status == 409
    drain("worker")
    status = api.get(f"/api/agents/{echo_id}/run-async/{run_id}/status").json()
    assert status == {"status": "done", "statusMessage": "Completed", "isStreaming": False}
    result = api.get(f"/api/agents/{echo_id}/run-async/{run_id}/result").json()
    assert result["structuredOutputResult"] == {"text": "hello", "n": 2} == refactor_outputs(api, run_id)
    assert result["finalAssistantMessage"] == "hello"
    assert result["messages"] == [
        {"role": "user", "content": '{"text":"hello","n":2}'},
        {"role": "assistant", "content": "hello"},
    ]


def test_cotool_run_sync_returns_the_result_payload_or_a_run_id(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = make_runnable("acme", "echo")
    with working():
        reply = api.post(f"/api/agents/{agent}/run-sync", {"inputs": {"answer": 42}})
    assert reply.status == 200
    assert reply.json()["structuredOutputResult"] == {"answer": 42}
    assert reply.json()["finalAssistantMessage"] == '{"answer":42}'
    short_sync_wait(monkeypatch)
    slow = make_runnable("acme", "sleep")
    pending = api.post(f"/api/agents/{slow}/run-sync", {"inputs": {"seconds": 0.5}})
    assert pending.status == 202
    assert pending.json()["status"] == "waiting"
    run_id = pending.json()["runId"]
    assert pending.headers["Location"] == f"/api/agents/{slow}/run-async/{run_id}/status"
    drain("worker")
    result = api.get(f"/api/agents/{slow}/run-async/{run_id}/result").json()
    assert result["structuredOutputResult"]["slept"] >= 0.5


@pytest.mark.parametrize(
    ("function", "inputs", "status", "state"),
    [("fail", {"message": "nope"}, "error", "failed"), ("sleep", {"seconds": 5}, "interrupted", "cancelled")],
)
def test_cotool_runs_that_do_not_succeed(
    api: Api, function: str, inputs: dict, status: str, state: str
) -> None:
    agent = make_runnable("acme", function)
    run_id = api.post(f"/api/agents/{agent}/run-async", {"inputs": inputs}).json()["runId"]
    if state == "cancelled":
        api.post(f"/v1/run/{run_id}/cancel")  # a cancel from the re-factor dialect
    drain("worker")
    answer = api.get(f"/api/agents/{agent}/run-async/{run_id}/status").json()
    assert answer["status"] == status
    assert answer["isStreaming"] is False
    if state == "failed":
        assert answer["error"] == answer["statusMessage"] == "nope"
    result = api.get(f"/api/agents/{agent}/run-async/{run_id}/result")
    assert result.status == 422
    assert result.json()["code"] == f"run_{state}"


def uploaded(api: Api, data: bytes, name: str, content_type: str, **fields: Any) -> str:
    """A resource made through an upload form (as a Cotool file is), ready: its id."""
    started = api.post(
        "/v1/resources/uploads",
        {"name": name, "directory_path": "uploads", "content_type": content_type, **fields},
    )
    assert started.status == 201, started.text
    form = started.json()["upload"]
    requests.post(form["url"], data=form["fields"], files={"file": (name, data)}, timeout=10)
    resource_id = started.json()["resource"]["id"]
    assert api.get(f"/v1/resources/{resource_id}").json()["status"] == "ready"
    return resource_id


def test_cotool_attachments_name_resources_that_reach_the_runnable_under_their_file_id(api: Api) -> None:
    agent = make_runnable("acme", "describe_files")
    notes = uploaded(api, b"hi, notes!\n", "notes.txt", "text/plain", metadata={"origin": "crm"})
    sheet = uploaded(api, b"a,b\n", "sheet.csv", "text/csv")
    first = {**ATTACHMENT, "fileId": notes}
    second = {"fileId": sheet, "fileName": "renamed.csv", "size": 4}
    reply = api.post(
        f"/api/agents/{agent}/run-async", {"inputs": {}, "attachments": [first, second], "ignored": 1}
    )
    assert reply.status == 200, reply.text
    drain("worker")
    outputs = refactor_outputs(api, reply.json()["runId"])
    assert set(outputs) == {"inputs", notes, sheet}
    assert outputs[notes]["metadata"] == {
        "origin": "crm",  # the resource's own, under the attachment's fields
        "fileName": "notes.txt",
        "size": 12,
        "fileType": "document",
        "previewText": "hi",
    }
    assert outputs[notes]["text"] == "hi, notes!\n"
    assert (outputs[notes]["name"], outputs[notes]["path"]) == ("notes.txt", "uploads/notes.txt")
    assert outputs[sheet]["metadata"] == {"fileName": "renamed.csv", "size": 4}
    assert (outputs[sheet]["name"], outputs[sheet]["text"]) == ("sheet.csv", "a,b\n")


@pytest.mark.parametrize("file_id", [UNKNOWN, "file-1"], ids=["unknown-uuid", "not-a-uuid"])
def test_cotool_an_attachment_naming_no_resource_is_a_validation_error_naming_its_file_id(
    api: Api, file_id: str
) -> None:
    agent = make_runnable("acme", "echo")
    known = uploaded(api, b"hi", "a.txt", "text/plain")
    attachments = [{**ATTACHMENT, "fileId": known}, {**ATTACHMENT, "fileId": file_id}]
    for route in ("run-async", "run-sync"):
        reply = api.post(f"/api/agents/{agent}/{route}", {"inputs": {}, "attachments": attachments})
        assert reply.status == 400, reply.text
        assert [issue["field"] for issue in reply.json()["issues"]] == ["body.attachments.1.fileId"]
        assert "resources" not in json.dumps(reply.json())  # Cotool's words, not the core's
    assert api.get(f"/v1/runs?runnable_id={agent}").json()["items"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "body.inputs"),
        ({"inputs": "text"}, "body.inputs"),
        (
            {"inputs": {}, "attachments": [{**ATTACHMENT, "mimeType": "text/plain"}]},
            "body.attachments.0.mimeType",
        ),
        ({"inputs": {}, "attachments": [{**ATTACHMENT, "fileType": "video"}]}, "body.attachments.0.fileType"),
        ({"inputs": {}, "attachments": [{"fileId": "f", "fileName": "a"}]}, "body.attachments.0.size"),
        ({"inputs": {}, "attachments": [{**ATTACHMENT, "size": "12"}]}, "body.attachments.0.size"),
        ({"inputs": {}, "attachments": [{**ATTACHMENT, "size": -5}]}, "body.attachments.0.size"),
        ({"inputs": {}, "attachments": [{**ATTACHMENT, "fileName": ""}]}, "body.attachments.0.fileName"),
        ({"inputs": {}, "attachments": [{**ATTACHMENT, "fileType": None}]}, "body.attachments.0.fileType"),
        ({"inputs": {}, "attachments": [ATTACHMENT, ATTACHMENT]}, "body"),
        ({"inputs": {"n": 1}}, "body.inputs"),  # the runnable's input_schema
    ],
)
def test_cotool_bad_input_is_a_validation_error_naming_the_field(api: Api, body: dict, field: str) -> None:
    agent = make_runnable("acme", "echo", input_schema=SCHEMA)
    for route in ("run-async", "run-sync"):
        reply = api.post(f"/api/agents/{agent}/{route}", body)
        assert reply.status == 400
        assert field in [issue["field"] for issue in reply.json()["issues"]], reply.json()
    assert api.get(f"/v1/runs?runnable_id={agent}").json()["items"] == []


def test_cotool_permissions_and_keys(api: Api, account: CreatedKey, echo_id: str) -> None:
    reader = Api(keys.create_key(account.account_id, scopes=["runs:read"]).token)
    forbidden = reader.post(f"/api/agents/{echo_id}/run-async", {"inputs": {}})
    assert forbidden.status == 403
    assert forbidden.json()["missingPerms"] == ["runs:write"]
    assert reader.get("/api/agents").json()["missingPerms"] == ["runnables:read"]
    unauthorized = api.get("/api/agents", token=None)
    assert unauthorized.status == 401
    assert unauthorized.json()["error"] == "Missing or invalid API key"


def test_cotool_runs_are_found_only_under_their_agent(api: Api, echo_id: str) -> None:
    run_id = api.post(f"/api/agents/{echo_id}/run-async", {"inputs": {}}).json()["runId"]
    other = make_runnable("acme", "echo")
    for agent, run in [(other, run_id), (echo_id, UNKNOWN)]:
        reply = api.get(f"/api/agents/{agent}/run-async/{run}/status")
        assert reply.status == 404
        assert reply.json()["error"] == "Run not found"
    missing = api.post(f"/api/agents/{UNKNOWN}/run-async", {"inputs": {}})
    assert missing.status == 404
    assert missing.json()["error"] == "Agent not found"


def test_cotool_lists_the_accounts_agents_with_their_inputs(api: Api, account: CreatedKey) -> None:
    agent = make_runnable(
        "acme", "echo", input_schema=SCHEMA, output_schema={"type": "object"}, tags=["prod"]
    )
    make_runnable("globex", "echo")
    listed = api.get("/api/agents").json()
    assert [a["id"] for a in listed] == [agent]
    assert listed[0]["inputs"] == [
        {"name": "topic", "description": "What to write about", "required": True},
        {"name": "n", "required": False},
    ]
    assert (listed[0]["organizationId"], listed[0]["tags"]) == (account.organization_id, ["prod"])
    assert listed[0]["structuredOutputSchema"] == {"type": "object"}


# --- one core ---


def test_a_body_on_a_route_that_reads_none_is_ignored_as_before(api: Api) -> None:
    assert api.call("GET", "/v1/runs", raw="not json").status == 200


def test_outputs_nested_too_deep_to_serve_fail_the_run_and_it_stays_readable(api: Api) -> None:
    deep = make_runnable("acme", "deep")
    fine = api.post(f"/v1/agents/run/{deep}/async/", {"depth": 64}).json()
    too_deep = api.post(f"/v1/agents/run/{deep}/async/", {"depth": 65}).json()
    drain("worker")
    assert api.get(f"/v1/agents/jobs/{fine}/status/").json()["status"] == 3
    state = api.get(f"/v1/run/{too_deep}").json()
    assert (state["status"], state["result"]["error"]["code"]) == ("failed", "invalid_output")
    assert api.get(f"/v1/agents/{deep}/jobs/").status == 200


@pytest.mark.parametrize(
    "raw",
    [
        '{"a": NaN}',
        '{"a": Infinity}',
        '{"a": 1e400}',
        '{"a": "\\ud800"}',
        '{"inputs": {"a": %s}}' % ("[" * 64 + "]" * 64),
        "[" * 100_000 + "]" * 100_000,
    ],
    ids=["nan", "infinity", "out-of-range", "lone-surrogate", "nested-65-deep", "nested-beyond-the-parser"],
)
@pytest.mark.parametrize(
    "route", ["/v1/runnable/{id}/runs", "/v1/agents/run/{id}/async/", "/api/agents/{id}/run-async"]
)
def test_bodies_json_does_not_allow_are_400_in_every_dialect(
    api: Api, echo_id: str, raw: str, route: str
) -> None:
    reply = api.call("POST", route.format(id=echo_id), raw=raw)
    assert reply.status == 400
    assert reply.json()["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/v1/runnable/{id}/runs", {"inputs": {}, "metadata": {"blob": "x" * 20_000}}),
        ("/v1/agents/run/{id}/async/", {"a": 1, "metadata": {"blob": "x" * 20_000}}),
    ],
)
def test_metadata_too_large_to_store_is_400_and_charges_nothing(
    api: Api, account: CreatedKey, echo_id: str, route: str, body: dict
) -> None:
    set_credits(account.account_id, limit_usd=None, limit_runs=1)
    reply = api.post(route.format(id=echo_id), body)
    assert reply.status == 400
    assert "body.metadata" in [issue["field"] for issue in reply.json()["issues"]]
    assert api.get("/v1/account").json()["credits"]["used_runs"] == 0


def test_a_run_that_cannot_be_stored_is_not_charged(
    api: Api, account: CreatedKey, echo_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_credits(account.account_id, limit_usd=None, limit_runs=1)

    def refuse(writes: object) -> list[str]:
        raise RuntimeError("storage is down")

    monkeypatch.setattr(services.services().runs, "commit_through_conflicts", refuse)
    roe = api.post(f"/v1/agents/run/{echo_id}/async/", {"a": 1})
    assert (roe.status, roe.json()["error"]) == (500, "Internal server error")
    cotool = api.post(f"/api/agents/{echo_id}/run-async", {"inputs": {}})
    assert (cotool.status, cotool.json()["code"]) == (500, "internal_error")
    assert api.get("/v1/account").json()["credits"]["used_runs"] == 0


def test_a_run_started_in_one_dialect_is_read_in_the_others(api: Api, echo_id: str) -> None:
    job_id = api.post(f"/v1/agents/run/{echo_id}/async/", {"text": "roe"}).json()
    run_id = api.post(f"/api/agents/{echo_id}/run-async", {"inputs": {"text": "cotool"}}).json()["runId"]
    native = api.post(f"/v1/runnable/{echo_id}/runs", {"inputs": {"text": "re-factor"}}).json()["id"]
    drain("worker")
    for run, text in [(job_id, "roe"), (run_id, "cotool"), (native, "re-factor")]:
        assert refactor_outputs(api, run) == {"text": text}
        assert roe_outputs(api.get(f"/v1/agents/jobs/{run}/result/").json()["outputs"]) == {"text": text}
        cotool = api.get(f"/api/agents/{echo_id}/run-async/{run}/result").json()
        assert cotool["structuredOutputResult"] == {"text": text}
    assert api.post(f"/v1/agents/jobs/{run_id}/cancel/").status == 409  # already ended, whichever dialect


def test_the_openapi_document_tags_every_route_with_its_dialect(api: Api) -> None:
    document = api.get("/openapi.json", token=None).json()
    schemas = document["components"]["schemas"]
    assert {"RunState", "RunResult", "AgentRunResult", "JobResult"} <= set(schemas)
    assert not [name for name in schemas if "__" in name]  # no two dialects' models share a name
    assert [tag["name"] for tag in document["tags"]] == ["re-factor", "Roe AI", "Cotool", "Service"]
    for path, operations in document["paths"].items():
        expected = (
            "Roe AI"
            if path.startswith("/v1/agents")
            else "Cotool"
            if path.startswith("/api/")
            else "Service"
            if path in ("/", "/health")
            else "re-factor"
        )
        assert all(op["tags"] == [expected] for op in operations.values()), path
    assert {"/v1/agents/run/{agent_id}/async/many/", "/api/agents/{agentId}/run-async/{runId}/result"} <= set(
        document["paths"]
    )
