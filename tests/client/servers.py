"""A scripted HTTP server in front of the local stack: each request is answered by the next step of its
script (the last step repeats), and every request is recorded."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


@dataclass(frozen=True)
class Reply:
    """Answer with this, without asking the stack."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @classmethod
    def error(cls, status: int, code: str, retry_after: str | None = None) -> Reply:
        headers = {"Content-Type": "application/json"}
        if retry_after is not None:
            headers["Retry-After"] = retry_after
        return cls(status, headers, json.dumps({"error": f"scripted {status}", "code": code}).encode())


FORWARD = "forward"  # pass the request to the stack and its answer back
LOST = "lost"  # pass it to the stack, but answer 502 as if the stack's answer had been lost


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int = 0  # the status sent back


class Scripted:
    def __init__(self, upstream: str | None, script: list[Reply | str]):
        self.upstream, self.script = upstream, script
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with scripted._lock:
                    seen = Seen(self.command, self.path, dict(self.headers), body)
                    scripted.seen.append(seen)
                    step = scripted.script[min(len(scripted.seen), len(scripted.script)) - 1]
                reply = step if isinstance(step, Reply) else scripted._forward(self, body, lost=step == LOST)
                seen.answered = reply.status
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, *args: object) -> None:
                pass

        return Handler

    def _forward(self, request: BaseHTTPRequestHandler, body: bytes, *, lost: bool) -> Reply:
        assert self.upstream, "a script that forwards needs an upstream"
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        answer = requests.request(
            request.command, self.upstream + request.path, headers=headers, data=body, timeout=60
        )
        if lost:
            return Reply(502, {"Content-Type": "text/html"}, b"<html>502 Bad Gateway</html>")
        kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP | {"content-encoding"}}
        return Reply(answer.status_code, kept, answer.content)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def scripted(upstream: str | None, *script: Reply | str) -> Iterator[Scripted]:
    server = Scripted(upstream, list(script) or [FORWARD])
    try:
        yield server
    finally:
        server.close()
