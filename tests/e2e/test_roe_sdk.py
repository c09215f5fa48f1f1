"""End to end: Roe AI's own Python SDK, unchanged, against the Roe AI dialect of `runplane local`.

Written against roe-ai 1.1.19 (pyproject pins `roe-ai>=1.1.19,<1.2`). Every call goes through
`roe.RoeClient(base_url=..., api_key=..., organization_id=...)` and its public methods; no request is
made by hand to a Roe route. Every Roe answer the SDK receives is also checked against the transcribed
contract (tests/schemas/roe.json, through an httpx response hook on the SDK's own client), so what the
SDK parses and what the contract says cannot drift apart.

The SDK's quirks that shape these tests:
- it sends a single run's inputs as form fields (multipart once a file is among them), each value
  `str()`-ed: `3` arrives as "3", `True` as "True", a list as its Python repr (so lists go as JSON text);
- `RoeClient(max_retries=0)` means the default (3): `max_retries or int(os.getenv("ROE_MAX_RETRIES", "3"))`.
  The clients without retries are made with `ROE_MAX_RETRIES=0` in the environment as well;
- run requests (run, run_sync, run_version*) are never retried; the other calls retry 5xx, 408 and 429.
- `FileUpload(file_obj=...)` cannot be built (pydantic wants an instance of `typing.BinaryIO`, which no
  real file object is): files go as `FileUpload(path=...)`, a path, or an open file.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock
from uuid import UUID

import httpx
import pytest
import requests
import roe
from roe._generated.models.agent_datum import AgentDatum
from roe._generated.models.agent_job_cancel_all_response import AgentJobCancelAllResponse
from roe._generated.models.agent_job_result_item import AgentJobResultItem
from roe._generated.models.agent_job_result_response import AgentJobResultResponse
from roe._generated.models.agent_job_single_status import AgentJobSingleStatus
from roe._generated.models.agent_job_status import AgentJobStatus
from roe._generated.models.agent_version import AgentVersion
from roe._generated.models.base_agent import BaseAgent
from roe._generated.models.job_input import JobInput
from roe._generated.models.list_agent_job import ListAgentJob
from roe._generated.models.paginated_base_agent_list import PaginatedBaseAgentList
from roe._generated.models.paginated_list_agent_job_list import PaginatedListAgentJobList
from roe._generated.models.review_state_enum import ReviewStateEnum
from roe._generated.models.user_info import UserInfo
from roe._generated.types import Unset
from roe.exceptions import (
    BadRequestError,
    ForbiddenError,
    InsufficientCreditsError,
    NotFoundError,
    RoeAPIException,
    ServerError,
)
from roe.models.file import FileUpload
from roe.models.job import Job

from tests.cli import cli
from tests.contract import assert_reply, is_dialect
from tests.local_stack import Stack, start_stack

pytestmark = [pytest.mark.e2e]

SYNC_WAIT_SECONDS = 2
ENV = {
    "RUNPLANE_RUNNABLE_PACKAGES": "tests.fixtures.runnables",
    "RUNPLANE_LEASE_SECONDS": "2",
    "RUNPLANE_LOCAL_SWEEP_SECONDS": "0.5",
    "RUNPLANE_SYNC_WAIT_SECONDS": str(SYNC_WAIT_SECONDS),
}
WAIT = {"interval": 0.2, "timeout": 20}
TYPED_SCHEMA = {
    "type": "object",
    "properties": {
        "count": {"type": "integer"},
        "ratio": {"type": "number"},
        "flag": {"type": "boolean"},
        "tags": {"type": "array"},
        "options": {"type": "object"},
        "name": {"type": "string"},
    },
}


# --- the stack, the clients, the agents ---


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    started = start_stack(tmp_path_factory.mktemp("stack"), workers=4, **ENV)
    started.keep_draining_output()
    yield started
    started.stop()


def check_against_the_contract(response: httpx.Response) -> None:
    """An httpx response hook: every Roe answer the SDK receives must match tests/schemas/roe.json."""
    path = response.request.url.path
    if is_dialect(path):
        response.read()
        assert_reply(response.request.method, path, response.status_code, response.text)


def sdk(
    stack: Stack, *, api_key: str | None = None, organization_id: str | None = None, retries: bool = False
) -> roe.RoeClient:
    """A RoeClient for this stack (the local account unless told); its answers are checked against the
    contract."""
    info = stack.info
    settings: dict[str, Any] = {"timeout": 30}
    environment = {}
    if not retries:
        settings["max_retries"] = 0
        environment["ROE_MAX_RETRIES"] = "0"  # max_retries=0 alone is read as "the default"
    with mock.patch.dict(os.environ, environment):
        client = roe.RoeClient(
            base_url=info["api_url"],
            api_key=api_key or info["api_key"],
            organization_id=organization_id or local_organization(stack),
            **settings,
        )
    client.raw.get_httpx_client().event_hooks["response"].append(check_against_the_contract)
    return client


def local_organization(stack: Stack) -> str:
    organization_id = stack.info.get("organization_id")
    assert organization_id, ".runplane/local.json has no organization_id"
    return organization_id


@pytest.fixture(scope="module")
def client(stack: Stack) -> Iterator[roe.RoeClient]:
    with sdk(stack) as made:
        yield made


@pytest.fixture(scope="module")
def agent(stack: Stack) -> Callable[..., str]:
    """`agent(function, **spec)`: the id of a new runnable of this account running the python `function`."""

    def register(function: str, **spec: Any) -> str:
        body = {
            "name": f"{function}-{uuid.uuid4().hex[:8]}",
            "kind": "python",
            "config": {"function": function},
        }
        reply = stack.call("POST", "/v1/runnables", {**body, **spec})
        assert reply.status_code == 201, reply.text
        return reply.json()["id"]

    return register


def values(outputs: list[AgentDatum] | None) -> dict[str, Any]:
    """Roe's outputs as the values they encode: JSON text decoded, plain text as is."""
    assert outputs is not None
    decoded = {}
    for datum in outputs:
        assert isinstance(datum, AgentDatum)
        decoded[datum.key] = json.loads(datum.value) if datum.data_type == "application/json" else datum.value
    return decoded


