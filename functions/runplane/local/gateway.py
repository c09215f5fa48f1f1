"""A small HTTP server that plays API Gateway: each request becomes a REST proxy event for the api handler."""

from __future__ import annotations

import base64
import queue
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from runplane.api.app import serve
from runplane.local.lambda_context import LocalLambdaContext

API_GATEWAY_MAX_BODY = 10 * 1024 * 1024


def proxy_event(method: str, target: str, headers: dict[str, list[str]], body: bytes, source_ip: str) -> dict:
    """The API Gateway REST API proxy integration event (payload format 1.0)."""
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    try:
        text, encoded = body.decode(), False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode(), True
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
        "body": text if body else None,
        "isBase64Encoded": encoded,
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 resets connections under concurrent clients


class Gateway:
    """Serves `http://host:port` until stopped. Each in-flight request borrows its own resolver."""

    def __init__(self, host: str, port: int, app_factory: Any):
        self._factory = app_factory
        self._apps: queue.LifoQueue[Any] = queue.LifoQueue()
        self.server = _Server((host, port), self._handler_class())

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

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "runplane-local"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length > API_GATEWAY_MAX_BODY:
                    self._reply(413, {"Content-Type": "application/json"}, b'{"message":"Request Too Long"}')
                    self.close_connection = True
                    return
                body = self.rfile.read(length) if length else b""
                headers: dict[str, list[str]] = {}
                for name, value in self.headers.items():
                    headers.setdefault(name, []).append(value)
                event = proxy_event(self.command, self.path, headers, body, self.client_address[0])
                response = gateway.invoke(event)
                payload = response.get("body") or ""
                data = base64.b64decode(payload) if response.get("isBase64Encoded") else payload.encode()
                out: dict[str, Any] = dict(response.get("headers") or {})
                for name, values in (response.get("multiValueHeaders") or {}).items():
                    out[name] = values
                self._reply(response["statusCode"], out, data)

            def _reply(self, status: int, headers: dict[str, Any], data: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    for item in value if isinstance(value, list) else [value]:
                        if name.lower() != "content-length":
                            self.send_header(name, str(item))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def serve_forever(self) -> None:
        self.server.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
