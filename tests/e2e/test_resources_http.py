"""End to end: resources over real sockets through `runplane local`. Bytes go to moto's S3 server and come
back from it by presigned URLs; a `uri` is fetched from a loopback file server; an http runnable (a
loopback agent) downloads each resource of its envelope by its `url`; a python runnable reads them through
`ctx.resources`; a Cotool attachment names a resource by its `fileId`."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from tests.cli import cli
from tests.file_server import FileServer, Served
from tests.local_stack import Stack, start_stack

pytestmark = pytest.mark.e2e

FETCH_BYTES = 1024 * 1024  # the most a `uri` may hold here (RUNPLANE_RESOURCE_FETCH_BYTES)
TEST_ENV = {
    "RUNPLANE_RUNNABLE_PACKAGES": "tests.fixtures.runnables",
    "RUNPLANE_ALLOW_LOOPBACK": "1",  # the file server and the agent are on loopback
    "RUNPLANE_LEASE_SECONDS": "2",
    "RUNPLANE_LOCAL_SWEEP_SECONDS": "0.5",
    "RUNPLANE_SYNC_WAIT_SECONDS": "20",
    "RUNPLANE_RESOURCE_FETCH_BYTES": str(FETCH_BYTES),
}
PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489") + b"\0" * 32
NOTES = "first line\nsecond line ✓\n".encode()
BLOB = bytes(range(256)) * 64


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    started = start_stack(tmp_path_factory.mktemp("stack"), **TEST_ENV)
    started.keep_draining_output()
    yield started
    started.stop()


# --- helpers ---


def data_uri(data: bytes, media_type: str) -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def unique(prefix: str) -> str:
    """A directory of this test alone: the module's tests share one account."""
    return f"{prefix}/{uuid.uuid4().hex[:8]}"


def create(stack: Stack, data: bytes = NOTES, media_type: str = "text/plain", **fields: Any) -> dict:
    body = {"name": "notes.txt", "directory_path": "docs", "content": data_uri(data, media_type), **fields}
    reply = stack.call("POST", "/v1/resources", body)
    assert reply.status_code == 201, reply.text
    return reply.json()


def get(stack: Stack, resource_id: str) -> dict:
    reply = stack.call("GET", f"/v1/resources/{resource_id}")
    assert reply.status_code == 200, reply.text
    return reply.json()


def download(resource: dict) -> bytes:
    """The bytes behind a resource's presigned `download_url`, read from moto's S3 server without a key."""
    assert resource["download_url"], resource
    reply = requests.get(resource["download_url"], timeout=30)
    assert reply.status_code == 200, reply.text[:500]
    return reply.content


def refused(reply: requests.Response, status: int, code: str, field: str | None = None) -> dict:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["code"] == code, body
    if field is not None:
        assert field in [issue["field"] for issue in body["issues"]], body
    return body


def start_upload(stack: Stack, **fields: Any) -> dict:
    body = {"name": "upload.bin", "directory_path": "uploads", **fields}
    reply = stack.call("POST", "/v1/resources/uploads", body)
    assert reply.status_code == 201, reply.text
    return reply.json()


def send_upload(started: dict, data: bytes, filename: str = "upload.bin") -> requests.Response:
    """The file to S3 as the POST policy says: its fields, then the file as the form field `file` (last)."""
    upload = started["upload"]
    assert upload["method"] == "POST"
    return requests.post(upload["url"], data=upload["fields"], files={"file": (filename, data)}, timeout=60)


def upload(stack: Stack, data: bytes, **fields: Any) -> dict:
    """A resource uploaded through its presigned POST, read once it is ready."""
    started = start_upload(stack, **fields)
    sent = send_upload(started, data)
    assert sent.status_code in (200, 201, 204), sent.text[:500]
    resource = get(stack, started["resource"]["id"])
    assert resource["status"] == "ready", resource
    return resource


def python_runnable(stack: Stack, function: str) -> str:
    spec = {"name": f"{function}-{uuid.uuid4().hex[:8]}", "kind": "python", "config": {"function": function}}
    reply = stack.call("POST", "/v1/runnables", spec)
    assert reply.status_code == 201, reply.text
    return reply.json()["id"]