def poll_status(client: roe.RoeClient, job_id: str, until: Callable[[int], bool], seconds: float = 20) -> int:
    deadline = time.monotonic() + seconds
    while True:
        status = client.agents.jobs.retrieve_status(job_id).status
        if until(status):
            return status
        assert time.monotonic() < deadline, f"job {job_id} still at status {status} after {seconds}s"
        time.sleep(0.2)


def started(client: roe.RoeClient, job_id: str) -> None:
    poll_status(client, job_id, lambda status: status != 0)


# --- 1. organization ids ---


def test_the_local_account_has_a_uuid_organization_id_in_local_json(stack: Stack) -> None:
    organization_id = local_organization(stack)
    assert str(UUID(organization_id)) == organization_id.lower()


def test_another_organizations_uuid_is_forbidden(stack: Stack, client: roe.RoeClient) -> None:
    echo = stack.runnable("echo")
    job = client.agents.run(echo, q="mine")
    with sdk(stack, organization_id=str(uuid.uuid4())) as stranger:
        with pytest.raises(ForbiddenError):
            stranger.agents.run_sync(echo, q="x")
        with pytest.raises(ForbiddenError):
            stranger.agents.jobs.retrieve_status(job.id)
    assert job.wait(**WAIT)["status"] == 3


# --- 2. form and multipart inputs ---


def test_run_sync_with_the_sdks_defaults_sends_form_inputs_that_stay_strings(stack: Stack) -> None:
    with sdk(stack, retries=True) as default:
        outputs = default.agents.run_sync(stack.runnable("echo"), q="hello", n=3, flag=True)
        assert default.agents.retrieve(stack.runnable("echo")).name == "echo"  # a call the SDK would retry
    assert all(isinstance(o, AgentDatum) for o in outputs)
    assert {o.key: (o.data_type, o.value) for o in outputs} == {
        "q": ("text/plain", "hello"),
        "n": ("text/plain", "3"),
        "flag": ("text/plain", "True"),
    }


def test_declared_types_turn_form_text_into_typed_inputs(client: roe.RoeClient, agent) -> None:
    typed = agent("echo", input_schema=TYPED_SCHEMA)
    outputs = client.agents.run_sync(
        typed, count=3, ratio=2.5, flag=True, tags='["a"]', options='{"k": [1, null]}', name="7"
    )
    got = values(outputs)
    assert got == {
        "count": 3,
        "ratio": 2.5,
        "flag": True,
        "tags": ["a"],
        "options": {"k": [1, None]},
        "name": "7",
    }
    assert type(got["count"]) is int
    assert type(got["flag"]) is bool

    result = client.agents.run(typed, count="-2", flag=False, tags=json.dumps(["x", 1])).wait(**WAIT)
    assert result["status"] == 3
    assert values(result.outputs) == {"count": -2, "flag": False, "tags": ["x", 1]}


