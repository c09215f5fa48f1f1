"""A local API Gateway on werkzeug's threaded HTTP server: each request becomes the event the deployed API
sends the api handler (setting `api_type`: an HTTP API's payload 2.0, or a REST API's proxy event), and
whatever the HTTP layer refuses itself is answered in the dialect's JSON error shape. While the stack stops,
the requests in flight are answered and new ones refused (`InFlight`)."""

from __future__ import annotations

import base64
import queue
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from werkzeug.serving import DechunkedInput, ThreadedWSGIServer, WSGIRequestHandler, select_address_family

from runplane.api.app import serve
from runplane.api.errors import framing_error
from runplane.api.forms import media_type
from runplane.api.gate import API_GATEWAY_MAX_BODY
from runplane.local import resolver_threads
from runplane.local.lambda_context import LocalLambdaContext
from runplane.settings import get_settings

# the deployed REST API's binaryMediaTypes (infra/api.py): their bodies reach Lambda base64-encoded
BINARY_MEDIA_TYPES = frozenset({"multipart/form-data"})
# the bodies an HTTP API passes as text (with text/*); any other, or one without a Content-Type, it
# base64-encodes (a urlencoded form included)
TEXT_MEDIA_TYPES = frozenset({"application/json", "application/xml", "application/javascript"})
BACKLOG = 128  # the default listen backlog of 5 resets connections under concurrent clients
# the codes of the refusals the stdlib request handler makes itself (`send_error`)
FRAMING_CODES = {
    400: "bad_request",
    414: "uri_too_long",
    431: "headers_too_large",
    501: "method_not_implemented",
    505: "http_version_not_supported",
}


def proxy_event(
    method: str,
    target: str,
    headers: dict[str, list[str]],
    body: bytes,
    source_ip: str,
    api_type: str | None = None,
) -> dict:
    """The event API Gateway sends the api function for this request: of `api_type` (`http` or `rest`),
    by default the deployment's. `headers` are as the client sent them, each name with its values."""
    make = _http_event if (api_type or get_settings().api_type) == "http" else _rest_event
    return make(method, target, headers, body, source_ip)


def _http_event(method: str, target: str, headers: dict[str, list[str]], body: bytes, source_ip: str) -> dict:
    """An HTTP API's event (payload format 2.0) from its `$default` stage: header names lower-cased and a
    repeated header's values joined with commas, as are a repeated query parameter's, cookies on their own.
    A body is base64-encoded unless its media type is text (and it is UTF-8)."""
    parts = urlsplit(target)
    joined: dict[str, list[str]] = {}
    for name, values in headers.items():
        joined.setdefault(name.lower(), []).extend(values)
    cookies = [c.strip() for value in joined.pop("cookie", []) for c in value.split(";") if c.strip()]
    kind = media_type(joined["content-type"][-1]) if "content-type" in joined else ""
    text, encoded = _event_body(body, binary=not (kind.startswith("text/") or kind in TEXT_MEDIA_TYPES))
    query = parse_qs(parts.query, keep_blank_values=True)
    flat = {name: ",".join(values) for name, values in joined.items()}
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": parts.path,
        "rawQueryString": parts.query,
        **({"cookies": cookies} if cookies else {}),
        "headers": flat,
        **({"queryStringParameters": {k: ",".join(v) for k, v in query.items()}} if query else {}),
        "requestContext": {
            "http": {
                "method": method,
                "path": parts.path,
                "sourceIp": source_ip,
                "userAgent": flat.get("user-agent", ""),
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",  # no stage in the path
            "timeEpoch": int(time.time() * 1000),
        },
        **({"body": text} if text is not None else {}),
        "isBase64Encoded": encoded,
    }