def run_sync(stack: Stack, runnable_id: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = stack.call("POST", f"/v1/runnable/{runnable_id}/runs?mode=sync", body)
    assert reply.status_code == 200, reply.text
    state = reply.json()
    assert state["status"] == "completed", state
    return state


@pytest.fixture
def served() -> Iterator[FileServer]:
    server = FileServer()
    yield server
    server.close()


class HashingAgent:
    """An http runnable on loopback: it downloads each resource of the envelope by its presigned `url` and
    answers `{"outputs": {name: {"sha256", "size"}}}` of the bytes it read; it keeps each envelope."""

    def __init__(self) -> None:
        self.envelopes: list[dict[str, Any]] = []
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                envelope = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                agent.envelopes.append(envelope)
                outputs = {}
                for name, resource in envelope["resources"].items():
                    got = requests.get(resource["url"], timeout=30)
                    outputs[name] = {"status": got.status_code, "sha256": sha256(got.content)}
                    outputs[name]["size"] = len(got.content)
                answer = json.dumps({"outputs": outputs}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/run"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wait_for(done: Callable[[], Any], seconds: float = 30) -> Any:
    deadline = time.monotonic() + seconds
    while not (found := done()):
        assert time.monotonic() < deadline, "not done in time"
        time.sleep(0.1)
    return found


# --- creating from content ---


def test_a_resource_from_content_is_stored_and_its_download_url_gives_the_same_bytes(stack: Stack) -> None:
    created = create(
        stack,
        NOTES,
        "text/plain",
        name="notes résumé.txt",
        directory_path="docs/./2024//",
        tags=["alpha", "beta"],
        metadata={"owner": "e2e", "n": 1},
    )
    assert created["status"] == "ready"
    assert created["source"] == "content"
    assert created["directory_path"] == "docs/2024"  # empty and `.` segments dropped
    assert (created["size"], created["sha256"]) == (len(NOTES), sha256(NOTES))
    assert created["content_type"] == "text/plain"
    assert (created["tags"], created["metadata"]) == (["alpha", "beta"], {"owner": "e2e", "n": 1})
    assert created["pinned"] is False
    assert created["expires_at"] > created["created_at"]
    assert "download_url" not in created or created["download_url"] is None

    shown = get(stack, created["id"])
    assert {k: v for k, v in shown.items() if not k.startswith("download_url")} == created
    assert shown["download_url_expires_at"] > shown["created_at"]
    reply = requests.get(shown["download_url"], timeout=30)
    assert reply.content == NOTES
    assert reply.headers["Content-Disposition"] == "attachment; filename*=UTF-8''notes%20r%C3%A9sum%C3%A9.txt"
    assert download(get(stack, created["id"])) == NOTES  # a fresh URL each read

    png = create(stack, PNG, "image/png", name="pixel.png", pinned=True)
    assert (png["content_type"], png["pinned"], png.get("expires_at")) == ("image/png", True, None)
    assert download(get(stack, png["id"])) == PNG
    plain = create(stack, name="plain.txt", content="data:,hello%20world")  # RFC 2397 without base64
    assert (plain["content_type"], plain["size"]) == ("text/plain", 11)


@pytest.mark.parametrize(
    ("fields", "code", "field"),
    [
        ({"content": data_uri(b"\xff\xfe not utf-8", "text/plain")}, "content_type_mismatch", "body.content"),
        ({"content": data_uri(b"plain text", "image/png")}, "content_type_mismatch", "body.content"),
        ({"content": data_uri(PNG, "application/json")}, "content_type_mismatch", "body.content"),
        ({"content": "data:text/plain;base64,%%%not base64"}, "invalid_content", "body.content"),
        ({"content": "data:not a type;base64,aGk="}, "invalid_content", "body.content"),
        ({"directory_path": "docs/../../etc"}, "validation_error", None),
        ({"directory_path": "/etc"}, "validation_error", None),
        ({"name": "a/b.txt"}, "validation_error", None),
        ({"name": ".."}, "validation_error", None),
        ({"content": "aGVsbG8="}, "validation_error", None),  # base64 alone is no data URI
        ({"uri": "https://example.com/x"}, "validation_error", None),  # both content and uri
        ({"tags": [""]}, "validation_error", None),
    ],
)
def test_content_that_is_not_what_it_says_or_a_path_that_leaves_the_run_is_a_400(
    stack: Stack, fields: dict, code: str, field: str | None
) -> None:
    body = {"name": "x.txt", "directory_path": "docs", "content": data_uri(b"hi", "text/plain"), **fields}
    refused(stack.call("POST", "/v1/resources", body), 400, code, field)


def test_neither_content_nor_uri_is_a_400(stack: Stack) -> None:
    refused(stack.call("POST", "/v1/resources", {"name": "x", "directory_path": ""}), 400, "validation_error")


# --- creating from a uri ---


def test_a_resource_from_a_uri_is_fetched_once_and_kept_without_its_query(
    stack: Stack, served: FileServer
) -> None:
    document = json.dumps({"answer": 42, "text": "ok ✓"}).encode()
    served.routes["/files/report.json"] = Served(
        200, {"Content-Type": "application/json; charset=utf-8"}, document
    )
    uri = served.url("/files/report.json?signature=secret&expires=1")
    created = stack.call("POST", "/v1/resources", {"name": "report.json", "directory_path": "", "uri": uri})
    assert created.status_code == 201, created.text
    resource = created.json()
    assert resource["source"] == "uri"
    assert resource["uri"] == served.url("/files/report.json")  # the query may hold credentials
    assert (resource["content_type"], resource["size"]) == ("application/json", len(document))
    assert resource["sha256"] == sha256(document)
    assert resource["directory_path"] == ""
    assert served.requested == ["/files/report.json?signature=secret&expires=1"]
    assert download(get(stack, resource["id"])) == document
    assert len(served.requested) == 1  # fetched once, when created

    served.routes["/raw"] = Served(200, {}, BLOB)  # no Content-Type: octet-stream
    raw = stack.call(
        "POST", "/v1/resources", {"name": "raw", "directory_path": "x", "uri": served.url("/raw")}
    )
    assert raw.status_code == 201, raw.text
    assert raw.json()["content_type"] == "application/octet-stream"
    assert download(get(stack, raw.json()["id"])) == BLOB


def test_a_uri_that_cannot_be_fetched_is_a_400_naming_it(stack: Stack, served: FileServer) -> None:
    served.routes["/moved"] = Served(302, {"Location": served.url("/elsewhere")}, b"")
    served.routes["/elsewhere"] = Served(200, {"Content-Type": "text/plain"}, b"followed")
    served.routes["/lying.png"] = Served(200, {"Content-Type": "image/png"}, b"not a png at all")
    served.routes["/huge"] = Served(
        200, {"Content-Type": "application/octet-stream"}, b"x" * (FETCH_BYTES + 1)
    )
    cases = [
        ("/missing", 400, "fetch_failed", "answered HTTP 404"),
        ("/moved", 400, "fetch_failed", "redirects are not followed"),
        ("/lying.png", 400, "content_type_mismatch", "not image/png"),
        ("/huge", 400, "resource_too_large", f"larger than {FETCH_BYTES} bytes"),
    ]
    for path, status, code, said in cases:
        body = {"name": "f", "directory_path": "fetched", "uri": served.url(path)}
        answer = refused(stack.call("POST", "/v1/resources", body), status, code, "body.uri")
        assert said in json.dumps(answer), (path, answer)
    assert "/elsewhere" not in served.requested

    port = served.server.server_address[1]
    served.close()  # nothing listens there any more
    body = {"name": "f", "directory_path": "fetched", "uri": f"http://127.0.0.1:{port}/gone"}
    answer = refused(stack.call("POST", "/v1/resources", body), 400, "fetch_failed", "body.uri")
    assert "connection failed" in json.dumps(answer)
    listed = stack.call("GET", "/v1/resources?directory_path=fetched").json()
    assert listed["items"] == []  # nothing is stored for a refused fetch


# --- uploading through a presigned POST ---


def test_an_upload_through_the_presigned_post_becomes_ready_with_the_same_bytes(stack: Stack) -> None:
    started = start_upload(
        stack, name="sample.bin", content_type="application/octet-stream", tags=["up"], metadata={"k": "v"}
    )
    pending, form = started["resource"], started["upload"]
    assert (pending["status"], pending["source"]) == ("pending", "upload")
    assert pending.get("size") is None
    assert pending.get("download_url") is None
    assert form["method"] == "POST"
    assert form["url"].startswith(stack.info["aws_endpoint_url"])  # moto's S3 server, not the API
    assert form["fields"]["key"].startswith(f"{stack.info['account_id']}/resources/{pending['id']}")
    assert form["fields"]["Content-Type"] == "application/octet-stream"
    assert form["max_bytes"] > 0
    assert form["expires_at"] > pending["created_at"]
    still = get(stack, pending["id"])
    assert (still["status"], still.get("download_url")) == ("pending", None)

    sent = send_upload(started, BLOB, "sample.bin")
    assert sent.status_code in (200, 201, 204), sent.text[:500]
    ready = get(stack, pending["id"])
    assert (ready["status"], ready["size"], ready.get("problem")) == ("ready", len(BLOB), None)
    assert (ready["tags"], ready["metadata"], ready["name"]) == (["up"], {"k": "v"}, "sample.bin")
    assert download(ready) == BLOB
    listed = stack.call("GET", "/v1/resources?directory_path=uploads&tag=up").json()["items"]
    assert [(r["id"], r["status"]) for r in listed if r["id"] == pending["id"]] == [(pending["id"], "ready")]


def test_a_5_mb_upload_goes_to_s3_not_through_the_api(stack: Stack) -> None:
    data = os.urandom(5 * 1024 * 1024)
    started = start_upload(stack, name="big.bin", size=len(data))
    assert started["upload"]["max_bytes"] == len(data)  # exactly the declared size
    sent = send_upload(started, data, "big.bin")
    assert sent.status_code in (200, 201, 204), sent.text[:500]
    ready = get(stack, started["resource"]["id"])
    assert (ready["status"], ready["size"]) == ("ready", len(data))
    assert sha256(download(ready)) == sha256(data)


def test_an_upload_that_breaks_its_limits_never_becomes_ready(stack: Stack) -> None:
    """A declared size S3 (or, after it, the check on the first read) holds the upload to, and a media type
    the bytes must match: a resource that breaks either stays pending, saying why, and no run may use it."""
    sized = start_upload(stack, name="ten.bin", size=10)
    sent = send_upload(sized, b"x" * 11)
    shown = get(stack, sized["resource"]["id"])
    if sent.status_code in (200, 201, 204):  # moto does not enforce content-length-range: Runplane does
        assert shown["status"] == "pending", shown
        assert "exactly 10" in shown["problem"], shown
    else:
        assert shown["status"] == "pending", shown

    lying = start_upload(stack, name="pixel.png", content_type="image/png")
    assert send_upload(lying, b"this is text, not a png").status_code in (200, 201, 204)
    shown = get(stack, lying["resource"]["id"])
    assert shown["status"] == "pending", shown
    assert "not what its media type says" in shown["problem"], shown
    assert shown.get("download_url") is None

    waiting = start_upload(stack, name="never.bin")
    echo = stack.runnable("echo")
    body = {
        "resources": [
            {"name": "lying", "resource": {"id": lying["resource"]["id"]}},
            {"name": "waiting", "resource": {"id": waiting["resource"]["id"]}},
        ]
    }
    answer = refused(stack.call("POST", f"/v1/runnable/{echo}/runs", body), 400, "resource_not_found")
    by_field = {issue["field"]: issue["message"] for issue in answer["issues"]}
    assert "not what its media type says" in by_field["body.resources.0.resource.id"]
    assert by_field["body.resources.1.resource.id"] == "its upload has not arrived"


def test_an_upload_larger_than_the_deployment_allows_is_refused_before_it_starts(stack: Stack) -> None:
    body = {"name": "huge.bin", "directory_path": "", "size": 5 * 1024**3 + 1}
    refused(stack.call("POST", "/v1/resources/uploads", body), 400, "resource_too_large", "body.size")
    body = {"name": "x", "directory_path": "", "content_type": "not a type"}
    refused(stack.call("POST", "/v1/resources/uploads", body), 400, "validation_error")


def test_an_upload_is_ready_for_a_run_once_its_object_is_there_without_a_read_between(stack: Stack) -> None:
    started = start_upload(stack, name="direct.bin", directory_path="direct")
    assert send_upload(started, BLOB).status_code in (200, 201, 204)
    body = {"resources": [{"name": "direct", "resource": {"id": started["resource"]["id"]}}]}
    outputs = run_sync(stack, python_runnable(stack, "describe_files"), body)["result"]["outputs"]
    assert (outputs["direct"]["sha256"], outputs["direct"]["size"]) == (sha256(BLOB), len(BLOB))
    assert get(stack, started["resource"]["id"])["status"] == "ready"


def test_the_accounts_usage_counts_the_resources_it_created_and_their_bytes(stack: Stack) -> None:
    def counted() -> tuple[int, int]:
        usage = stack.call("GET", "/v1/account/usage").json()
        return usage["resources_created"], usage["resource_bytes_created"]

    before = counted()
    create(stack, b"twelve bytes", name="counted.txt")
    started = start_upload(stack, name="counted.bin")
    assert counted() == (before[0] + 1, before[1] + 12)  # a pending upload is not counted yet
    assert send_upload(started, b"x" * 100).status_code in (200, 201, 204)
    get(stack, started["resource"]["id"])
    get(stack, started["resource"]["id"])  # counted once, when it became ready
    assert counted() == (before[0] + 2, before[1] + 112)


def test_a_ready_upload_cannot_be_replaced_through_its_form(stack: Stack) -> None:
    """The form stays valid until it expires, but what it writes is no longer what the resource serves."""
    started = start_upload(stack, name="pixel.png", content_type="image/png")
    assert send_upload(started, PNG).status_code in (200, 201, 204)
    assert get(stack, started["resource"]["id"])["size"] == len(PNG)
    send_upload(started, b"now text, not a png, and longer than the first upload was" * 4)
    resource = get(stack, started["resource"]["id"])
    assert download(resource) == PNG, "the ready resource's bytes were replaced"


# --- listing, getting, deleting ---


def test_resources_are_listed_newest_first_by_directory_and_tag_in_pages(stack: Stack) -> None:
    directory = unique("listed")
    made = [
        create(stack, f"file {n}".encode(), name=f"f{n}.txt", directory_path=directory, tags=tags)
        for n, tags in enumerate([["red"], ["red", "blue"], ["blue"]])
    ]
    ids = [resource["id"] for resource in made]

    def listed(query: str) -> list[str]:
        reply = stack.call("GET", f"/v1/resources?directory_path={directory}{query}")
        assert reply.status_code == 200, reply.text
        return [resource["id"] for resource in reply.json()["items"]]

    assert listed("") == ids[::-1]
    assert listed("&tag=red") == [ids[1], ids[0]]
    assert listed("&tag=blue") == [ids[2], ids[1]]
    assert listed("&tag=green") == []
    items = stack.call("GET", f"/v1/resources?directory_path={directory}").json()["items"]
    assert all("download_url" not in item or item["download_url"] is None for item in items)

    paged, cursor = [], None
    for _ in range(200):  # a filtered page may be empty and still have a next one
        query = f"/v1/resources?directory_path={directory}&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = stack.call("GET", query).json()
        assert len(page["items"]) <= 2
        paged += [resource["id"] for resource in page["items"]]
        if not (cursor := page["next_cursor"]):
            break
    assert cursor is None
    assert paged == ids[::-1]
    refused(stack.call("GET", "/v1/resources?cursor=not-one-of-ours"), 400, "invalid_cursor")
    refused(stack.call("GET", "/v1/resources?limit=0"), 400, "validation_error")
    # a directory no resource can have (a segment over 255 bytes) is no filter
    refused(stack.call("GET", f"/v1/resources?directory_path={'x' * 256}"), 400, "invalid_request")


def test_a_deleted_resource_is_gone_with_its_bytes(stack: Stack) -> None:
    resource = get(stack, create(stack, b"to delete", name="gone.txt")["id"])
    assert stack.call("DELETE", f"/v1/resources/{resource['id']}").status_code == 204
    refused(stack.call("GET", f"/v1/resources/{resource['id']}"), 404, "resource_not_found")
    refused(stack.call("DELETE", f"/v1/resources/{resource['id']}"), 404, "resource_not_found")
    stale = requests.get(resource["download_url"], timeout=30)  # the URL it had: no object behind it
    assert stale.status_code in (403, 404), stale.text[:300]  # 403 to a signer that may not list the bucket
    assert b"to delete" not in stale.content
    refused(stack.call("GET", f"/v1/resources/{uuid.uuid4()}"), 404, "resource_not_found")
    refused(stack.call("GET", "/v1/resources/not-a-uuid"), 400, "validation_error")
    echo = stack.runnable("echo")
    body = {"resources": [{"name": "gone", "resource": {"id": resource["id"]}}]}
    refused(
        stack.call("POST", f"/v1/runnable/{echo}/runs", body),
        400,
        "resource_not_found",
        "body.resources.0.resource.id",
    )


def test_another_accounts_resources_are_not_found(stack: Stack) -> None:
    mine = create(stack, b"mine", name="mine.txt")
    account = f"other-{uuid.uuid4().hex[:8]}"
    created = json.loads(cli(stack, "keys", "create", "--account", account, "--scope", "admin"))
    as_other = {"headers": {"Authorization": f"Bearer {created['api_key']}"}}
    refused(stack.call("GET", f"/v1/resources/{mine['id']}", **as_other), 404, "resource_not_found")
    refused(stack.call("DELETE", f"/v1/resources/{mine['id']}", **as_other), 404, "resource_not_found")
    assert stack.call("GET", "/v1/resources", **as_other).json()["items"] == []
    spec = {"name": "echo", "kind": "python", "config": {"function": "echo"}}
    echo = stack.call("POST", "/v1/runnables", spec, **as_other).json()["id"]
    body = {"resources": [{"name": "stolen", "resource": {"id": mine["id"]}}]}
    refused(stack.call("POST", f"/v1/runnable/{echo}/runs", body, **as_other), 400, "resource_not_found")
    theirs = stack.call(
        "POST",
        "/v1/resources",
        {"name": "theirs.txt", "directory_path": "docs", "content": data_uri(b"theirs", "text/plain")},
        **as_other,
    ).json()
    assert theirs["id"] not in [r["id"] for r in stack.call("GET", "/v1/resources?limit=100").json()["items"]]
    assert get(stack, mine["id"])["status"] == "ready"  # untouched by the other account's delete


# --- runs that use resources ---


def test_an_http_runnable_downloads_a_referenced_and_an_inline_resource_by_their_urls(stack: Stack) -> None:
    referenced = create(stack, BLOB, "application/octet-stream", name="blob.bin", metadata={"from": "api"})
    inline_bytes = b'{"inline": true}'
    agent = HashingAgent()
    try:
        spec = {"name": "hashing-agent", "kind": "http", "config": {"url": agent.url}}
        runnable = stack.call("POST", "/v1/runnables", spec).json()["id"]
        body = {
            "inputs": {"q": 1},
            "resources": [
                {"name": "ref", "resource": {"id": referenced["id"]}, "metadata": {"role": "input"}},
                {
                    "name": "inline",
                    "resource": {
                        "name": "inline.json",
                        "directory_path": "made/with/run",
                        "content": data_uri(inline_bytes, "application/json"),
                        "tags": ["inline"],
                    },
                },
            ],
        }
        state = run_sync(stack, runnable, body)
    finally:
        agent.close()
    assert state["result"]["outputs"] == {
        "ref": {"status": 200, "sha256": sha256(BLOB), "size": len(BLOB)},
        "inline": {"status": 200, "sha256": sha256(inline_bytes), "size": len(inline_bytes)},
    }
    [envelope] = agent.envelopes
    sent = envelope["resources"]
    assert set(sent) == {"ref", "inline"}
    assert {k: v for k, v in sent["ref"].items() if k != "url"} == {
        "id": referenced["id"],
        "name": "blob.bin",
        "directory_path": "docs",
        "content_type": "application/octet-stream",
        "size": len(BLOB),
        "sha256": sha256(BLOB),
        "metadata": {"from": "api", "role": "input"},  # the run's metadata over the resource's
        "tags": [],
    }
    assert sent["inline"]["directory_path"] == "made/with/run"
    assert (sent["inline"]["name"], sent["inline"]["tags"]) == ("inline.json", ["inline"])
    made = get(stack, sent["inline"]["id"])  # the inline resource is a resource of the account
    assert (made["source"], made["sha256"]) == ("content", sha256(inline_bytes))
    assert download(made) == inline_bytes
    assert get(stack, referenced["id"])["metadata"] == {"from": "api"}  # the run's metadata is its own


def test_a_python_runnable_reads_bytes_text_and_a_local_path(stack: Stack) -> None:
    notes = create(
        stack, NOTES, "text/plain", name="notes.txt", directory_path="docs/2024", metadata={"a": 1}
    )
    blob = upload(stack, BLOB, name="sample.bin", directory_path="")
    describe = python_runnable(stack, "describe_files")
    inline = {
        "name": "data.json",
        "directory_path": "x/y",
        "content": data_uri(b"[1, 2]", "application/json"),
    }
    body = {
        "inputs": {"q": "files"},
        "resources": [
            {"name": "notes", "resource": {"id": notes["id"]}, "metadata": {"b": 2}},
            {"name": "blob", "resource": {"id": blob["id"]}},
            {"name": "inline", "resource": inline},
        ],
    }
    outputs = run_sync(stack, describe, body)["result"]["outputs"]
    assert outputs["inputs"] == {"q": "files"}
    assert outputs["notes"] == {
        "name": "notes.txt",
        "directory_path": "docs/2024",
        "size": len(NOTES),
        "sha256": sha256(NOTES),
        "content_type": "text/plain",
        "metadata": {"a": 1, "b": 2},
        "text": NOTES.decode(),
        "path": "docs/2024/notes.txt",
        "same": True,
    }
    assert outputs["blob"] == {
        "name": "sample.bin",
        "directory_path": "",
        "size": len(BLOB),
        "sha256": sha256(BLOB),
        "content_type": "application/octet-stream",
        "metadata": {},
        "text": None,
        "path": "sample.bin",
        "same": True,
    }
    assert (outputs["inline"]["text"], outputs["inline"]["path"]) == ("[1, 2]", "x/y/data.json")

    again = run_sync(stack, describe, body)["result"]["outputs"]  # the same resources, another run
    assert again["notes"]["sha256"] == sha256(NOTES)
    made = stack.call("GET", "/v1/resources?directory_path=x/y").json()["items"]
    assert len(made) == 2  # one inline resource per run


@pytest.mark.parametrize(
    ("name", "directory_path"),
    [("a" * 250, "long"), ("é" * 130, "long"), ("n.txt", "x" * 256), ("é" * 127, "é" * 127)],
    ids=["250-ascii", "260-bytes-utf8-name", "256-byte-segment", "254-byte-name-and-segment"],
)
def test_a_resource_of_any_name_the_api_accepts_has_a_local_path(
    stack: Stack, name: str, directory_path: str
) -> None:
    """A run finds a resource at <run dir>/<directory_path>/<name>: a name or directory segment a file
    system cannot hold (over 255 bytes) is refused when the resource is made, any other can be read."""
    body = {"name": name, "directory_path": directory_path, "content": data_uri(b"long", "text/plain")}
    reply = stack.call("POST", "/v1/resources", body)
    if max(len(segment.encode()) for segment in [name, *directory_path.split("/")]) > 255:
        refused(reply, 400, "validation_error")
        return
    assert reply.status_code == 201, reply.text
    run = {"resources": [{"name": "long", "resource": {"id": reply.json()["id"]}}]}
    state = run_sync(stack, python_runnable(stack, "describe_files"), run)
    assert state["result"]["outputs"]["long"]["path"] == f"{directory_path}/{name}"


def test_two_resources_of_one_local_path_are_refused(stack: Stack) -> None:
    """Both would be the run's twins/same.txt: the second's download would replace the first's."""
    first = create(stack, b"first", name="same.txt", directory_path="twins")
    second = create(stack, b"second", name="same.txt", directory_path="twins")
    body = {
        "resources": [
            {"name": "first", "resource": {"id": first["id"]}},
            {"name": "second", "resource": {"id": second["id"]}},
        ]
    }
    reply = stack.call("POST", f"/v1/runnable/{python_runnable(stack, 'describe_files')}/runs", body)
    assert reply.status_code == 400, reply.text
    assert "twins/same.txt" in reply.text, reply.text


def test_an_upload_shorter_than_its_declared_size_never_becomes_ready(stack: Stack) -> None:
    """S3 refuses it by the policy's content-length-range; moto does not, and Runplane's check does."""
    started = start_upload(stack, name="short.bin", size=10)
    sent = send_upload(started, b"x" * 9)
    got = get(stack, started["resource"]["id"])
    assert got["status"] == "pending" or sent.status_code >= 400
    assert "exactly 10" in got.get("problem", "exactly 10")


def test_the_uploads_route_allows_only_post(stack: Stack) -> None:
    for method in ("GET", "DELETE"):
        refused(stack.call(method, "/v1/resources/uploads"), 405, "method_not_allowed")
    allowed = stack.call("OPTIONS", "/v1/resources/uploads")
    assert allowed.status_code == 204, allowed.text
    assert {m.strip() for m in allowed.headers["Allow"].split(",")} == {"POST", "OPTIONS"}


# --- Cotool attachments ---


def cotool_attachment(resource: dict, **extra: Any) -> dict[str, Any]:
    return {
        "fileId": resource["id"],
        "fileName": resource["name"],
        "size": resource["size"],
        "fileType": "document",
        "previewText": "first line",
        **extra,
    }


def test_a_cotool_attachment_names_an_uploaded_resource_by_its_file_id(stack: Stack) -> None:
    resource = create(
        stack, NOTES, "text/plain", name="brief.txt", directory_path="cotool", metadata={"m": 1}
    )
    describe = python_runnable(stack, "describe_files")
    attachment = cotool_attachment(resource)
    reply = stack.call(
        "POST", f"/api/agents/{describe}/run-sync", {"inputs": {"q": "c"}, "attachments": [attachment]}
    )
    assert reply.status_code == 200, reply.text
    seen = reply.json()["structuredOutputResult"]
    assert seen["inputs"] == {"q": "c"}
    assert seen[resource["id"]] == {
        "name": "brief.txt",
        "directory_path": "cotool",
        "size": len(NOTES),
        "sha256": sha256(NOTES),
        "content_type": "text/plain",
        "metadata": {
            "m": 1,
            "fileName": "brief.txt",
            "size": len(NOTES),
            "fileType": "document",
            "previewText": "first line",
        },
        "text": NOTES.decode(),
        "path": "cotool/brief.txt",
        "same": True,
    }

    uploaded = upload(stack, BLOB, name="table.bin", directory_path="cotool")
    started = stack.call(
        "POST",
        f"/api/agents/{describe}/run-async",
        {"inputs": {}, "attachments": [cotool_attachment(uploaded, fileType="file"), attachment]},
    )
    assert started.status_code == 200, started.text
    run_id = started.json()["runId"]
    status = f"/api/agents/{describe}/run-async/{run_id}/status"
    wait_for(lambda: stack.call("GET", status).json()["status"] not in ("waiting", "running"))
    result = stack.call("GET", f"/api/agents/{describe}/run-async/{run_id}/result")
    assert result.status_code == 200, result.text
    seen = result.json()["structuredOutputResult"]
    assert seen[uploaded["id"]]["sha256"] == sha256(BLOB)
    assert seen[uploaded["id"]]["path"] == "cotool/table.bin"
    assert seen[resource["id"]]["text"] == NOTES.decode()


@pytest.mark.parametrize("file_id", ["0190a8a0-5f3c-7d2e-9b41-6c8e2f1a7b93", "file-123", "pending"])
def test_a_cotool_attachment_of_an_unknown_file_is_a_validation_error(stack: Stack, file_id: str) -> None:
    echo = stack.runnable("echo")
    if file_id == "pending":
        file_id = start_upload(stack, name="never.bin")["resource"]["id"]
    attachment = {"fileId": file_id, "fileName": "x.txt", "size": 1}
    for route in ("run-sync", "run-async"):
        reply = stack.call("POST", f"/api/agents/{echo}/{route}", {"inputs": {}, "attachments": [attachment]})
        assert reply.status_code == 400, reply.text
        body = reply.json()
        assert set(body) >= {"error", "issues"}  # Cotool's ValidationError (checked by stack.call too)
        assert [issue["field"] for issue in body["issues"]] == ["body.attachments.0.fileId"], body