def test_python_values_and_a_pydantic_schema_arrive_as_given(client: roe.RoeClient, agent) -> None:
    """The SDK sends a dict or a list as its str() (Python syntax), and pydantic writes an optional field
    as anyOf [type, null]: both still arrive typed."""
    from pydantic import BaseModel

    class Inputs(BaseModel):
        count: int | None = None
        options: dict
        tags: list[str | int]

    typed = agent("echo", input_schema=Inputs.model_json_schema())
    outputs = client.agents.run_sync(typed, count=4, options={"on": True, "off": None}, tags=["a", 1])
    assert values(outputs) == {"count": 4, "options": {"on": True, "off": None}, "tags": ["a", 1]}


@pytest.mark.parametrize(
    ("field", "text"), [("count", "three"), ("count", "2.5"), ("flag", "maybe"), ("tags", "[not json")]
)
def test_form_text_that_does_not_parse_is_a_bad_request_naming_the_field(
    client: roe.RoeClient, agent, field: str, text: str
) -> None:
    typed = agent("echo", input_schema=TYPED_SCHEMA)
    with pytest.raises(BadRequestError) as refused:
        client.agents.run_sync(typed, **{field: text})
    assert refused.value.status_code == 400
    assert field in refused.value.message
    with pytest.raises(BadRequestError) as refused_async:
        client.agents.run(typed, **{field: text})
    assert field in refused_async.value.message


def file_described(described: dict[str, Any], data: bytes, name: str, content_type: str) -> None:
    assert described["name"] == name
    assert described["size"] == len(data)
    assert described["sha256"] == hashlib.sha256(data).hexdigest()
    assert described["content_type"] == content_type


def test_files_become_run_resources_named_by_their_field(
    client: roe.RoeClient, agent, stack: Stack, tmp_path: Path
) -> None:
    """The SDK's three ways to send a file: a FileUpload, a path, a file object. (FileUpload(file_obj=...)
    cannot be built in roe-ai 1.1.19: pydantic checks isinstance(value, typing.BinaryIO), which no real
    file object is; FileUpload(path=...) works.)"""
    describe = agent("describe_files")
    notes, blob, report = b"first line\nsecond line \xe2\x9c\x93\n", bytes(range(256)) * 40, b'{"a": 1}'
    for name, data in (("notes.dat", notes), ("sample.bin", blob), ("report.json", report)):
        (tmp_path / name).write_bytes(data)
    outputs = client.agents.run_sync(
        describe,
        notes=FileUpload(path=str(tmp_path / "notes.dat"), filename="notes.txt", mime_type="text/plain"),
        blob=str(tmp_path / "sample.bin"),
        q="beside the files",
    )
    got = values(outputs)
    file_described(got["notes"], notes, "notes.txt", "text/plain")
    assert got["notes"]["text"] == notes.decode()
    file_described(got["blob"], blob, "sample.bin", "application/octet-stream")
    assert got["inputs"]["q"] == "beside the files"

    assert (got["notes"]["directory_path"], got["notes"]["path"]) == ("files", "files/notes.txt")
    assert got["notes"]["metadata"] == {"field": "notes", "filename": "notes.txt"}
    assert got["blob"]["path"] == "files/sample.bin"

    with (tmp_path / "report.json").open("rb") as opened:
        job = client.agents.run(describe, report=opened)
    result = job.wait(**WAIT)
    assert result["status"] == 3
    file_described(values(result.outputs)["report"], report, "report.json", "application/json")

    # each file is a resource of the account, in the directory `files`, with its bytes
    listed = stack.call("GET", "/v1/resources?directory_path=files&limit=100").json()["items"]
    for name, data, field, content_type in (
        ("notes.txt", notes, "notes", "text/plain"),
        ("sample.bin", blob, "blob", "application/octet-stream"),
        ("report.json", report, "report", "application/json"),
    ):
        [resource] = [
            r for r in listed if r["name"] == name and r["sha256"] == hashlib.sha256(data).hexdigest()
        ]
        assert (resource["source"], resource["status"], resource["size"]) == ("file", "ready", len(data))
        assert (resource["content_type"], resource["directory_path"]) == (content_type, "files")
        assert resource["metadata"] == {"field": field, "filename": name}
        shown = stack.call("GET", f"/v1/resources/{resource['id']}").json()
        assert requests.get(shown["download_url"], timeout=30).content == data