def _rest_event(method: str, target: str, headers: dict[str, list[str]], body: bytes, source_ip: str) -> dict:
    """A REST API's proxy integration event (payload format 1.0). A body of a binary media type is
    base64-encoded, as is one that is not UTF-8."""
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    content_type = next((v[-1] for k, v in headers.items() if k.lower() == "content-type"), None)
    binary = content_type is not None and media_type(content_type) in BINARY_MEDIA_TYPES
    text, encoded = _event_body(body, binary=binary)
    return {
        "resource": "/{proxy+}",
        "path": parts.path,
        "httpMethod": method,
        "headers": {k: v[-1] for k, v in headers.items()},
        "multiValueHeaders": headers,
        "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
        "multiValueQueryStringParameters": query or None,
        "pathParameters": {"proxy": parts.path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": parts.path,  # as the caller sent it: local URLs have no stage
            "stage": "local",
            "requestId": str(uuid.uuid4()),
            "requestTimeEpoch": int(time.time() * 1000),
            "identity": {"sourceIp": source_ip, "userAgent": headers.get("User-Agent", [""])[-1]},
        },
        "body": text,
        "isBase64Encoded": encoded,
    }


def _event_body(body: bytes, *, binary: bool) -> tuple[str | None, bool]:
    """(the event's body, whether it is base64): None for no body; base64 for a binary one, or one that is
    not UTF-8."""
    if not body:
        return None, False
    if not binary:
        try:
            return body.decode(), False
        except UnicodeDecodeError:
            pass
    return base64.b64encode(body).decode(), True


class _Refused(Exception):
    """A request the HTTP layer answers itself; args are (status, message, code)."""


class InFlight:
    """The requests being answered. Once closed, new ones are refused (503) and `wait` waits for the rest."""

    def __init__(self) -> None:
        self._count, self._closed = 0, False
        self._changed = threading.Condition()

    @contextmanager
    def request(self) -> Iterator[None]:
        """One request, from its event to the last byte of its answer."""
        with self._changed:
            if self._closed:
                raise _Refused(503, "The local stack is stopping", "stack_stopping")
            self._count += 1
        try:
            yield
        finally:
            with self._changed:
                self._count -= 1
                self._changed.notify_all()

    def close(self) -> int:
        """Refuse new requests from now on; returns how many are in flight."""
        with self._changed:
            self._closed = True
            return self._count

    def wait(self, seconds: float, hurry: threading.Event) -> int:
        """Until none is in flight, `seconds` pass or `hurry` is set; returns how many are left."""
        deadline = time.monotonic() + seconds
        with self._changed:
            while self._count and not hurry.is_set() and (left := deadline - time.monotonic()) > 0:
                self._changed.wait(min(left, 0.1))  # a signal handler sets `hurry` without notifying
            return self._count


class _Server(ThreadedWSGIServer):
    in_flight: InFlight


