"""The SSRF policy for callback URLs and the bounded, redirect-free POST that enforces it."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from runplane.adapters.outbound import (
    ForbiddenDestination,
    UnresolvableHost,
    address_problem,
    check_destination,
    post,
)

FORBIDDEN_ADDRESSES = [
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",
    "fd00:ec2::254",
    "fe80::1",
    "100.64.0.1",
    "224.0.0.1",
    "ff02::1",
    "240.0.0.1",
    "0.0.0.0",  # noqa: S104 - an address under test, not a bind
    "::",
    "::ffff:10.0.0.1",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::",
    "2001::1",
    "192.0.2.1",
]


@pytest.mark.parametrize("address", FORBIDDEN_ADDRESSES)
def test_non_public_addresses_are_refused_even_when_loopback_is_allowed(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert address_problem(ip, allow_loopback=False) is not None
    assert address_problem(ip, allow_loopback=True) is not None


@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_loopback_is_refused_unless_allowed(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert address_problem(ip, allow_loopback=False) == "loopback"
    assert address_problem(ip, allow_loopback=True) is None


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.215.14", "2606:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_problem(ipaddress.ip_address(address), allow_loopback=False) is None


def test_allowing_loopback_does_not_allow_private_or_metadata_addresses() -> None:
    for address in ("10.0.0.1", "169.254.169.254"):
        assert address_problem(ipaddress.ip_address(address), allow_loopback=True) is not None


def test_credentials_in_the_url_are_refused() -> None:
    with pytest.raises(ForbiddenDestination, match="credentials"):
        check_destination("https://user:pw@example.com/", allow_loopback=False)


def test_plain_http_to_a_public_host_is_refused() -> None:
    with pytest.raises(ForbiddenDestination, match="https"):
        check_destination("http://example.com/hook", allow_loopback=False)


def test_other_schemes_are_refused() -> None:
    with pytest.raises(ForbiddenDestination, match="https"):
        check_destination("ftp://example.com/file", allow_loopback=False)


def test_a_host_that_does_not_resolve_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    def unresolvable(*args: Any, **kwargs: Any) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unresolvable)
    with pytest.raises(UnresolvableHost, match="does not resolve"):
        check_destination("https://nothing.invalid/hook", allow_loopback=False)


def test_a_host_resolving_to_one_private_address_is_refused(dns: dict[str, list[str]]) -> None:
    dns["mixed.test"] = ["93.184.215.14", "10.0.0.5"]
    with pytest.raises(ForbiddenDestination, match=r"10\.0\.0\.5"):
        check_destination("https://mixed.test/hook", allow_loopback=False)


@pytest.mark.parametrize("url", ["https://169.254.169.254/latest/meta-data", "https://[::1]/"])
def test_ip_literal_urls_to_non_public_addresses_are_refused(url: str) -> None:
    with pytest.raises(ForbiddenDestination):
        check_destination(url, allow_loopback=False)


def test_an_https_url_resolving_only_to_public_addresses_passes(dns: dict[str, list[str]]) -> None:
    dns["public.test"] = ["93.184.215.14", "2606:4700::1111"]
    check_destination("https://public.test/hook", allow_loopback=False)


def test_http_to_loopback_passes_only_when_loopback_is_allowed() -> None:
    check_destination("http://127.0.0.1:8080/", allow_loopback=True)
    with pytest.raises(ForbiddenDestination, match="loopback"):
        check_destination("http://127.0.0.1:8080/", allow_loopback=False)


Respond = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Receiver:
    url: str
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def serve() -> Iterator[Callable[[Respond], Receiver]]:
    """Start loopback HTTP servers that answer every request with `respond`; all stop after the test."""
    running: list[tuple[ThreadingHTTPServer, threading.Thread]] = []

    def start(respond: Respond) -> Receiver:
        receiver = Receiver("")

        class Handler(BaseHTTPRequestHandler):
            def record_and_respond(self) -> None:
                receiver.requests.append(f"{self.command} {self.path}")
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                respond(self)

            do_GET = do_POST = record_and_respond

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        running.append((server, thread))
        receiver.url = f"http://127.0.0.1:{server.server_port}/hook"
        return receiver

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join()


def answer(status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> Respond:
    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return respond


def send(url: str, *, allow_loopback: bool = True, total_timeout: float = 5.0) -> Any:
    return post(
        url,
        b'{"status": "succeeded"}',
        {"Content-Type": "application/json"},
        allow_loopback=allow_loopback,
        connect_timeout=1.0,
        total_timeout=total_timeout,
    )


def test_post_to_loopback_is_refused_without_a_request_when_loopback_is_not_allowed(
    serve: Callable[[Respond], Receiver],
) -> None:
    receiver = serve(answer(204))
    reply = send(receiver.url, allow_loopback=False)
    assert reply.status_code is None
    assert reply.error is not None
    assert reply.error.startswith("forbidden destination")
    assert receiver.requests == []


def test_post_returns_a_redirect_without_following_it(serve: Callable[[Respond], Receiver]) -> None:
    target = serve(answer(204))
    redirector = serve(answer(302, {"Location": target.url}))
    reply = send(redirector.url)
    assert reply.status_code == 302
    assert reply.error is None
    assert redirector.requests == ["POST /hook"]
    assert target.requests == []


def test_post_to_a_receiver_slower_than_the_total_timeout_times_out(
    serve: Callable[[Respond], Receiver],
) -> None:
    def slow(handler: BaseHTTPRequestHandler) -> None:
        time.sleep(1.5)
        answer(204)(handler)

    receiver = serve(slow)
    reply = send(receiver.url, total_timeout=0.3)
    assert reply.status_code is None
    assert reply.error is not None
    assert "timed out" in reply.error


def test_post_reports_a_receiver_asking_to_abort(serve: Callable[[Respond], Receiver]) -> None:
    reply = send(serve(answer(410, {"webhook-delivery": "abort"})).url)
    assert reply.status_code == 410
    assert reply.abort is True


def test_post_reports_retry_after(serve: Callable[[Respond], Receiver]) -> None:
    reply = send(serve(answer(503, {"Retry-After": "7"})).url)
    assert reply.status_code == 503
    assert reply.retry_after == "7"
    assert reply.abort is False


def test_post_reads_a_large_response_body_quickly_without_error(serve: Callable[[Respond], Receiver]) -> None:
    receiver = serve(answer(200, body=b"x" * (1024 * 1024)))
    started = time.monotonic()
    reply = send(receiver.url)
    assert reply.status_code == 200
    assert reply.error is None
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_a_receiver_dripping_its_response_is_cut_off_at_the_total_timeout(
    serve: Callable[[Respond], Receiver], phase: str
) -> None:
    def drip(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
        if phase == "body":
            handler.wfile.write(b"Content-Length: 100\r\n\r\n")
        for _ in range(20):  # one byte every 0.2 s: no single read ever waits long
            handler.wfile.write(b"X-Drip: 1\r\n" if phase == "headers" else b"x")
            handler.wfile.flush()
            time.sleep(0.2)

    receiver = serve(drip)
    started = time.monotonic()
    reply = send(receiver.url, total_timeout=1.0)
    assert time.monotonic() - started < 1.8
    assert reply.status_code is None
    assert reply.error == "timed out after 1 s"


def test_the_pinned_address_is_checked_with_runplanes_policy(
    serve: Callable[[Respond], Receiver], monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver = serve(answer(204))
    port = int(receiver.url.split(":")[2].split("/")[0])
    answers = iter([[("127.0.0.1", port)], [("::a9fe:a9fe", port, 0, 0)]])  # checked, then pinned

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        return [
            (socket.AF_INET6 if len(a) == 4 else socket.AF_INET, socket.SOCK_STREAM, 6, "", a)
            for a in next(answers)
        ]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    reply = send(f"http://rebind.test:{port}/hook")
    assert reply.status_code is None
    assert reply.error == "forbidden destination: resolved to ::a9fe:a9fe"
    assert receiver.requests == []


def test_a_header_value_http_refuses_is_a_failed_attempt_not_a_crash(
    serve: Callable[[Respond], Receiver],
) -> None:
    reply = post(
        serve(answer(204)).url,
        b"{}",
        {"X-Price": "10 €"},
        allow_loopback=True,
        connect_timeout=1.0,
        total_timeout=2.0,
    )
    assert reply.status_code is None
    assert reply.error is not None
    assert reply.error.startswith("invalid request")


def test_an_ndjson_answer_is_read_a_line_at_a_time_until_the_reader_stops(
    serve: Callable[[Respond], Receiver],
) -> None:
    ndjson = {"Content-Type": "application/x-ndjson"}
    lines: list[bytes] = []
    body = b'{"a": 1}\n\n{"b": 2}\r\n{"stop": true}\n{"never": 1}\n'
    for status, read in ((200, True), (500, False)):
        lines.clear()
        reply = post(
            serve(answer(status, ndjson, body)).url,
            b"{}",
            {},
            allow_loopback=True,
            connect_timeout=1.0,
            total_timeout=2.0,
            on_line=lambda line: lines.append(line) or b"stop" in line,
        )
        assert (reply.status_code, reply.streamed) == (status, read)
        assert lines == ([b'{"a": 1}', b"", b'{"b": 2}\r', b'{"stop": true}'] if read else [])
        assert reply.body == (b"" if read else body)