def test_a_file_that_is_not_of_its_media_type_is_a_bad_request_naming_its_field(
    client: roe.RoeClient, agent, tmp_path: Path
) -> None:
    (tmp_path / "fake.png").write_bytes(b"plain text, not a png")
    describe = agent("describe_files")
    upload = FileUpload(path=str(tmp_path / "fake.png"), filename="fake.png", mime_type="image/png")
    with pytest.raises(BadRequestError) as refused:
        client.agents.run_sync(describe, picture=upload)
    assert refused.value.status_code == 400
    assert "picture" in refused.value.message
    with pytest.raises(BadRequestError):
        client.agents.run(describe, picture=str(tmp_path / "fake.png"))  # the SDK guesses image/png too


def test_two_files_with_the_same_filename_are_refused(client: roe.RoeClient, agent, tmp_path: Path) -> None:
    """Both would be the run's files/image.txt: the second would replace the first on disk."""
    for folder, data in (("one", b"first file"), ("two", b"second file")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "image.txt").write_bytes(data)
    with pytest.raises(BadRequestError) as refused:
        client.agents.run_sync(
            agent("describe_files"),
            front=str(tmp_path / "one" / "image.txt"),
            back=str(tmp_path / "two" / "image.txt"),
        )
    assert refused.value.status_code == 400
    assert "image.txt" in refused.value.message


def test_metadata_reaches_the_job(client: roe.RoeClient, agent) -> None:
    echo = agent("echo")
    job = client.agents.run(echo, metadata={"source": "sdk", "n": 1, "nested": {"ok": True}}, q="m")
    assert job.wait(**WAIT)["status"] == 3
    client.agents.run_sync(echo, metadata={"via": "sync"}, q="s")
    page = client.agents.jobs.list(echo)
    metadata = {str(j.id): j.metadata.to_dict() for j in page.results}
    assert metadata[job.id] == {"source": "sdk", "n": 1, "nested": {"ok": True}}
    assert {"via": "sync"} in metadata.values()


# --- 3. Job.wait ---


def test_wait_for_a_success_returns_the_outputs(client: roe.RoeClient, agent) -> None:
    echo = agent("echo")
    job = client.agents.run(echo, q="waited")
    assert isinstance(job, Job)
    assert str(UUID(job.id)) == job.id
    result = job.wait(**WAIT)
    assert isinstance(result, AgentJobResultResponse)
    assert (result["status"], result["error_message"]) == (3, None)
    assert [(o.key, o.data_type, o.value) for o in result.outputs] == [("q", "text/plain", "waited")]
    assert result.agent_id == result.agent_version_id == UUID(echo)


def test_wait_for_a_failure_surfaces_the_runs_error_message(client: roe.RoeClient, stack: Stack) -> None:
    job = client.agents.run(stack.runnable("fail"), message="the agent broke")
    result = job.wait(**WAIT)
    assert (result["status"], result["error_message"]) == (4, "the agent broke")
    assert client.agents.jobs.retrieve_status(job.id).error_message == "the agent broke"


def test_a_cancelled_job_waits_to_status_5(client: roe.RoeClient, agent) -> None:
    job = client.agents.run(agent("nap"), seconds="30")
    started(client, job.id)
    began = time.monotonic()
    assert client.agents.jobs.cancel(job.id) is None
    assert job.wait(**WAIT)["status"] == 5
    assert time.monotonic() - began < 15


# --- 4. batches ---


def test_run_many_and_job_batch_wait_give_one_result_per_input_in_order(client: roe.RoeClient, agent) -> None:
    echo = agent("echo")
    batch = client.agents.run_many(echo, batch_inputs=[{"i": i, "word": f"w{i}"} for i in range(5)])
    assert len(batch.job_ids) == len(set(batch.job_ids)) == 5
    items = batch.wait(**WAIT)
    assert all(isinstance(item, AgentJobResultItem) for item in items)
    assert [str(item.id) for item in items] == batch.job_ids
    assert [item.status for item in items] == [3] * 5
    assert [values(item.result) for item in items] == [{"i": i, "word": f"w{i}"} for i in range(5)]
    assert {item.agent_id for item in items} == {UUID(echo)}


