"""A file server on loopback for tests that fetch URLs: `GET <path>` answers `routes[path]` (the query
left out), and every path asked for is recorded with its query."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Served:
    """What the server answers for a path: `length` False sends no Content-Length (the body ends when the
    connection closes)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    length: bool = True


NOT_HERE = Served(404, body=b"not here")


class FileServer:
    def __init__(self, routes: dict[str, Served] | None = None):
        self.routes = routes if routes is not None else {}
        self.requested: list[str] = []
        self.closed = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requested.append(self.path)
                answer = server.routes.get(self.path.split("?", 1)[0], NOT_HERE)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                if answer.length:
                    self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.server.shutdown()
            self.server.server_close()


@contextmanager
def serving(routes: dict[str, Served]) -> Iterator[FileServer]:
    server = FileServer(routes)
    try:
        yield server
    finally:
        server.close()
