"""The local gateway over real sockets: HTTP framing (chunked bodies, HEAD, bad lengths, long URLs, resets)
and the proxy events it makes for either API type, against an in-process Gateway on a free port."""

from __future__ import annotations

import base64
import json
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import Message
from http.client import parse_headers
from typing import Any

import pytest
from runplane.api import formats
from runplane.api.app import create_app
from runplane.local import gateway as gateway_module
from runplane.local.gateway import API_GATEWAY_MAX_BODY, Gateway
from runplane.logic import services
from runplane.logic.keys import CreatedKey

ECHO = {"name": "echo", "kind": "python", "config": {"function": "echo"}}


@pytest.fixture
def gateway(env: dict[str, str]) -> Iterator[Gateway]:
    gateway = Gateway("127.0.0.1", 0, create_app)
    thread = threading.Thread(target=gateway.serve_forever, daemon=True)
    thread.start()
    yield gateway
    gateway.stop()
    thread.join(5)


@pytest.fixture(params=["http", "rest"])
def api_type(request: pytest.FixtureRequest, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """The deployment's API type (RUNPLANE_API_TYPE), whose events the gateway makes."""
    monkeypatch.setenv("RUNPLANE_API_TYPE", request.param)
    services.reset()
    return request.param


@dataclass
class Answer:
    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Connection:
    """One client connection, its answers read off one buffer so that stray bytes show."""

    def __init__(self, gateway: Gateway, timeout: float = 5):
        self.sock = socket.create_connection(gateway.server.server_address[:2], timeout=timeout)
        self.file = self.sock.makefile("rb")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str, path: str, token: str, body: bytes = b"", **headers: str) -> None:
        named = {name.replace("_", "-"): value for name, value in headers.items()}
        fields = {"Host": "localhost", "Authorization": f"Bearer {token}", **named}
        if body:
            fields["Content-Length"] = str(len(body))
        lines = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
        self.send(f"{method} {path} HTTP/1.1\r\n{lines}\r\n".encode() + body)

    def answer(self, *, head: bool = False) -> Answer:
        line = self.file.readline()
        version, status, _ = line.decode("latin-1").split(" ", 2)
        assert version == "HTTP/1.1", line
        headers = parse_headers(self.file)
        body = b"" if head else self.file.read(int(headers["Content-Length"]))
        return Answer(int(status), headers, body)

    def closed(self) -> bool:
        """The server ended the connection (rather than waiting for more)."""
        return self.file.read() == b""

    def reset(self) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def connect(gateway: Gateway) -> Iterator[Any]:
    opened: list[Connection] = []

    def connect(timeout: float = 5) -> Connection:
        opened.append(Connection(gateway, timeout))
        return opened[-1]

    yield connect
    for connection in opened:
        connection.close()


