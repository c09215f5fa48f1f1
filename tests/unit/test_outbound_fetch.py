"""`fetch`: the SSRF-safe GET of a resource's file, bounded in time and size, against loopback servers."""

from __future__ import annotations

import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from runplane.adapters.outbound import Fetched, fetch

from tests.unit import test_outbound
from tests.unit.test_outbound import Receiver, Respond, answer

serve = (
    test_outbound.serve
)  # the fixture: loopback servers answering with a `Respond`, stopped after the test
Serve = Callable[[Respond], Receiver]


def get(
    url: str, *, allow_loopback: bool = True, total_timeout: float = 5.0, max_bytes: int = 1024
) -> Fetched:
    return fetch(
        url,
        allow_loopback=allow_loopback,
        connect_timeout=1.0,
        total_timeout=total_timeout,
        max_bytes=max_bytes,
    )


def test_a_2xx_answer_is_its_body_and_media_type(serve: Serve) -> None:
    seen: dict[str, Any] = {}

    def respond(handler: BaseHTTPRequestHandler) -> None:
        seen.update(handler.headers)
        answer(200, {"Content-Type": "text/plain"}, b"hello, file")(handler)

    receiver = serve(respond)
    assert get(receiver.url) == Fetched(200, "text/plain", b"hello, file")
    assert receiver.requests == ["GET /hook"]
    assert seen["User-Agent"] == "Runplane/1.0"
    assert seen["Accept-Encoding"] == "identity"


def test_the_content_type_is_given_as_sent_with_its_parameters(serve: Serve) -> None:
    fetched = get(serve(answer(200, {"Content-Type": "Text/CSV ; charset=UTF-8"}, b"a,b\n")).url)
    assert (fetched.content_type, fetched.body, fetched.error) == ("Text/CSV ; charset=UTF-8", b"a,b\n", None)


def test_an_answer_without_a_content_type_has_none(serve: Serve) -> None:
    assert get(serve(answer(200, body=b"\x00\x01")).url) == Fetched(200, None, b"\x00\x01")


def test_an_empty_2xx_body_is_an_empty_file(serve: Serve) -> None:
    assert get(serve(answer(204)).url) == Fetched(204, None, b"")


@pytest.mark.parametrize("status", [404, 500])
def test_a_non_2xx_answer_is_an_error_without_a_body(serve: Serve, status: int) -> None:
    fetched = get(serve(answer(status, {"Content-Type": "text/html"}, b"<h1>no</h1>")).url)
    assert fetched == Fetched(status, "text/html", error=f"answered HTTP {status}")


def test_a_redirect_is_an_error_naming_its_location_and_is_not_followed(serve: Serve) -> None:
    target = serve(answer(200, body=b"secret"))
    redirector = serve(answer(301, {"Location": target.url}))
    fetched = get(redirector.url)
    assert fetched.status_code == 301
    assert fetched.error == f"redirects are not followed (answered 301 to {target.url})"
    assert fetched.body == b""
    assert redirector.requests == ["GET /hook"]
    assert target.requests == []


def test_a_body_at_the_limit_is_read_whole(serve: Serve) -> None:
    assert get(serve(answer(200, body=b"x" * 100)).url, max_bytes=100).body == b"x" * 100


