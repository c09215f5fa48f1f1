"""Remote runnables report progress in the report format (runplane/domain/reports.py): an http agent on a
real loopback server streaming NDJSON, a Lambda function's answer and the tail of its log."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.stub import ANY, Stubber
from runplane.adapters import runtimes
from runplane.runnables import http

from tests.conftest import Api, drain
from tests.integration.test_kinds import (  # quick_leases: an autouse fixture
    AGENT_ARN,
    LLM_USAGE,
    create,
    payload,
    quick_leases,  # noqa: F401
    run,
)
from tests.receiver import Received

# What the agent does, in order: bytes are written at once, an Event is waited for, a number is slept.
Step = bytes | threading.Event | float


def line(**report: Any) -> bytes:
    return json.dumps(report).encode() + b"\n"


class StreamingAgent:
    """Answers a POST with `steps` as application/x-ndjson, chunked (HTTP/1.1) or ended by closing the
    connection (HTTP/1.0); records the request."""

    def __init__(self, steps: Iterable[Step], chunked: bool):
        self.received: list[Received] = []
        agent = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if chunked else "HTTP/1.0"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                agent.received.append(Received(dict(self.headers), body, time.time()))
                self.close_connection = True
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson; charset=utf-8")
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for step in steps:
                        if isinstance(step, threading.Event):
                            step.wait(10)
                        elif isinstance(step, float):
                            time.sleep(step)
                        else:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(step), step) if chunked else step)
                    if chunked:
                        self.wfile.write(b"0\r\n\r\n")
                except OSError:  # the worker stopped reading
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/agent"


@contextmanager
def streaming(steps: Iterable[Step], chunked: bool = True) -> Iterator[StreamingAgent]:
    agent = StreamingAgent(steps, chunked)
    try:
        yield agent
    finally:
        agent.server.shutdown()
        agent.server.server_close()


def wait_for(api: Api, run_id: str, check: Any, seconds: float = 5) -> dict[str, Any]:
    """The run's RunState once `check(state)` holds."""
    began = time.monotonic()
    while not check(state := api.get(f"/v1/run/{run_id}").json()):
        assert time.monotonic() - began < seconds, state
        time.sleep(0.05)
    return state