def chunked(data: bytes, size: int) -> bytes:
    parts = [data[i : i + size] for i in range(0, len(data), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def assert_error(answer: Answer, status: int, code: str) -> dict[str, Any]:
    assert answer.status == status, answer
    assert answer.headers["Content-Type"] == "application/json"
    error = answer.json()
    assert error["code"] == code
    assert error["error"]
    return error


def test_a_chunked_body_is_the_request_body_and_the_connection_stays_open(
    connect: Any, account: CreatedKey
) -> None:
    connection = connect()
    body = chunked(json.dumps(ECHO).encode(), 7)
    connection.request(
        "POST", "/v1/runnables", account.token, Content_Type="application/json", Transfer_Encoding="chunked"
    )
    connection.send(body)
    created = connection.answer()
    assert created.status == 201, created
    runnable_id = created.json()["id"]
    connection.request("GET", f"/v1/runnable/{runnable_id}", account.token)
    fetched = connection.answer()
    assert fetched.status == 200
    assert fetched.json()["name"] == "echo"


@pytest.mark.parametrize("length", ["abc", "-1", "+5", "1_0", ""])
def test_a_content_length_that_is_not_a_number_is_a_400_and_ends_the_connection(
    connect: Any, account: CreatedKey, length: str
) -> None:
    connection = connect(timeout=1)
    connection.send(f"POST /v1/runnables HTTP/1.1\r\nContent-Length: {length}\r\n\r\n{{}}".encode())
    assert_error(connection.answer(), 400, "bad_request")
    assert connection.closed()


def test_two_different_content_lengths_are_a_400(connect: Any) -> None:
    connection = connect(timeout=1)
    connection.send(b"POST /v1/runnables HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}")
    assert_error(connection.answer(), 400, "bad_request")


def test_a_transfer_encoding_other_than_chunked_is_a_400(connect: Any) -> None:
    connection = connect(timeout=1)
    connection.send(b"POST /v1/runnables HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n")
    assert_error(connection.answer(), 400, "bad_request")


def test_a_malformed_chunk_is_a_400(connect: Any, account: CreatedKey) -> None:
    connection = connect(timeout=1)
    connection.request("POST", "/v1/runnables", account.token, Transfer_Encoding="chunked")
    connection.send(b"zz\r\n{}\r\n0\r\n\r\n")
    assert_error(connection.answer(), 400, "bad_request")


def test_head_answers_headers_without_a_body_and_the_connection_stays_in_step(
    connect: Any, account: CreatedKey
) -> None:
    connection = connect()
    connection.request("HEAD", "/v1/runs", account.token)
    head = connection.answer(head=True)
    assert head.status == 200
    assert head.headers["Content-Type"] == "application/json"
    connection.request("GET", "/v1/runs", account.token)
    listed = connection.answer()
    assert listed.status == 200
    assert listed.json()["items"] == []


def test_a_head_answer_has_no_body_even_when_the_api_gives_one(
    gateway: Gateway, connect: Any, monkeypatch: pytest.MonkeyPatch, api_type: str
) -> None:
    def answer(app: Any, event: dict[str, Any], context: Any) -> dict[str, Any]:
        body = f"body of {formats.read(event).http_method}"
        return {"statusCode": 200, "headers": {"Content-Type": "text/plain"}, "body": body}

    monkeypatch.setattr(gateway_module, "serve", answer)
    connection = connect()
    connection.request("HEAD", "/v1/runs", "rp_any")
    assert connection.answer(head=True).headers["Content-Length"] == str(len("body of HEAD"))
    connection.request("GET", "/v1/runs", "rp_any")
    assert connection.answer().body == b"body of GET"


@pytest.mark.parametrize("method", ["TRACE", "PROPFIND", "BREW"])
def test_a_method_the_http_layer_does_not_know_reaches_the_api(
    connect: Any, account: CreatedKey, method: str
) -> None:
    connection = connect()
    connection.request(method, "/v1/runs", account.token)
    answer = connection.answer()
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json()["code"] not in ("method_not_implemented", "bad_request")


def test_a_url_over_64_kib_is_a_json_error(connect: Any) -> None:
    connection = connect()
    connection.send(f"GET /v1/runs?q={'x' * 70 * 1024} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    assert_error(connection.answer(), 414, "uri_too_long")


@pytest.mark.parametrize(
    ("request_line", "status", "code"),
    [
        (b"GARBAGE\r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/x.y\r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/2.0\r\n\r\n", 505, "http_version_not_supported"),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"x" * 70 * 1024 + b"\r\n\r\n", 431, "headers_too_large"),
        (b"GET http://[oops/v1/runs HTTP/1.1\r\n\r\n", 400, "bad_request"),
    ],
)
def test_what_the_http_layer_refuses_itself_is_json(
    connect: Any, request_line: bytes, status: int, code: str
) -> None:
    connection = connect(timeout=1)
    connection.send(request_line)
    assert_error(connection.answer(), status, code)
    assert connection.closed()


def test_a_framing_error_on_a_roe_path_is_in_roe_shape(connect: Any) -> None:
    connection = connect(timeout=1)
    connection.send(f"GET /v1/agents/jobs/{'x' * 70 * 1024}/status/ HTTP/1.1\r\n\r\n".encode())
    error = assert_error(connection.answer(), 414, "uri_too_long")
    assert error["status_code"] == 414
    assert error["message"]


@pytest.mark.parametrize(
    "half",
    [
        b"POST /v1/runnables HTTP/1.1\r\nContent-Le",
        b"POST /v1/runnables HTTP/1.1\r\nContent-Length: 100\r\n\r\n{",
        b"POST /v1/runnables HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n{",
    ],
)
def test_a_client_that_resets_mid_request_leaves_nothing_on_stderr(
    connect: Any, account: CreatedKey, capfd: pytest.CaptureFixture[str], half: bytes
) -> None:
    connection = connect()
    connection.send(half)
    time.sleep(0.2)  # the server is reading the request
    connection.reset()
    time.sleep(0.3)  # and has seen the reset
    after = connect()
    after.request("GET", "/v1/runs", account.token)
    assert after.answer().status == 200
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("expect", [{}, {"Expect": "100-continue"}])
def test_a_body_over_10_mib_by_content_length_is_a_413_before_it_is_sent(
    connect: Any, account: CreatedKey, expect: dict[str, str]
) -> None:
    connection = connect(timeout=1)
    length = str(API_GATEWAY_MAX_BODY + 1)
    lines = "".join(f"{k}: {v}\r\n" for k, v in {"Content-Length": length, **expect}.items())
    connection.send(
        f"POST /v1/runnables HTTP/1.1\r\nAuthorization: Bearer {account.token}\r\n{lines}\r\n".encode()
    )
    assert_error(connection.answer(), 413, "request_too_large")
    assert connection.closed()


def test_a_chunked_body_over_10_mib_is_a_413(connect: Any, account: CreatedKey) -> None:
    connection = connect()
    connection.request("POST", "/v1/runnables", account.token, Transfer_Encoding="chunked")
    connection.send(chunked(b"x" * (API_GATEWAY_MAX_BODY + 1), 1024 * 1024))
    assert_error(connection.answer(), 413, "request_too_large")


def test_forty_concurrent_clients_each_get_their_own_answer(gateway: Gateway, account: CreatedKey) -> None:
    ids = [str(uuid.uuid4()) for _ in range(40)]
    start = threading.Barrier(len(ids))

    def ask(runnable_id: str) -> dict[str, Any]:
        start.wait()
        connection = Connection(gateway, timeout=10)
        try:
            connection.request("GET", f"/v1/runnable/{runnable_id}", account.token)
            return connection.answer().json()
        finally:
            connection.close()

    with ThreadPoolExecutor(len(ids)) as pool:
        answers = list(pool.map(ask, ids))
    assert [a["error"] for a in answers] == [f"Runnable {i} not found" for i in ids]


def test_the_event_carries_the_request_as_the_client_sent_it(
    gateway: Gateway, connect: Any, monkeypatch: pytest.MonkeyPatch, api_type: str
) -> None:
    events: list[dict[str, Any]] = []

    def record(app: Any, event: dict[str, Any], context: Any) -> dict[str, Any]:
        events.append(event)
        return {"statusCode": 200, "headers": {}, "body": "", "isBase64Encoded": False}

    monkeypatch.setattr(gateway_module, "serve", record)
    connection = connect()
    connection.send(
        b"PUT /v1/a%2Fb%20c?k=1&k=2&blank=&e=%C3%A9 HTTP/1.1\r\n"
        b"X-Twice: one\r\nx-lower-case: yes\r\nX-Twice: two\r\nUser-Agent: probe\r\nCookie: a=1; b=2\r\n"
        b"Content-Length: 3\r\n\r\n\xff\x00\xfe"
    )
    assert connection.answer().status == 200
    [event] = events
    request = formats.read(event)
    assert (request.http_method, request.path) == ("PUT", "/v1/a%2Fb%20c")
    assert request.headers["x-lower-case"] == "yes"
    assert (event["body"], event["isBase64Encoded"]) == ("/wD+", True)
    if api_type == "http":  # payload 2.0: names lower-cased, repeated values joined, cookies apart
        assert event["rawPath"] == event["requestContext"]["http"]["path"] == "/v1/a%2Fb%20c"
        assert event["rawQueryString"] == "k=1&k=2&blank=&e=%C3%A9"
        assert event["headers"]["x-twice"] == "one,two"
        assert event["queryStringParameters"] == {"k": "1,2", "blank": "", "e": "é"}
        assert (event["cookies"], "cookie" in event["headers"]) == (["a=1", "b=2"], False)
        assert event["requestContext"]["http"] == {
            "method": "PUT",
            "path": "/v1/a%2Fb%20c",
            "sourceIp": "127.0.0.1",
            "userAgent": "probe",
        }
        assert event["requestContext"]["stage"] == "$default"
    else:  # payload 1.0: as sent, the last of repeated values beside all of them
        assert event["path"] == event["requestContext"]["path"] == "/v1/a%2Fb%20c"
        assert event["multiValueHeaders"]["X-Twice"] == ["one", "two"]
        assert event["headers"]["X-Twice"] == "two"
        assert event["headers"]["Cookie"] == "a=1; b=2"
        assert event["multiValueQueryStringParameters"] == {"k": ["1", "2"], "blank": [""], "e": ["é"]}
        assert event["queryStringParameters"] == {"k": "2", "blank": "", "e": "é"}
        assert event["requestContext"]["identity"] == {"sourceIp": "127.0.0.1", "userAgent": "probe"}


@pytest.mark.parametrize(
    ("content_type", "encoded"),
    [
        ("application/json", {"http": False, "rest": False}),
        ("text/plain; charset=utf-8", {"http": False, "rest": False}),
        ("application/x-www-form-urlencoded", {"http": True, "rest": False}),
        ("multipart/form-data; boundary=x", {"http": True, "rest": True}),
        ("application/octet-stream", {"http": True, "rest": False}),
        (None, {"http": True, "rest": False}),
    ],
)
def test_a_body_is_base64_encoded_as_the_deployed_api_type_does(
    gateway: Gateway,
    connect: Any,
    monkeypatch: pytest.MonkeyPatch,
    api_type: str,
    content_type: str | None,
    encoded: dict[str, bool],
) -> None:
    """An HTTP API passes text media types as text and base64-encodes any other body; a REST API only
    those of its binary media types (multipart/form-data). Either way the bytes arrive unchanged."""
    events: list[dict[str, Any]] = []

    def record(app: Any, event: dict[str, Any], context: Any) -> dict[str, Any]:
        events.append(event)
        return {"statusCode": 204, "headers": {}, "body": "", "isBase64Encoded": False}

    monkeypatch.setattr(gateway_module, "serve", record)
    connection = connect()
    sent = "a=é&b=2".encode()
    connection.request(
        "POST", "/v1/x", "rp_any", sent, **({"Content_Type": content_type} if content_type else {})
    )
    assert connection.answer().status == 204
    [event] = events
    assert event["isBase64Encoded"] is encoded[api_type]
    assert (base64.b64decode(event["body"]) if encoded[api_type] else event["body"].encode()) == sent


def test_a_payload_2_answers_cookies_become_set_cookie_headers(
    gateway: Gateway, connect: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def answer(app: Any, event: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"statusCode": 200, "headers": {"X-One": "1"}, "cookies": ["a=1", "b=2; Secure"], "body": ""}

    monkeypatch.setattr(gateway_module, "serve", answer)
    connection = connect()
    connection.request("GET", "/v1/runs", "rp_any")
    reply = connection.answer()
    assert (reply.headers["X-One"], reply.headers.get_all("Set-Cookie")) == ("1", ["a=1", "b=2; Secure"])


def test_a_taken_port_fails_at_construction(gateway: Gateway) -> None:
    with pytest.raises(OSError, match="in use"):
        Gateway("127.0.0.1", gateway.server.server_address[1], create_app)


def test_stop_is_prompt_with_a_keep_alive_connection_open(env: dict[str, str], account: CreatedKey) -> None:
    gateway = Gateway("127.0.0.1", 0, create_app)
    thread = threading.Thread(target=gateway.serve_forever, daemon=True)
    thread.start()
    connection = Connection(gateway)
    connection.request("GET", "/v1/runs", account.token)
    assert connection.answer().status == 200
    began = time.monotonic()
    gateway.stop()
    thread.join(5)
    assert time.monotonic() - began < 1
    assert not thread.is_alive()
    connection.close()