def test_statuses_and_results_of_many_answer_an_unknown_job_with_nulls(client: roe.RoeClient, agent) -> None:
    echo = agent("echo")
    known = [client.agents.run(echo, k=str(n)) for n in range(2)]
    for job in known:
        assert job.wait(**WAIT)["status"] == 3
    unknown = str(uuid.uuid4())
    asked = [known[0].id, unknown, known[1].id]

    statuses = {str(s.id): s for s in client.agents.jobs.retrieve_status_many(asked)}
    assert set(statuses) == set(asked)
    assert all(isinstance(s, AgentJobStatus) for s in statuses.values())
    for job in known:
        assert statuses[job.id].status == 3
        assert statuses[job.id].created_at is not None
        assert statuses[job.id].last_updated_at is not None
    assert statuses[unknown].status is None
    assert statuses[unknown].created_at is None

    results = {str(r.id): r for r in client.agents.jobs.retrieve_result_many(asked)}
    assert set(results) == set(asked)
    for n, job in enumerate(known):
        assert results[job.id].status == 3
        assert results[job.id].agent_id == results[job.id].agent_version_id == UUID(echo)
        assert values(results[job.id].result) == {"k": str(n)}
    assert (results[unknown].status, results[unknown].agent_id, results[unknown].result) == (None, None, None)


# --- 5. listing jobs ---


def test_jobs_list_pages_by_number_and_every_listed_job_parses(client: roe.RoeClient, agent) -> None:
    echo = agent("echo")
    ids = []
    for n in range(3):
        job = client.agents.run(echo, q=f"job {n}")
        assert job.wait(**WAIT)["status"] == 3
        ids.append(job.id)

    first = client.agents.jobs.list(echo, page=1, page_size=2)
    second = client.agents.jobs.list(echo, page=2, page_size=2)
    assert isinstance(first, PaginatedListAgentJobList)
    assert [str(j.id) for j in first.results] == ids[:0:-1]  # newest first
    assert [str(j.id) for j in second.results] == ids[:1]
    assert isinstance(first.next_, str)
    assert "page=2" in first.next_
    assert isinstance(second.previous, str)
    assert second.previous
    assert isinstance(first.count, int)
    assert isinstance(second.count, int)

    for job in [*first.results, *second.results]:
        assert isinstance(job, ListAgentJob)
        assert job.status_code == 3
        assert job.agent_version_name is None or isinstance(job.agent_version_name, str)
        assert job.duration_ms is None or (isinstance(job.duration_ms, int) and job.duration_ms >= 0)
        assert not isinstance(job.ui_fields, Unset)
        assert job.evaluation is None
        assert job.feedback_review is None
        assert isinstance(job.review_state, ReviewStateEnum)
        assert job.creator is None or isinstance(job.creator, UserInfo)
        assert job.created_at <= job.last_updated_at
        assert [e.status_code for e in job.status_events][-1] == 3
        assert not isinstance(job.job_inputs, Unset)
        [given] = job.job_inputs
        assert isinstance(given, JobInput)
        assert isinstance(given.description, str)
        assert (given.key, given.value, given.data_type) == (
            "q",
            f"job {ids.index(str(job.id))}",
            "text/plain",
        )


def test_jobs_list_filters_by_status_code(client: roe.RoeClient, agent) -> None:
    nap = agent("nap")
    done = client.agents.run(nap, seconds="0")
    assert done.wait(**WAIT)["status"] == 3
    stopped = client.agents.run(nap, seconds="30")
    started(client, stopped.id)
    client.agents.jobs.cancel(stopped.id)
    assert stopped.wait(**WAIT)["status"] == 5

    assert [str(j.id) for j in client.agents.jobs.list(nap, status_code="3").results] == [done.id]
    assert [str(j.id) for j in client.agents.jobs.list(nap, status_code="5").results] == [stopped.id]
    assert {str(j.id) for j in client.agents.jobs.list(nap).results} == {done.id, stopped.id}


# --- 6. one job's status and result ---


