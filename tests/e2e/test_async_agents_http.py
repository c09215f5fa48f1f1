"""End to end: an asynchronous agent over real sockets through `runplane local`. The agent is a loopback
HTTP server that accepts the signed envelope (202) and then, in a thread of its own, once the worker has
handed the run over and returned, reports to the run's report URL with runplane.agent until it reports the
end; a cancellation reaches it at its cancel_url and in its next report's answer."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from runplane.agent import AgentRun
from standardwebhooks.webhooks import Webhook

from tests.local_stack import Stack, start_stack
from tests.receiver import Received

pytestmark = pytest.mark.e2e

LEASE_SECONDS = 2
TEST_ENV = {
    "RUNPLANE_LEASE_SECONDS": str(LEASE_SECONDS),
    "RUNPLANE_LOCAL_SWEEP_SECONDS": "0.5",
    "RUNPLANE_ALLOW_LOOPBACK": "1",
    "RUNPLANE_AGENT_CANCEL_GRACE_SECONDS": "10",
}
USAGE = {"provider": "openai", "model": "gpt-4o", "prompt_tokens": 900, "completion_tokens": 120}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    started = start_stack(tmp_path_factory.mktemp("stack"), **TEST_ENV)
    started.keep_draining_output()
    yield started
    started.stop()


class LoopbackAgent:
    """Answers `POST /run` 202 at once, then calls `work(received)` in a thread of its own; records
    `POST /cancel` (answered 200) and sets `cancelled`. `join()` waits for the work and raises what it
    raised."""

    def __init__(self) -> None:
        self.work: Callable[[Received], None] = lambda received: None
        self.runs: list[Received] = []
        self.cancels: list[Received] = []
        self.cancelled = threading.Event()
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received = Received(dict(self.headers), body, time.time())
                cancel = self.path == "/cancel"
                (agent.cancels if cancel else agent.runs).append(received)
                self.send_response(200 if cancel else 202)
                self.send_header("Content-Length", "0")
                self.end_headers()
                self.wfile.flush()
                if cancel:
                    agent.cancelled.set()
                else:  # the worker has its answer: the run is worked on from here
                    thread = threading.Thread(target=agent._work, args=(received,), daemon=True)
                    agent.threads.append(thread)
                    thread.start()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def _work(self, received: Received) -> None:
        try:
            self.work(received)
        except BaseException as problem:
            self.errors.append(problem)

    def join(self, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while not self.threads and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.threads, "the agent was never sent the run"
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            assert not thread.is_alive(), "the agent's work did not end"
        if self.errors:
            raise self.errors[0]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def agent() -> Iterator[LoopbackAgent]:
    started = LoopbackAgent()
    yield started
    started.close()


def async_runnable(stack: Stack, name: str, **config: Any) -> str:
    spec = {"name": name, "kind": "http", "config": {"mode": "async", **config}}
    reply = stack.call("POST", "/v1/runnables", spec)
    assert reply.status_code == 201, reply.text
    return reply.json()["id"]


def start(stack: Stack, runnable_id: str, **body: Any) -> str:
    reply = stack.call("POST", f"/v1/runnable/{runnable_id}/runs", body)
    assert reply.status_code == 202, reply.text
    return reply.json()["id"]


def events(stack: Stack, run_id: str) -> list[dict[str, Any]]:
    return stack.call("GET", f"/v1/run/{run_id}/events").json()["events"]


def wait_handed_off(stack: Stack, run_id: str, seconds: float = 20) -> None:
    """Until the worker handed the run to its agent: its invocation has returned."""
    deadline = time.monotonic() + seconds
    while "handed_off" not in [e.get("reason") for e in events(stack, run_id)]:
        assert time.monotonic() < deadline, "the run was never handed to its agent"
        time.sleep(0.1)


def test_an_agent_reports_over_http_until_its_run_completes(stack: Stack, agent: LoopbackAgent) -> None:
    runnable = async_runnable(stack, "e2e-agent", url=agent.url("/run"), heartbeat_seconds=5)
    progressed, proceed = threading.Event(), threading.Event()
    answers: list[dict[str, Any]] = []

    def work(received: Received) -> None:
        envelope = json.loads(received.body)
        wait_handed_off(stack, envelope["run_id"])
        run = AgentRun(envelope)
        answers.append(run.heartbeat())
        run.set_state({"step": "search"})
        run.log("searching 2 sources", {"message": "found", "fields": {"hits": 3}, "level": "info"})
        answers.append(run.partial({"draft": "tides rise"}))
        progressed.set()
        assert proceed.wait(20)
        time.sleep(LEASE_SECONDS + 0.5)  # past the worker's lease (the sweeper runs): the agent's holds
        answers.append(run.heartbeat())
        answers.append(run.complete({"answer": 42}, usage=[USAGE], metadata={"sources": 2}))

    agent.work = work
    run_id = start(stack, runnable, inputs={"topic": "tides"})

    assert progressed.wait(30), agent.errors
    running = stack.call("GET", f"/v1/run/{run_id}").json()
    assert running["status"] == "running"
    assert running["state"] == {"step": "search"}
    assert running["result"]["outputs"] == {"draft": "tides rise"}
    proceed.set()
    agent.join()

    ended = stack.wait_terminal(run_id)
    assert ended["status"] == "completed", ended
    assert ended["result"]["outputs"] == {"answer": 42}
    assert ended["state"] == {"step": "search"}
    assert ended["result"]["metadata"]["sources"] == 2
    assert ended["total_input_tokens"] == USAGE["prompt_tokens"]
    assert [a["status"] for a in answers] == ["running", "running", "running", "completed"]
    assert all(a["report_by"] and a["deadline"] and not a["cancel_requested"] for a in answers[:3])

    lines = stack.call("GET", f"/v1/run/{run_id}/logs").json()["lines"]
    assert [(line["stream"], line["message"]) for line in lines] == [
        ("agent", "searching 2 sources"),
        ("agent", "found"),
    ]
    assert lines[1]["fields"] == {"hits": 3, "level": "info"}
    reasons = [e.get("reason") for e in events(stack, run_id)]
    assert reasons[:3] == ["accepted", "claimed", "handed_off"]
    assert reasons[-1] == "ended"

    [sent] = agent.runs
    envelope = json.loads(sent.body)
    assert envelope["inputs"] == {"topic": "tides"}
    assert envelope["mode"] == "async"
    assert envelope["report_url"] == f"{stack.info['api_url']}/v1/run/{run_id}/report"  # the stack's own
    assert envelope["run_token"].startswith("rpt_")
    assert envelope["heartbeat_seconds"] == 5
    secret = stack.call("GET", "/v1/callbacks/secret").json()["secret"]
    assert Webhook(secret).verify(sent.body, sent.headers) == envelope
    assert sent.headers["webhook-id"] == f"{run_id}.1"


def test_a_cancelled_agent_is_told_and_reports_the_end(stack: Stack, agent: LoopbackAgent) -> None:
    runnable = async_runnable(
        stack,
        "e2e-cancelled-agent",
        url=agent.url("/run"),
        cancel_url=agent.url("/cancel"),
        heartbeat_seconds=10,
    )
    working = threading.Event()
    answers: list[dict[str, Any]] = []

    def work(received: Received) -> None:
        envelope = json.loads(received.body)
        wait_handed_off(stack, envelope["run_id"])
        run = AgentRun(envelope)
        answers.append(run.set_state({"step": 1}))
        working.set()
        assert agent.cancelled.wait(20), "the agent was not told of the cancellation"
        answers.append(run.log("stopping"))
        answers.append(run.complete({"partial_answer": 7}))

    agent.work = work
    run_id = start(stack, runnable)
    assert working.wait(30), agent.errors
    cancel = stack.call("POST", f"/v1/run/{run_id}/cancel")
    assert cancel.status_code == 202, cancel.text
    agent.join()

    assert [a["cancel_requested"] for a in answers] == [False, True, True]
    assert answers[1]["status"] == "running"
    assert answers[2]["status"] == "cancelled"
    ended = stack.wait_terminal(run_id)
    assert ended["status"] == "cancelled", ended
    assert ended["result"]["outputs"] == {"partial_answer": 7}
    [told] = agent.cancels
    secret = stack.call("GET", "/v1/callbacks/secret").json()["secret"]
    assert Webhook(secret).verify(told.body, told.headers) == {
        "run_id": run_id,
        "attempt": 1,
        "type": "cancel",
    }
    assert told.headers["webhook-id"] == f"{run_id}.1.cancel"
