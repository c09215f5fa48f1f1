"""The Roe AI routes its SDK calls beyond runs: many jobs at once, cancel-all, agents and their versions,
and the routes that would edit agents (405). Answers are checked against tests/schemas/roe.json."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from runplane.api import roe
from runplane.logic import keys, services

from tests.conftest import Api, drain, make_runnable

UNKNOWN = str(uuid.uuid4())
SCHEMA = {
    "type": "object",
    "properties": {
        "topic": {"type": "string", "description": "What to write about"},
        "n": {"type": "integer", "examples": [3]},
    },
}


def test_statuses_and_results_answer_each_asked_id_in_order(api: Api, echo_id: str) -> None:
    done = api.post(f"/v1/agents/run/{echo_id}/async/", {"i": 1}).json()
    drain("worker")
    waiting = api.post(f"/v1/agents/run/{echo_id}/async/", {"i": 2}).json()
    foreign = Api(keys.create_key("globex").token)
    elsewhere = foreign.post(f"/v1/agents/run/{make_runnable('globex')}/async/", {"i": 3}).json()
    asked = [waiting, UNKNOWN, done, elsewhere, done]

    statuses = api.post("/v1/agents/jobs/statuses/", {"job_ids": asked}).json()
    assert [(s["id"], s["status"]) for s in statuses] == [
        (waiting, 0),
        (UNKNOWN, None),
        (done, 3),
        (elsewhere, None),  # another organization's job is unknown here
        (done, 3),
    ]
    assert statuses[1] == {
        "id": UNKNOWN,
        "status": None,
        "created_at": None,
        "last_updated_at": None,
        "timestamp": None,
        "error_message": None,
    }

    results = api.post("/v1/agents/jobs/results/", {"job_ids": asked}).json()
    assert [(r["id"], r["status"], r["agent_id"]) for r in results] == [
        (waiting, 0, echo_id),
        (UNKNOWN, None, None),
        (done, 3, echo_id),
        (elsewhere, None, None),
        (done, 3, echo_id),
    ]
    assert results[0]["result"] is None  # not ended: no outputs yet
    assert results[2]["result"] == [{"key": "i", "data_type": "application/json", "value": "1", "cost": 0.0}]
    assert results[2]["inputs"] == [
        {"key": "i", "description": "", "value": "1", "data_type": "application/json"}
    ]


def test_statuses_and_results_refuse_a_bad_list(api: Api) -> None:
    for body in ({"job_ids": []}, {"job_ids": ["nope"]}, {"job_ids": [UNKNOWN] * 1001}, {}):
        for path in ("/v1/agents/jobs/statuses/", "/v1/agents/jobs/results/"):
            reply = api.post(path, body)
            assert reply.status == 400, (path, body)
            assert reply.json()["issues"][0]["field"].startswith("body")


def test_a_failed_jobs_status_item_carries_its_message(api: Api) -> None:
    agent = make_runnable("acme", "fail")
    job = api.post(f"/v1/agents/run/{agent}/async/", {"message": "no luck"}).json()
    drain("worker")
    [status] = api.post("/v1/agents/jobs/statuses/", {"job_ids": [job]}).json()
    assert (status["status"], status["error_message"]) == (4, "no luck")
    [result] = api.post("/v1/agents/jobs/results/", {"job_ids": [job]}).json()
    assert (result["status"], result["result"], result["agent_id"]) == (4, None, agent)


def test_cancel_all_cancels_the_agents_waiting_jobs_only(api: Api, echo_id: str) -> None:
    done = api.post(f"/v1/agents/run/{echo_id}/async/", {"i": 0}).json()
    drain("worker")
    waiting = [api.post(f"/v1/agents/run/{echo_id}/async/", {"i": n}).json() for n in range(3)]
    other = api.post(f"/v1/agents/run/{make_runnable('acme')}/async/", {"i": 9}).json()
    answer = api.post(f"/v1/agents/{echo_id}/jobs/cancel-all/").json()
    assert answer == {
        "task_id": None,
        "targeted_count": 3,
        "note": "Every waiting and running job was cancelled",
    }
    codes = {
        s["id"]: s["status"]
        for s in api.post("/v1/agents/jobs/statuses/", {"job_ids": [done, other, *waiting]}).json()
    }
    assert codes == {done: 3, other: 0, **dict.fromkeys(waiting, 5)}
    assert api.post(f"/v1/agents/{echo_id}/jobs/cancel-all/").json()["targeted_count"] == 0
    assert api.post(f"/v1/agents/{UNKNOWN}/jobs/cancel-all/").status == 404


def test_agents_are_the_runnables_each_its_only_version(api: Api, account: keys.CreatedKey) -> None:
    first = make_runnable("acme", "echo", input_schema=SCHEMA)
    second = make_runnable("acme", "fail")
    make_runnable("globex", "echo")
    listed = api.get("/v1/agents/").json()
    assert {agent["id"] for agent in listed["results"]} == {first, second}
    assert (listed["next"], listed["previous"]) == (None, None)
    page_one = api.get("/v1/agents/?page_size=1").json()
    page_two = api.get("/v1/agents/?page=2&page_size=1").json()
    assert "page=2" in page_one["next"]
    assert "page=1" in page_two["previous"]
    assert {page_one["results"][0]["id"], page_two["results"][0]["id"]} == {first, second}
    assert api.get("/v1/agents/?page=3&page_size=1").json()["results"] == []

    agent = api.get(f"/v1/agents/{first}/").json()
    organization = api.get("/v1/account").json()["organization_id"]
    assert (agent["organization_id"], agent["current_version_id"], agent["engine_class_id"]) == (
        organization,
        first,
        "python",
    )
    current = api.get(f"/v1/agents/{first}/versions/current/").json()
    assert (current["id"], current["version_name"], current["base_agent"]) == (first, "current", agent)
    assert current["input_definitions"] == [
        {"key": "topic", "data_type": "text/plain", "description": "What to write about"},
        {"key": "n", "data_type": "application/json", "description": "", "example": "3"},
    ]
    assert api.get(f"/v1/agents/{first}/versions/").json() == [current]
    assert api.get(f"/v1/agents/{first}/versions/{first}/").json() == current
    assert api.get(f"/v1/agents/{first}/versions/{UNKNOWN}/").json()["error"] == "Agent version not found"
    assert api.get(f"/v1/agents/{UNKNOWN}/").json()["error"] == "Agent not found"


def test_a_version_run_is_a_run_of_the_agent(api: Api, echo_id: str) -> None:
    job = api.post(f"/v1/agents/run/{echo_id}/versions/{echo_id}/async/", {"a": 1}).json()
    assert api.get(f"/v1/agents/jobs/{job}/status/").json()["status"] == 0
    missing = api.post(f"/v1/agents/run/{echo_id}/versions/{UNKNOWN}/async/", {"a": 1})
    assert (missing.status, missing.json()["error"]) == (404, "Agent version not found")
    assert api.post(f"/v1/agents/run/{echo_id}/versions/{UNKNOWN}/", {"a": 1}).status == 404


def test_routes_that_would_edit_agents_answer_405_in_roes_shape(api: Api, echo_id: str) -> None:
    for method, path in [
        ("POST", "/v1/agents/"),
        ("PATCH", f"/v1/agents/{echo_id}/"),
        ("PUT", f"/v1/agents/{echo_id}/"),
        ("DELETE", f"/v1/agents/{echo_id}/"),
        ("POST", f"/v1/agents/{echo_id}/duplicate/"),
        ("POST", f"/v1/agents/{echo_id}/versions/"),
        ("PATCH", f"/v1/agents/{echo_id}/versions/{echo_id}/"),
        ("DELETE", f"/v1/agents/{echo_id}/versions/{echo_id}/"),
    ]:
        reply = api.call(method, path, {"name": "x"} if method != "DELETE" else None)
        assert reply.status == 405, (method, path)
        error = reply.json()
        assert error["code"] == "agents_read_only"
        assert "/v1/runnables" in error["detail"]
        assert "GET" in reply.headers["Allow"] or path.endswith("/duplicate/")
    assert api.get(f"/v1/agents/{echo_id}/").status == 200  # the agent is still there


def test_answers_stop_at_lambdas_response_limit_and_the_rest_follow(
    api: Api, echo_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = api.post(f"/v1/agents/run/{echo_id}/async/many/", {"inputs": [{"text": "x" * 300}] * 5}).json()
    drain("worker")
    monkeypatch.setattr(roe, "RESPONSE_BUDGET", 2000)  # about two jobs' worth
    results = api.post("/v1/agents/jobs/results/", {"job_ids": jobs}).json()
    assert 1 <= len(results) < 5
    assert [item["id"] for item in results] == jobs[: len(results)]
    seen, path = [], f"/v1/agents/{echo_id}/jobs/?page_size=5"
    while path:
        page = api.get(path).json()
        assert 1 <= page["count"] < 5
        seen += [job["id"] for job in page["results"]]
        path = page["next"] and "/v1/agents/" + page["next"].split("/v1/agents/", 1)[1]
    assert seen == jobs[::-1]  # every job, once, through `next`


def test_page_numbers_alone_stop_at_100_but_next_goes_on(api: Api, echo_id: str) -> None:
    reply = api.get(f"/v1/agents/{echo_id}/jobs/?page=101")
    assert (reply.status, reply.json()["code"]) == (400, "page_too_deep")
    api.post(f"/v1/agents/run/{echo_id}/async/many/", {"inputs": [{"i": 0}, {"i": 1}]})
    first = api.get(f"/v1/agents/{echo_id}/jobs/?page_size=1").json()
    cursor = first["next"].split("cursor=", 1)[1]
    deep = api.get(f"/v1/agents/{echo_id}/jobs/?page_size=1&page=150&cursor={cursor}")
    assert deep.status == 200
    assert len(deep.json()["results"]) == 1
    assert api.get("/v1/agents/?page=101").json()["code"] == "page_too_deep"


def test_cancel_all_does_not_count_a_running_job_already_being_cancelled(api: Api, echo_id: str) -> None:
    job = api.post(f"/v1/agents/run/{echo_id}/async/", {"i": 0}).json()
    runs = services.services().runs
    account_id = keys.authenticate(f"Bearer {api.token}").account_id
    record = runs.get(account_id, job, consistent=True)
    assert runs.claim(record, "a-worker", time.time(), time.time() + 60, 3) is not None  # running
    first = api.post(f"/v1/agents/{echo_id}/jobs/cancel-all/").json()
    assert first["targeted_count"] == 1  # asked to stop: it ends cancelled when its worker sees it
    assert api.post("/v1/agents/jobs/statuses/", {"job_ids": [job]}).json()[0]["status"] == 1
    again = api.post(f"/v1/agents/{echo_id}/jobs/cancel-all/").json()
    assert (again["targeted_count"], again["note"]) == (0, "Every waiting and running job was cancelled")


def test_the_agent_is_found_before_the_body_is_read(api: Api, echo_id: str) -> None:
    plain = {"Content-Type": "text/plain"}
    for path in (f"/v1/agents/run/{UNKNOWN}/", f"/v1/agents/run/{UNKNOWN}/versions/{UNKNOWN}/async/"):
        reply = api.call("POST", path, raw="hello", headers=plain)
        assert (reply.status, reply.json()["error"]) == (404, "Agent not found")
    refused = api.call("POST", f"/v1/agents/run/{echo_id}/async/", raw="hello", headers=plain)
    assert (refused.status, refused.json()["code"]) == (415, "unsupported_media_type")
    assert "multipart/form-data" in refused.json()["detail"]
    form = api.call(
        "POST",
        f"/v1/agents/run/{echo_id}/async/",
        raw="text=hi&metadata=%7B%22k%22%3A1%7D",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status == 200
    assert api.get(f"/v1/run/{form.json()}").json()["metadata"] == {"k": 1}


def test_the_budget_counts_what_lambda_is_sent(
    api: Api, echo_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = api.post(f"/v1/agents/run/{echo_id}/async/many/", {"inputs": [{"t": 'é"😀' * 200}] * 6}).json()
    drain("worker")
    monkeypatch.setattr(roe, "RESPONSE_BUDGET", 20_000)
    reply = api.post("/v1/agents/jobs/results/", {"job_ids": jobs})
    assert len(json.dumps(reply.text)) <= 20_000 + 200  # the body as the Lambda response carries it
    assert 1 <= len(reply.json()) < 6


def test_previous_is_null_where_a_page_number_alone_no_longer_reaches(api: Api, echo_id: str) -> None:
    api.post(f"/v1/agents/run/{echo_id}/async/many/", {"inputs": [{"i": 0}, {"i": 1}]})
    cursor = api.get(f"/v1/agents/{echo_id}/jobs/?page_size=1").json()["next"].split("cursor=", 1)[1]
    assert (
        "page=100"
        in api.get(f"/v1/agents/{echo_id}/jobs/?page_size=1&page=101&cursor={cursor}").json()["previous"]
    )
    assert (
        api.get(f"/v1/agents/{echo_id}/jobs/?page_size=1&page=150&cursor={cursor}").json()["previous"] is None
    )


def test_cancel_all_with_nothing_to_cancel_says_so_unless_its_time_ran_out(
    api: Api, echo_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runplane.logic import ending

    old = api.post(f"/v1/agents/run/{echo_id}/async/", {"i": 0}).json()
    api.post(f"/v1/agents/run/{echo_id}/async/many/", {"inputs": [{"i": n} for n in range(30)]})
    drain("worker")  # every job has ended
    assert api.post("/v1/agents/jobs/statuses/", {"job_ids": [old]}).json()[0]["status"] == 3
    answer = api.post(f"/v1/agents/{echo_id}/jobs/cancel-all/").json()
    assert (answer["targeted_count"], answer["note"]) == (0, "Every waiting and running job was cancelled")
    monkeypatch.setattr(ending, "CANCEL_ALL_SECONDS", 0)
    stopped = api.post(f"/v1/agents/{echo_id}/jobs/cancel-all/").json()
    assert stopped["note"] == "More jobs may remain: call again"