def test_retrieve_status_and_result_of_a_job(client: roe.RoeClient, agent) -> None:
    echo = agent("echo")
    began = time.time()
    job = client.agents.run(echo, q="one", n="2")
    poll_status(client, job.id, lambda status: status == 3)
    status = client.agents.jobs.retrieve_status(job.id)
    assert isinstance(status, AgentJobSingleStatus)
    assert status.status == 3
    assert began - 1 <= status.timestamp <= time.time() + 1
    result = client.agents.jobs.retrieve_result(job.id)
    assert isinstance(result, AgentJobResultResponse)
    assert result.agent_id == result.agent_version_id == UUID(echo)
    assert values(result.outputs) == {"q": "one", "n": "2"}
    assert {i["key"]: i["value"] for i in result.inputs} == {"q": "one", "n": "2"}


# --- 7. not found ---


def test_unknown_agents_and_jobs_are_not_found(client: roe.RoeClient) -> None:
    with pytest.raises(NotFoundError):
        client.agents.run_sync(str(uuid.uuid4()), q="x")
    with pytest.raises(NotFoundError):
        client.agents.run(str(uuid.uuid4()), q="x")
    with pytest.raises(NotFoundError):
        client.agents.retrieve(str(uuid.uuid4()))
    with pytest.raises(NotFoundError):
        client.agents.jobs.retrieve_status(str(uuid.uuid4()))
    with pytest.raises(NotFoundError):
        client.agents.jobs.retrieve_result(str(uuid.uuid4()))


# --- 8. credits ---


def test_spent_credits_are_insufficient_credits(stack: Stack) -> None:
    account = f"roe-metered-{uuid.uuid4().hex[:8]}"
    created = json.loads(cli(stack, "keys", "create", "--account", account, "--scope", "admin"))
    cli(stack, "accounts", "set-credits", "--account", account, "--runs", "1")
    as_metered = {"Authorization": f"Bearer {created['api_key']}"}
    organization_id = created.get("organization_id") or stack.call(
        "GET", "/v1/account", headers=as_metered
    ).json().get("organization_id")
    assert organization_id, "neither `keys create` nor GET /v1/account names the account's organization_id"
    assert organization_id != local_organization(stack)
    spec = {"name": "echo", "kind": "python", "config": {"function": "echo"}}
    echo = stack.call("POST", "/v1/runnables", spec, headers=as_metered).json()["id"]

    with sdk(stack, api_key=created["api_key"], organization_id=organization_id) as metered:
        assert values(metered.agents.run_sync(echo, q="the one run")) == {"q": "the one run"}
        with pytest.raises(InsufficientCreditsError) as refused:
            metered.agents.run_sync(echo, q="one too many")
        assert refused.value.status_code == 402
        with pytest.raises(InsufficientCreditsError):
            metered.agents.run(echo, q="one too many")
        with pytest.raises(InsufficientCreditsError):
            metered.agents.run_many(echo, batch_inputs=[{"q": "one too many"}])


# --- 9. a sync run longer than the wait ---


def test_a_sync_run_that_outlasts_the_wait_is_a_504_naming_the_job_which_goes_on(
    client: roe.RoeClient, agent
) -> None:
    nap = agent("nap")
    began = time.monotonic()
    with pytest.raises(ServerError) as late:
        client.agents.run_sync(nap, seconds=str(SYNC_WAIT_SECONDS + 1.5))
    assert time.monotonic() - began < SYNC_WAIT_SECONDS + 1.5  # answered when the wait ended
    assert late.value.status_code == 504
    job_id = late.value.response["job_id"]
    assert poll_status(client, job_id, lambda status: status in (3, 4, 5)) == 3
    assert values(client.agents.jobs.retrieve_result(job_id).outputs)["slept"] >= SYNC_WAIT_SECONDS + 1.5


# --- 10. idempotency ---


def test_an_idempotency_key_gives_the_same_job_and_refuses_other_inputs(client: roe.RoeClient, agent) -> None:
    echo = agent("echo")
    key = f"k-{uuid.uuid4()}"
    first = client.agents.run(echo, idempotency_key=key, q="x")
    again = client.agents.run(echo, idempotency_key=key, q="x")
    assert first.id == again.id
    with pytest.raises(RoeAPIException) as reused:
        client.agents.run(echo, idempotency_key=key, q="y")
    assert reused.value.status_code == 409
    assert first.wait(**WAIT)["status"] == 3
    assert [str(j.id) for j in client.agents.jobs.list(echo).results] == [first.id]


# --- 11. agents, versions, cancel-all ---