def test_a_declared_length_over_the_limit_is_refused_without_reading(serve: Serve) -> None:
    def promise_a_lot(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n0123456789")
        handler.wfile.flush()
        time.sleep(3)  # the rest never comes: only refusing up front ends the GET soon

    started = time.monotonic()
    fetched = get(serve(promise_a_lot).url, max_bytes=100)
    assert time.monotonic() - started < 1
    assert fetched == Fetched(200, None, error="larger than 100 bytes", too_large=True)


def test_a_body_over_the_limit_that_matches_its_content_length_is_too_large(serve: Serve) -> None:
    fetched = get(serve(answer(200, {"Content-Type": "text/plain"}, b"x" * 101)).url, max_bytes=100)
    assert fetched == Fetched(200, "text/plain", error="larger than 100 bytes", too_large=True)


@pytest.mark.parametrize("framing", ["close-delimited", "chunked"])
def test_an_undeclared_body_over_the_limit_stops_the_read_at_once(serve: Serve, framing: str) -> None:
    def overflow(handler: BaseHTTPRequestHandler) -> None:
        if framing == "chunked":
            handler.wfile.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n65\r\n" + b"x" * 101 + b"\r\n"
            )
        else:
            handler.wfile.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * 101)
        handler.wfile.flush()
        time.sleep(3)  # the body goes on (slowly): the GET must not wait for it

    started = time.monotonic()
    fetched = get(serve(overflow).url, max_bytes=100)
    assert time.monotonic() - started < 1
    assert fetched == Fetched(200, None, error="larger than 100 bytes", too_large=True)


@pytest.mark.parametrize("phase", ["headers", "body"])
def test_a_server_sending_slowly_is_cut_off_at_the_total_timeout(serve: Serve, phase: str) -> None:
    def drip(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
        if phase == "body":
            handler.wfile.write(b"Content-Length: 100\r\n\r\n")
        for _ in range(20):  # one byte every 0.2 s: no single read ever waits long
            handler.wfile.write(b"X-Drip: 1\r\n" if phase == "headers" else b"x")
            handler.wfile.flush()
            time.sleep(0.2)

    started = time.monotonic()
    fetched = get(serve(drip).url, total_timeout=1.0)
    assert time.monotonic() - started < 2.0
    assert fetched == Fetched(None, None, error="timed out after 1 s")


def test_loopback_is_refused_without_a_request_unless_allowed(serve: Serve) -> None:
    receiver = serve(answer(200, body=b"local"))
    fetched = get(receiver.url, allow_loopback=False)
    assert fetched.status_code is None
    assert fetched.error == "forbidden destination: 127.0.0.1 resolves to 127.0.0.1, a loopback address"
    assert receiver.requests == []


def test_http_to_a_host_other_than_loopback_is_refused(dns: dict[str, list[str]]) -> None:
    fetched = get("http://example.com/file.csv")  # resolves to a public address (see the dns fixture)
    assert fetched.status_code is None
    assert fetched.error is not None
    assert fetched.error.startswith("forbidden destination: must be an https URL")


def test_credentials_in_the_url_are_refused_without_a_request(serve: Serve) -> None:
    receiver = serve(answer(200, body=b"private"))
    fetched = get(receiver.url.replace("http://", "http://user:pw@"))
    assert fetched == Fetched(
        None, None, error="forbidden destination: credentials in the URL are not allowed"
    )
    assert receiver.requests == []


def test_a_host_that_does_not_resolve_is_refused() -> None:
    fetched = get("https://nonexistent.invalid/file")
    assert fetched == Fetched(None, None, error="forbidden destination: nonexistent.invalid does not resolve")


def test_other_schemes_are_refused(serve: Serve) -> None:
    receiver = serve(answer(200))
    fetched = get(receiver.url.replace("http://", "ftp://"))
    assert fetched == Fetched(None, None, error="forbidden destination: must be an https URL")
    assert receiver.requests == []


@pytest.mark.parametrize(
    "url",
    ["", "not a url", "http://[::1", "https://example.com:99999/", "https:///path", "http://exa mple.com/"],
)
def test_malformed_urls_are_errors_not_exceptions(url: str) -> None:
    fetched = get(url)
    assert fetched.status_code is None
    assert fetched.error is not None


def test_a_server_closing_without_an_answer_is_a_failed_connection(serve: Serve) -> None:
    fetched = get(serve(lambda handler: handler.wfile.write(b"")).url)
    assert fetched.status_code is None
    assert fetched.error is not None
    assert fetched.error.startswith("connection failed")