class _Handler(WSGIRequestHandler):
    """werkzeug's request handler (any method, chunked bodies, silent dropped connections) answering with
    `server.app`, the gateway's `invoke`, in place of werkzeug's WSGI runner, which closes every connection
    after its answer. The headers reach the event as the client sent them (WSGI's environ upper-cases and
    comma-joins them)."""

    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "runplane-local"
    disable_nagle_algorithm = True  # headers and body are two writes: the body would wait ~40 ms for an ACK

    def handle_expect_100(self) -> bool:
        """A body the gateway refuses is refused before the client sends it."""
        try:
            self._body_length()
        except _Refused as refused:
            self._refuse(*refused.args)
            return False
        return super().handle_expect_100()

    def run_wsgi(self) -> None:
        try:
            body = self._body()
        except _Refused as refused:
            self._refuse(*refused.args)
            return
        if body is None:  # the client left before sending all of it
            self.close_connection = True
            return
        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            headers.setdefault(name, []).append(value)
        try:
            with self.server.in_flight.request():
                self._answer(proxy_event(self.command, self.path, headers, body, self.client_address[0]))
        except _Refused as refused:  # the stack is stopping
            self._refuse(*refused.args)

    def _answer(self, event: dict) -> None:
        response = self.server.app(event)
        payload = response.get("body") or ""
        data = base64.b64decode(payload) if response.get("isBase64Encoded") else payload.encode()
        out: dict[str, Any] = dict(response.get("headers") or {})
        out.update(response.get("multiValueHeaders") or {})  # payload 1.0
        if response.get("cookies"):  # payload 2.0
            out["Set-Cookie"] = response["cookies"]
        self._reply(response["statusCode"], out, data)

    def _body_length(self) -> int | None:
        """The body's Content-Length, None for a chunked body; _Refused for what API Gateway would refuse
        or a body whose end cannot be known."""
        try:
            urlsplit(self.path)
        except ValueError:
            raise _Refused(400, "Malformed request target", "bad_request") from None
        coding = self.headers.get("Transfer-Encoding")
        if coding is not None:
            if coding.strip().lower() != "chunked":
                raise _Refused(400, f"Unsupported Transfer-Encoding: {coding}", "bad_request")
            if self.headers.get("Content-Length") is not None:  # RFC 9112 6.3: a smuggling attempt
                raise _Refused(400, "Both Transfer-Encoding and Content-Length", "bad_request")
            return None
        lengths = set(self.headers.get_all("Content-Length") or ["0"])
        if len(lengths) > 1 or not all(v.isascii() and v.isdigit() for v in lengths):
            raise _Refused(400, "Invalid Content-Length", "bad_request")
        length = int(lengths.pop())
        if length > API_GATEWAY_MAX_BODY:
            raise _Refused(413, "Request body is larger than 10 MiB", "request_too_large")
        return length

    def _body(self) -> bytes | None:
        """The whole body, None if the connection ended first."""
        length = self._body_length()
        if length is None:
            return self._chunked_body()
        body = self.rfile.read(length)
        return body if len(body) == length else None

    def _chunked_body(self) -> bytes:
        stream, body = DechunkedInput(self.rfile), bytearray()
        try:
            while chunk := stream.read(64 * 1024):
                body += chunk
                if len(body) > API_GATEWAY_MAX_BODY:
                    raise _Refused(413, "Request body is larger than 10 MiB", "request_too_large")
        except ConnectionError:
            raise
        except OSError as error:  # werkzeug's for a malformed chunk
            raise _Refused(400, f"Malformed chunked body: {error}", "bad_request") from None
        return bytes(body)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib handler's own refusals (a bad request line, a URL over 64 KiB) as JSON, not HTML."""
        self._refuse(code, message or HTTPStatus(code).phrase, FRAMING_CODES.get(code, "bad_request"))

    def _refuse(self, status: int, message: str, code: str) -> None:
        """Answers an error in the dialect of the request's path and ends the connection: what is left of
        the request cannot be told from the next one."""
        status, body, headers = framing_error(self._path(), status, message, code)
        if self.request_version == "HTTP/0.9":  # no version read: still answer with a status line
            self.request_version = "HTTP/1.1"
        self._reply(status, {**headers, "Connection": "close"}, body.encode())

    def _path(self) -> str:
        words = self.raw_requestline.split()
        try:
            return urlsplit(words[1].decode("latin-1")).path if len(words) > 1 else "/"
        except ValueError:
            return "/"

    def _reply(self, status: int, headers: dict[str, Any], data: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            for item in value if isinstance(value, list) else [value]:
                if name.lower() != "content-length":
                    self.send_header(name, str(item))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """No access log; errors are still logged."""


class Gateway:
    """Serves `http://host:port` until stopped. Each in-flight request borrows its own resolver, and its
    thread keeps the request it resolves (runplane.local.resolver_threads)."""

    def __init__(self, host: str, port: int, app_factory: Any):
        resolver_threads.install()
        self._factory = app_factory
        self._apps: queue.LifoQueue[Any] = queue.LifoQueue()
        # bound here, so that a taken port raises OSError: werkzeug's own bind exits the process
        family = select_address_family(host, port)
        with socket.create_server((host, port), family=family, backlog=BACKLOG) as bound:
            self.server = _Server(host, port, self.invoke, _Handler, fd=bound.fileno())
        self.in_flight = self.server.in_flight = InFlight()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def _borrow(self) -> Any:
        try:
            return self._apps.get_nowait()
        except queue.Empty:
            return self._factory()

    def invoke(self, event: dict) -> dict:
        app = self._borrow()
        try:
            return serve(app, event, LocalLambdaContext("api", timeout_seconds=30))
        finally:
            self._apps.put(app)

    def serve_forever(self) -> None:
        self.server.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
