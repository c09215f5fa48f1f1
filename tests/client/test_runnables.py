"""The client against the local stack: runnables, resources, and each API refusal as its typed error."""

from __future__ import annotations

import hashlib

import pytest
import requests
from runplane_client import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    Runnable,
    Runplane,
    RunplaneError,
    Unauthorized,
)

from tests.client.conftest import unique
from tests.local_stack import Stack

pytestmark = pytest.mark.e2e


def test_a_runnable_is_created_read_listed_updated_and_deleted(client: Runplane) -> None:
    name = unique("echoer")
    created = client.runnables.create(
        name, "python", {"function": "echo"}, tags=["client"], timeout_seconds=60, max_concurrency=3
    )
    assert isinstance(created, Runnable)
    assert (created.name, created.kind, created.config) == (name, "python", {"function": "echo"})
    assert (created.tags, created.timeout_seconds, created.max_concurrency) == (["client"], 60, 3)
    assert client.runnables.get(created.id) == created

    listed = list(client.runnables.list(limit=1))  # one a page: every page is followed
    assert created.id in [r.id for r in listed]
    assert len(listed) == len({r.id for r in listed}) >= 4  # the three seeded runnables and this one

    renamed = unique("renamed")
    updated = client.runnables.update(created.id, name=renamed, timeout_seconds=None)
    assert (updated.id, updated.name, updated.timeout_seconds) == (created.id, renamed, None)
    assert (updated.tags, updated.max_concurrency, updated.config) == (["client"], 3, created.config)
    assert updated.updated_at > created.updated_at
    assert client.runnables.get(created.id) == updated
    again = client.runnables.update(updated, tags=[])  # from the model as read: no second read
    assert (again.name, again.tags) == (renamed, [])

    client.runnables.delete(again)
    with pytest.raises(NotFound) as gone:
        client.runnables.get(created.id)
    assert (gone.value.status, gone.value.code) == (404, "runnable_not_found")


def test_a_runnable_is_found_by_its_name_and_a_name_is_taken_once(client: Runplane) -> None:
    name = unique("named")
    created = client.runnables.create(name, "python", {"function": "echo"})
    other = client.runnables.create(unique("other"), "python", {"function": "echo"})
    assert client.runnables.get_by_name(name) == created
    assert client.runnables.id_of(name) == created.id
    with pytest.raises(NotFound):
        client.runnables.get_by_name(unique("nobody"))
    with pytest.raises(Conflict) as taken:
        client.runnables.create(name, "python", {"function": "sleep"})
    assert (taken.value.status, taken.value.code, taken.value.attempts) == (409, "runnable_name_taken", 1)
    assert created.id in taken.value.message
    assert client.runnables.get_by_name(name).config == {"function": "echo"}  # the first one kept it
    with pytest.raises(Conflict):
        client.runnables.update(other, name=name)


def test_invalid_requests_are_invalid_request_errors_naming_the_field(client: Runplane) -> None:
    with pytest.raises(InvalidRequest) as unknown:
        client.runnables.create(unique("x"), "python", {"function": "no_such_function"})
    assert unknown.value.status == 400
    assert any("function" in issue["field"] for issue in unknown.value.issues), unknown.value.details
    with pytest.raises(InvalidRequest) as refused:
        client.runs.start("echo", timeout_seconds=10**9)
    assert refused.value.code == "timeout_too_long", refused.value.details


def test_missing_things_are_not_found(client: Runplane) -> None:
    missing = "01a2080f-0000-7000-8000-000000000000"
    for call, code in (
        (lambda: client.runs.get(missing), "run_not_found"),
        (lambda: client.runs.cancel(missing), "run_not_found"),
        (lambda: client.runs.start(missing), "runnable_not_found"),
        (lambda: client.runnables.delete(missing), "runnable_not_found"),
    ):
        with pytest.raises(NotFound) as error:
            call()
        assert (error.value.status, error.value.code) == (404, code)


def test_a_bad_key_is_unauthorized_and_a_narrow_one_forbidden(client: Runplane, stack: Stack) -> None:
    with (
        Runplane(client.api_url, "rpk_0000000000000000_nope") as stranger,
        pytest.raises(Unauthorized) as bad,
    ):
        stranger.runs.get("01a2080f-0000-7000-8000-000000000000")
    assert (bad.value.status, bad.value.code) == (401, "unauthorized")

    started = client.runs.start("echo")
    made = stack.call("POST", "/v1/keys", {"scopes": ["runs:read"]})
    assert made.status_code == 201, made.text
    with Runplane(client.api_url, made.json()["api_key"]) as reader:
        with pytest.raises(Forbidden) as narrow:
            reader.runnables.create(unique("x"), "python", {"function": "echo"})
        assert (narrow.value.status, narrow.value.missing_perms) == (403, ["runnables:write"])
        assert reader.runs.get(started.id).id == started.id  # what it may do, it does


def test_a_body_over_the_limit_is_payload_too_large(client: Runplane) -> None:
    with pytest.raises(PayloadTooLarge) as large:
        client.runs.start("echo", {"text": "x" * (1024 * 1024 + 1)})
    assert (large.value.status, large.value.code) == (413, "payload_too_large")


def test_every_error_is_a_runplane_error_with_the_body_as_details(client: Runplane) -> None:
    with pytest.raises(RunplaneError) as error:
        client.runs.get("01a2080f-0000-7000-8000-000000000000")
    assert error.value.details["code"] == error.value.code == "run_not_found"
    assert error.value.message == error.value.details["error"]


def test_a_resource_is_created_read_listed_and_deleted(client: Runplane) -> None:
    data, folder = b"id,name\n1,ada\n", unique("folder")
    created = client.resources.create(
        "people.csv", data, content_type="text/csv", directory_path=folder, tags=["client"]
    )
    assert (created.name, created.directory_path, created.status) == ("people.csv", folder, "ready")
    assert (created.size, created.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    read = client.resources.get(created.id)
    assert read.download_url
    assert requests.get(read.download_url, timeout=30).content == data
    assert [r.id for r in client.resources.list(directory_path=folder)] == [created.id]

    run = client.runs.run(
        client.runnables.create(unique("files"), "python", {"function": "describe_files"}),
        resources=[{"name": "people", "resource": {"id": created.id}}],
        timeout=30,
    )
    assert run.outputs["people"]["sha256"] == created.sha256, run

    client.resources.delete(created.id)
    with pytest.raises(NotFound):
        client.resources.get(created.id)
    assert list(client.resources.list(directory_path=folder)) == []