def all_agents(client: roe.RoeClient) -> list[BaseAgent]:
    agents, page = [], 1
    while True:
        listed = client.agents.list(page=page, page_size=100)
        assert isinstance(listed, PaginatedBaseAgentList)
        agents += listed.results
        if not isinstance(listed.next_, str):
            return agents
        page += 1


def test_the_accounts_runnables_are_its_agents(client: roe.RoeClient, stack: Stack, agent) -> None:
    named = agent("echo")
    expected = {
        stack.runnable("echo"): "echo",
        named: stack.call("GET", f"/v1/runnable/{named}").json()["name"],
    }
    listed = {str(a.id): a for a in all_agents(client)}
    assert all(isinstance(a, BaseAgent) for a in listed.values())
    assert {i: listed[i].name for i in expected if i in listed} == expected
    for agent_id, name in expected.items():
        got = client.agents.retrieve(agent_id)
        assert isinstance(got, BaseAgent)
        assert (str(got.id), got.name) == (agent_id, name)
        assert str(got.organization_id) == local_organization(stack)
        assert str(got.current_version_id) == agent_id


def test_the_current_version_of_an_agent_is_the_agent(client: roe.RoeClient, agent) -> None:
    echo = agent("echo")
    version = client.agents.versions.retrieve_current(echo)
    assert isinstance(version, AgentVersion)
    assert str(version.id) == echo
    assert str(version.base_agent.id) == echo


def test_cancel_all_cancels_the_agents_waiting_and_running_jobs(client: roe.RoeClient, agent) -> None:
    nap = agent("nap", max_concurrency=1)  # one runs, the others wait
    other = agent("nap")
    jobs = [client.agents.run(nap, seconds="30") for _ in range(3)]
    ids = [job.id for job in jobs]
    bystander = client.agents.run(other, seconds="0.5")
    deadline = time.monotonic() + 20
    while sorted(statuses := [s.status for s in client.agents.jobs.retrieve_status_many(ids)]) != [0, 0, 1]:
        assert time.monotonic() < deadline, f"not one running and two waiting: {statuses}"
        time.sleep(0.2)

    answer = client.agents.jobs.cancel_all(nap)
    assert isinstance(answer, AgentJobCancelAllResponse)
    assert answer.targeted_count >= 3
    assert [job.wait(**WAIT)["status"] for job in jobs] == [5, 5, 5]
    assert bystander.wait(**WAIT)["status"] == 3


def test_running_the_one_version_of_an_agent(client: roe.RoeClient, agent) -> None:
    echo = agent("echo")
    job = client.agents.run_version(echo, version_id=echo, q="versioned")
    result = job.wait(**WAIT)
    assert (result["status"], values(result.outputs)) == (3, {"q": "versioned"})
    assert values(client.agents.run_version_sync(echo, echo, q="versioned sync")) == {"q": "versioned sync"}

    other = str(uuid.uuid4())
    with pytest.raises(NotFoundError):
        client.agents.run_version(echo, version_id=other, q="x")
    with pytest.raises(NotFoundError):
        client.agents.run_version_sync(echo, other, q="x")


# --- 12. managing agents is out of scope ---


def test_creating_editing_and_deleting_agents_is_refused_not_missing(client: roe.RoeClient, agent) -> None:
    echo = agent("echo")
    attempts = {
        "create": lambda: client.agents.create(name="new", engine_class_id="anything"),
        "update": lambda: client.agents.update(echo, name="renamed"),
        "delete": lambda: client.agents.delete(echo),
    }
    for name, attempt in attempts.items():
        with pytest.raises(RoeAPIException) as refused:
            attempt()
        assert refused.value.status_code in (405, 501), (
            name,
            refused.value.status_code,
            refused.value.message,
        )
    assert client.agents.retrieve(echo).name.startswith("echo-")


def test_the_readmes_example_runs_as_written(stack: Stack, tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = readme.index("from roe import RoeClient")
    example = readme[readme.rindex("```python", 0, start) + len("```python") : readme.index("```", start)]
    (tmp_path / ".runplane").mkdir()
    (tmp_path / ".runplane" / "local.json").write_text((stack.state_dir / "local.json").read_text())
    ran = subprocess.run(
        [sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    first, second = ran.stdout.splitlines()
    assert "key='text'" in first
    assert "value='hello'" in first
    assert "value='later'" in second