def log_lines(api: Api, run_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    lines = api.get(f"/v1/run/{run_id}/logs").json()["lines"]
    return [(line["stream"], line["message"], line.get("fields")) for line in lines]


@pytest.mark.parametrize("chunked", [True, False], ids=["chunked", "until-close"])
def test_an_agent_streaming_reports_shows_its_progress_while_it_runs(api: Api, chunked: bool) -> None:
    going_on = threading.Event()
    steps: list[Step] = [
        line(state={"step": 1}),
        line(logs=["fetching", {"message": "fetched", "fields": {"pages": 3}, "level": "info"}]),
        line(outputs={"draft": "a"}, partial=True, state={"step": 2}),
        going_on,
        line(logs=["writing"], usage=[LLM_USAGE]),
        line(outputs={"answer": 42}, metadata={"agent_version": "7"}, state={"step": None, "done": True}),
        line(state={"after": "the final report"}),  # not read
    ]
    with streaming(steps, chunked) as agent:
        runnable = create(api, "http", {"url": agent.url})
        run_id = api.post(f"/v1/runnable/{runnable}/runs", {"inputs": {}}).json()["id"]
        worker = threading.Thread(target=drain, args=("worker",))
        worker.start()
        running = wait_for(api, run_id, lambda s: s["state"] == {"step": 2} and "outputs" in s["result"])
        assert running["status"] == "running"
        assert running["result"]["outputs"] == {"draft": "a"}
        assert [m for _, m, _ in log_lines(api, run_id)] == ["fetching", "fetched"]
        going_on.set()
        worker.join(10)
    assert "application/x-ndjson" in agent.received[0].headers["Accept"]
    state = api.get(f"/v1/run/{run_id}").json()
    assert state["status"] == "completed", state["result"]
    assert state["result"]["outputs"] == {"answer": 42}
    assert state["state"] == {"done": True}
    assert state["result"]["metadata"]["agent_version"] == "7"
    assert state["total_input_tokens"] == 100
    assert log_lines(api, run_id) == [
        ("agent", "fetching", None),
        ("agent", "fetched", {"pages": 3, "level": "info"}),
        ("agent", "writing", None),
    ]
    events = api.get(f"/v1/run/{run_id}/events").json()["events"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    states = [e["state"] for e in events if e["type"] == "state"]
    assert states[-2:] == [{"step": 2}, {"done": True}]
    outputs = next(i for i, e in enumerate(events) if e["type"] == "output")
    assert events[outputs]["outputs"] == {"draft": "a"}
    assert events[-1]["reason"] == "ended"
    assert outputs < len(events) - 1


@pytest.mark.parametrize(
    ("end", "code", "words"),
    [
        ([], "invalid_reply", ["after 2 lines without a final report"]),
        ([line(error={"message": "no luck", "code": "agent_gave_up"})], "agent_gave_up", ["no luck"]),
        ([line(error={"message": "gave up"})], "runnable_error", ["gave up"]),
        ([line(outputs={}, error={"message": "both"})], "invalid_reply", ["after 3 lines"]),
    ],
    ids=["no-final-report", "error-report", "error-without-code", "outputs-and-error"],
)
def test_a_stream_ends_with_a_final_report_or_the_run_fails(
    api: Api, end: list[bytes], code: str, words: list[str]
) -> None:
    with streaming([line(state={"step": 1}), line(logs=["working"]), *end]) as agent:
        state = run(api, create(api, "http", {"url": agent.url}))
    assert state["status"] == "failed"
    assert state["result"]["error"]["code"] == code
    assert all(word in state["result"]["error"]["message"] for word in words), state["result"]["error"]
    assert state["state"] == {"step": 1}  # what came before stays


def test_a_line_that_is_not_a_report_is_logged_and_the_stream_goes_on(api: Api) -> None:
    steps: list[Step] = [
        b"not json\n",
        line(state=5),
        b"\n",  # blank lines are skipped
        b"[1, 2]\n",
        line(state={"big": "x" * 20_000}),  # over the state's limit: dropped
        line(state={"ok": True}),
        b'{"outputs": {"n": 1}}',  # the last line needs no newline
    ]
    with streaming(steps, chunked=False) as agent:
        state = run(api, create(api, "http", {"url": agent.url}))
    assert state["status"] == "completed", state["result"]
    assert (state["result"]["outputs"], state["state"]) == ({"n": 1}, {"ok": True})
    notes = [message for stream, message, _ in log_lines(api, state["id"]) if stream == "log"]
    source = f"POST {agent.url}: "
    assert [note.removeprefix(source) for note in notes] == [
        "line 1 ignored, not a report (report: Invalid JSON: expected ident at line 1 column 2): not json",
        'line 2 ignored, not a report (state: Input should be an object): {"state": 5}',
        "line 4 ignored, not a report (report: Input should be an object): [1, 2]",
        "a report's state was dropped: state would be 20010 bytes of JSON; at most 16384 are kept",
    ]


def test_the_byte_limit_counts_the_whole_stream(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "MAX_REPLY_BYTES", 2000)
    endless = (part for _ in range(5000) for part in (line(logs=["x" * 50]), 0.002))
    with streaming(endless) as agent:
        began = time.monotonic()
        state = run(api, create(api, "http", {"url": agent.url}))
        assert time.monotonic() - began < 5
    assert state["status"] == "failed"
    assert state["result"]["error"]["code"] == "invalid_reply"
    assert "more than 2000 bytes" in state["result"]["error"]["message"]


def test_the_call_timeout_counts_the_whole_stream(api: Api) -> None:
    endless = (part for i in range(100) for part in (line(state={"i": i}), 0.1))
    with streaming(endless) as agent:
        began = time.monotonic()
        state = run(api, create(api, "http", {"url": agent.url, "timeout_seconds": 0.8}))
        assert time.monotonic() - began < 2.5
    assert state["status"] == "failed"
    assert state["result"]["error"]["code"] == "http_error"
    assert "timed out" in state["result"]["error"]["message"]
    assert state["state"]["i"] >= 1  # the lines before the cut were applied


# --- lambda ---


def test_a_lambda_functions_log_tail_and_report_become_the_runs_log(api: Api) -> None:
    tail = "START RequestId: r1\nlooking at the title\n\nEND RequestId: r1\nREPORT RequestId: r1\tDuration: 3 ms\n"
    answer = {"outputs": {"label": "bug"}, "state": {"triaged": True}, "logs": [{"message": "labelled"}]}
    with Stubber(runtimes.lambda_client()) as stub:
        stub.add_response(
            "invoke",
            {
                "StatusCode": 200,
                "Payload": payload(answer),
                "LogResult": base64.b64encode(tail.encode()).decode(),
            },
            {
                "FunctionName": AGENT_ARN,
                "InvocationType": "RequestResponse",
                "LogType": "Tail",
                "Payload": ANY,
            },
        )
        failure = {"errorType": "ValueError", "errorMessage": "no title", "stackTrace": []}
        stub.add_response(
            "invoke",
            {
                "StatusCode": 200,
                "FunctionError": "Unhandled",
                "Payload": payload(failure),
                "LogResult": base64.b64encode(b"[ERROR] ValueError: no title\n").decode(),
            },
        )
        runnable = create(api, "lambda", {"function_arn": AGENT_ARN})
        completed, failed = run(api, runnable), run(api, runnable)
    assert completed["status"] == "completed", completed["result"]
    assert (completed["result"]["outputs"], completed["state"]) == ({"label": "bug"}, {"triaged": True})
    assert [(s, m) for s, m, _ in log_lines(api, completed["id"])] == [
        ("lambda", "START RequestId: r1"),
        ("lambda", "looking at the title"),
        ("lambda", "END RequestId: r1"),
        ("lambda", "REPORT RequestId: r1\tDuration: 3 ms"),
        ("agent", "labelled"),
    ]
    assert failed["result"]["error"] == {"message": "ValueError: no title", "code": "function_error"}
    assert [(s, m) for s, m, _ in log_lines(api, failed["id"])] == [
        ("lambda", "[ERROR] ValueError: no title")
    ]


def test_a_lambda_answer_that_is_not_final_fails_the_run(api: Api) -> None:
    with Stubber(runtimes.lambda_client()) as stub:
        stub.add_response("invoke", {"StatusCode": 200, "Payload": payload({"state": {"step": 1}})})
        state = run(api, create(api, "lambda", {"function_arn": AGENT_ARN}))
    assert state["status"] == "failed"
    assert state["result"]["error"]["code"] == "invalid_reply"
    assert "not final" in state["result"]["error"]["message"]
    assert state["state"] == {"step": 1}
