"""Form bodies for Roe AI's single agent runs, before the routes read them: the gate lets them through on
those routes only, the body limit counts decoded bytes, and files become run resources stored in S3."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import httpx
import pytest
from runplane.adapters import aws
from runplane.api import gate
from runplane.domain.errors import Conflict, InvalidRequest, PayloadTooLarge, UnsupportedMediaType
from runplane.domain.files import FilePart
from runplane.domain.models import RunQuery, StartRunRequest
from runplane.local.gateway import proxy_event
from runplane.logic import keys, resources, runs, services
from runplane.logic.runnables import get_runnable

from tests.conftest import Api, drain, make_runnable

AGENT = "7c1f7a9e-8e1a-4a39-9a53-5b8e4f0f1d11"
PDF = b"%PDF-1.7\r\n\x00\xff\xfe binary \r\n--\r\n"  # not UTF-8, and ends in what looks like a line end
FORM_ROUTES = [
    f"/v1/agents/run/{AGENT}/",
    f"/v1/agents/run/{AGENT}",
    f"/v1/agents/run/{AGENT}/async/",
    f"/v1/agents/run/{AGENT}/async",
    f"/v1/agents/run/{AGENT}/versions/v-2/",
    f"/v1/agents/run/{AGENT}/versions/3f1e2d4c-0000-4000-8000-000000000001/async/",
    f"/v1/agents/run/{AGENT}/versions/v-2/async",
]
JSON_ONLY_ROUTES = [
    f"/v1/agents/run/{AGENT}/async/many/",
    f"/v1/agents/run/{AGENT}/versions/",
    f"/v1/agents/run/{AGENT}/other/",
    f"/v1/runnable/{AGENT}/runs",
    f"/api/agents/{AGENT}/run-async",
    "/v1/runnables",
]


def form_event(path: str, token: str, *, files: bool = True, extra: bytes = b"") -> dict[str, Any]:
    """A POST event as API Gateway builds it from what httpx sends (multipart: base64)."""
    attached = {"doc": ("doc.pdf", PDF + extra, "application/pdf")} if files else None
    request = httpx.Request("POST", f"https://api.example.com{path}", data={"topic": "x"}, files=attached)
    headers = {name: [value] for name, value in request.headers.items()}
    headers["Authorization"] = [f"Bearer {token}"]
    return proxy_event("POST", path, headers, request.read(), "127.0.0.1")


# --- the gate ---


@pytest.mark.parametrize("path", FORM_ROUTES)
@pytest.mark.parametrize("files", [True, False], ids=["multipart", "urlencoded"])
def test_the_gate_lets_a_form_through_on_roes_single_run_routes(
    account: keys.CreatedKey, path: str, files: bool
) -> None:
    event = form_event(path, account.token, files=files)
    # multipart is binary to both API types; an HTTP API base64-encodes a urlencoded form too
    assert event["isBase64Encoded"] is (files or services.services().settings.api_type == "http")
    assert gate.admit(event).account_id == account.account_id


@pytest.mark.parametrize("path", FORM_ROUTES[:2])
def test_on_those_routes_another_media_type_is_left_to_the_route_and_json_is_still_checked(
    account: keys.CreatedKey, path: str
) -> None:
    headers = {"Authorization": [f"Bearer {account.token}"], "Content-Type": ["text/plain"]}
    assert gate.admit(proxy_event("POST", path, headers, b"hello", "127.0.0.1")) is not None
    headers["Content-Type"] = ["application/json"]
    with pytest.raises(InvalidRequest) as raised:
        gate.admit(proxy_event("POST", path, headers, b'{"a": 1, "a": 2}', "127.0.0.1"))
    assert raised.value.code == "invalid_json"


@pytest.mark.parametrize("path", JSON_ONLY_ROUTES)
@pytest.mark.parametrize("files", [True, False], ids=["multipart", "urlencoded"])
def test_a_form_is_415_everywhere_else(account: keys.CreatedKey, path: str, files: bool) -> None:
    with pytest.raises(UnsupportedMediaType):
        gate.admit(form_event(path, account.token, files=files))


def test_a_form_elsewhere_is_answered_415_in_the_dialects_shape(api: Api, echo_id: str) -> None:
    request = httpx.Request("POST", "https://x/", data={"a": "1"}, files={"f": ("f", b"1", "text/plain")})
    sent = {"Content-Type": request.headers["content-type"]}
    reply = api.call("POST", f"/v1/agents/run/{echo_id}/async/many/", raw=request.read(), headers=sent)
    assert (reply.status, reply.json()["status_code"]) == (415, 415)
    reply = api.call("POST", f"/v1/runnable/{echo_id}/runs", raw=request.read(), headers=sent)
    assert (reply.status, reply.json()["code"]) == (415, "unsupported_media_type")


# --- the body limit ---


def test_the_limit_counts_the_decoded_bytes_of_a_base64_body(
    account: keys.CreatedKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNPLANE_MAX_REQUEST_BYTES", "4096")
    services.reset()
    path = FORM_ROUTES[0]
    size = len(base64.b64decode(form_event(path, account.token)["body"]))
    fits = form_event(path, account.token, extra=b"x" * (4096 - size))
    assert len(fits["body"]) > 4096  # its base64 is over the limit, its bytes are not
    assert gate.admit(fits) is not None
    with pytest.raises(PayloadTooLarge):
        gate.admit(form_event(path, account.token, extra=b"x" * (4096 - size + 1)))


def test_the_limit_counts_utf8_bytes_of_a_text_body(
    account: keys.CreatedKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNPLANE_MAX_REQUEST_BYTES", "2048")
    services.reset()
    headers = {"Authorization": [f"Bearer {account.token}"], "Content-Type": ["application/json"]}
    body = ('{"t": "' + "é" * 1100 + '"}').encode()  # 1,109 characters, 2,209 bytes
    with pytest.raises(PayloadTooLarge):
        gate.admit(proxy_event("POST", "/v1/runnables", headers, body, "127.0.0.1"))


def test_no_body_over_api_gateways_10_mib_passes_whatever_the_setting(
    account: keys.CreatedKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNPLANE_MAX_REQUEST_BYTES", str(64 * 1024 * 1024))
    services.reset()
    event = form_event(FORM_ROUTES[0], account.token, extra=b"x" * (10 * 1024 * 1024))
    with pytest.raises(PayloadTooLarge) as raised:
        gate.admit(event)
    assert "10485760" in raised.value.message


# --- files as run resources ---


def s3_requests() -> list[str]:
    """The S3 operations made from now on, as they are made."""
    made: list[str] = []
    services.services().blobs.client.meta.events.register(
        "before-call.s3", lambda model, **_: made.append(model.name)
    )
    return made


def start(account_id: str, runnable_id: str, files: list[FilePart], key: str | None = None) -> runs.Accepted:
    request = StartRunRequest(inputs={"topic": "files"})
    return runs.start_run(account_id, runnable_id, request, created_by=None, idempotency_key=key, files=files)


def test_each_file_is_a_resource_of_the_account_that_reaches_the_runnable_by_its_field(
    account: keys.CreatedKey,
) -> None:
    describe = make_runnable(account.account_id, "describe_files")
    made = s3_requests()
    files = [
        FilePart("doc", "résumé.pdf", "application/pdf", PDF),
        FilePart("note", "note.txt", "text/plain; charset=utf-8", "héllo\n".encode()),
    ]
    record = start(account.account_id, describe, files).record
    assert made == ["PutObject", "PutObject"]  # one request per file, none else (the payload is inline)
    [doc, note] = runs.load_payload(record)["resources"]
    assert [doc["name"], note["name"]] == ["doc", "note"]
    stored = resources.get_resource(account.account_id, doc["resource"]["id"])
    assert stored.model_dump(
        include={"name", "directory_path", "size", "content_type", "source", "sha256"}
    ) == {
        "name": "résumé.pdf",
        "directory_path": "files",
        "size": len(PDF),
        "content_type": "application/pdf",
        "source": "file",
        "sha256": hashlib.sha256(PDF).hexdigest(),
    }
    s3 = aws.client("s3")
    bucket = services.services().settings.payload_bucket
    key = f"{account.account_id}/resources/{stored.id}"
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == PDF
    assert s3.get_object_tagging(Bucket=bucket, Key=key)["TagSet"] == [
        {"Key": "runplane-expiry", "Value": "resource"}
    ]
    drain("worker")
    state = runs.get_run(account.account_id, record.id)
    assert state.status == "completed", state.result
    assert state.result.outputs == {
        "inputs": {"topic": "files"},
        "doc": {
            "name": "résumé.pdf",
            "directory_path": "files",
            "size": len(PDF),
            "sha256": hashlib.sha256(PDF).hexdigest(),
            "content_type": "application/pdf",
            "metadata": {"field": "doc", "filename": "résumé.pdf"},
            "text": None,
            "path": "files/résumé.pdf",
            "same": True,
        },
        "note": {
            "name": "note.txt",
            "directory_path": "files",
            "size": 7,
            "sha256": hashlib.sha256("héllo\n".encode()).hexdigest(),
            "content_type": "text/plain",
            "metadata": {"field": "note", "filename": "note.txt"},
            "text": "héllo\n",
            "path": "files/note.txt",
            "same": True,
        },
    }


def test_a_files_name_is_its_filename_without_the_folders_it_was_sent_with(
    account: keys.CreatedKey, echo_id: str
) -> None:
    record = start(
        account.account_id, echo_id, [FilePart("doc", "C:\\Users\\me\\a.pdf", "application/pdf", PDF)]
    ).record
    [doc] = runs.load_payload(record)["resources"]
    assert (doc["resource"]["name"], doc["resource"]["metadata"]["filename"]) == (
        "a.pdf",
        "C:\\Users\\me\\a.pdf",
    )


def test_a_run_without_files_makes_no_s3_request(account: keys.CreatedKey, echo_id: str) -> None:
    made = s3_requests()
    start(account.account_id, echo_id, [])
    assert made == []


def test_an_idempotent_replay_with_the_same_file_is_the_same_run_stored_once(
    account: keys.CreatedKey, echo_id: str
) -> None:
    made = s3_requests()
    first = start(account.account_id, echo_id, [FilePart("doc", "a.pdf", "application/pdf", PDF)], "k-1")
    again = start(account.account_id, echo_id, [FilePart("doc", "a.pdf", "application/pdf", PDF)], "k-1")
    assert (again.record.id, again.replayed, first.replayed) == (first.record.id, True, False)
    assert made == ["PutObject"]


@pytest.mark.parametrize(
    "other",
    [
        [FilePart("doc", "a.pdf", "application/pdf", PDF + b"!")],  # other bytes
        [FilePart("doc", "b.pdf", "application/pdf", PDF)],  # another name
        [FilePart("other", "a.pdf", "application/pdf", PDF)],  # another field
        [],  # no file
    ],
)
def test_the_same_key_with_another_file_is_409(
    account: keys.CreatedKey, echo_id: str, other: list[FilePart]
) -> None:
    start(account.account_id, echo_id, [FilePart("doc", "a.pdf", "application/pdf", PDF)], "k-2")
    with pytest.raises(Conflict) as raised:
        start(account.account_id, echo_id, other, "k-2")
    assert raised.value.code == "idempotency_key_reused"


def test_a_file_may_not_take_the_name_of_another_resource_or_an_invalid_one(
    account: keys.CreatedKey, echo_id: str
) -> None:
    made = s3_requests()
    request = StartRunRequest(
        resources=[{"name": "doc", "resource": {"name": "x", "directory_path": "", "content": "data:,x"}}]
    )
    for files, field in [
        (
            [FilePart("ok", "a", "text/plain", b"1"), FilePart("doc", "a.pdf", "application/pdf", PDF)],
            "body.doc",
        ),
        ([FilePart("", "a.pdf", "application/pdf", PDF)], "body."),
    ]:
        with pytest.raises(InvalidRequest) as raised:
            runs.start_run(account.account_id, echo_id, request, created_by=None, files=files)
        assert [issue.field for issue in raised.value.issues] == [field]
    assert made == []  # nothing stored for a run that is refused
    assert runs.list_runs(account.account_id, RunQuery(), 10, None).items == []


def test_a_runnable_passed_in_is_not_read_again_and_its_input_schema_is_still_checked(
    account: keys.CreatedKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = {"type": "object", "properties": {"topic": {"type": "integer"}}}
    runnable = get_runnable(
        account.account_id, make_runnable(account.account_id, "echo", input_schema=schema)
    )
    reads: list[str] = []
    store = services.services().runnables
    monkeypatch.setattr(store, "get", lambda *a, **kw: reads.append("get"))
    with pytest.raises(InvalidRequest) as raised:
        runs.start_run(
            account.account_id,
            runnable.id,
            StartRunRequest(inputs={"topic": "x"}),
            created_by=None,
            runnable=runnable,
        )
    assert raised.value.code == "invalid_inputs"
    accepted = runs.start_run(
        account.account_id,
        runnable.id,
        StartRunRequest(inputs={"topic": 1}),
        created_by=None,
        runnable=runnable,
    )
    assert accepted.record.runnable_id == runnable.id
    assert reads == []


@pytest.mark.parametrize("attached", [PDF, b"text only"], ids=["binary", "text"])
def test_the_local_gateway_delivers_multipart_base64_byte_for_byte_as_api_gateway_does(
    attached: bytes,
) -> None:
    request = httpx.Request("POST", "https://x/", data={"t": "é"}, files={"f": ("f.bin", attached, None)})
    body = request.read()
    event = proxy_event("POST", "/v1/x", {"content-type": [request.headers["content-type"]]}, body, "::1")
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == body
    json_event = proxy_event(
        "POST", "/v1/x", {"Content-Type": ["application/json"]}, b'{"t": "\xc3\xa9"}', "::1"
    )
    assert (json_event["body"], json_event["isBase64Encoded"]) == ('{"t": "é"}', False)
