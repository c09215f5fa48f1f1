"""What one run costs in AWS, billed as AWS bills it: by component and by line item, per million runs.

    .venv/bin/python bench/cost.py [--only SCENARIO] [--repeat N]

Method. The real handlers run in this process against moto (bench/inprocess.py), invoked as Lambda invokes
them: the api function's `lambda_handler` with API Gateway's events (tests.conftest.Api), the queue
consumers through runplane.local.poller.Poller (the event source mapping), each with a Lambda context
named as CloudFormation names the function. Every AWS request is recorded with botocore events under the
function making it, as bench/async_agents.py counts; the event source mapping's ReceiveMessage (one that
got messages) and DeleteMessageBatch are SQS requests of "esm:<function>". DynamoDB units are computed
from moto's items by bench/capacity.py. What each function writes to stdout and stderr (the Powertools
logger's JSON lines, EMF metric lines) is captured per invocation. bench/billing.py reads the deployment
from the synthesized stack (API type, access-log format, sampling rule, memory, log format and levels,
tracing, event source mappings) and prices it all at its dated list prices; the functions run with the
stack's environment, so the per-key rate limit and the account's max_concurrency are on as deployed.
Each scenario runs once to warm up (clients, key cache, signing secret), then --repeat times; the run of
median cost is shown, with the range of all.

Assumptions (what cannot be measured here):
- Lambda duration is the handler's wall time measured here, so moto's (slower than DynamoDB), billed per
  1 ms at the function's memory, arm64. INIT (cold starts, billed since August 2025) is not in it.
- Lambda's platform lines (JSON format at system level INFO: platform.start and platform.report, about
  550 B an invocation; none at WARN) and API Gateway's access-log line (the stage's format, about 220-250
  B) are built from their documented shapes; an event is billed its bytes; log storage is left out.
- X-Ray at volume, nothing retrieved: a trace per API request (API Gateway and the api function share
  it), at the stage's sampling rule if the stack has one, else 5 %; a trace per queue-invoked invocation
  (SQS to Lambda starts a linked trace), at Lambda's 5 %. The reservoirs (1 a second) are fixed costs.
- An event source mapping receives one message at a time (at low volume; batches would share a receive
  and a delete); its empty long polls (5 pollers x 3 a minute) are a fixed cost per queue. EMF lines
  are billed as log bytes per run, and per metric-month in the fixed part.
- Concurrent invocations in one process share Powertools' metric buffer (sync and child runs): their EMF
  lines may be merged, one fewer than in AWS. Data transfer out (answers, callback POSTs) is left out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import billing
from billing import Biller
from capacity import Units
from inprocess import moto_backed
from resources import SMALL, count_run_code, run_code_calls


@dataclass
class Made:
    """What one run made, recorded while it ran."""

    requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # function, service, operation
    failed: Counter[str] = field(default_factory=Counter)  # failed conditions, cancelled transactions
    invocations: Counter[str] = field(default_factory=Counter)
    billed_ms: Counter[str] = field(default_factory=Counter)
    log_bytes: Counter[str] = field(default_factory=Counter)  # what the function wrote to stdout and stderr
    log_lines: Counter[str] = field(default_factory=Counter)
    emf_lines: Counter[str] = field(default_factory=Counter)
    api_calls: list[tuple[str, str, int, int]] = field(default_factory=list)  # method, path, status, bytes
    wru: Counter[tuple[str, str]] = field(default_factory=Counter)  # by function, operation
    rru: Counter[tuple[str, str]] = field(default_factory=Counter)
    answer: object = None  # what the action returned

    def count(self, service: str) -> float:
        return sum(n for (_, s, _), n in self.requests.items() if s == service)


component: ContextVar[str] = ContextVar("component", default="setup")  # who makes a request now
deployed: billing.Deployment  # read by main()
made = Made()
units = Units(component.get)
metrics_seen: set[tuple[str, str, str]] = set()  # (namespace, metric, dimensions)


def before_call(model: Any, **_: Any) -> None:
    if model.name != "ReceiveMessage":  # counted once answered: only receives that got messages
        made.requests[(component.get(), model.service_model.service_name, model.name)] += 1


def after_call(model: Any, parsed: dict[str, Any], **_: Any) -> None:
    if model.name == "ReceiveMessage" and parsed.get("Messages"):
        made.requests[(component.get(), "sqs", "ReceiveMessage")] += 1
    code = parsed.get("Error", {}).get("Code", "")
    if code in ("ConditionalCheckFailedException", "TransactionCanceledException"):
        made.failed[model.name] += 1


class Tap:
    """stdout and stderr: inside an invocation, counted as that function's log; else passed through."""

    def __init__(self, out: Any):
        self.out = out

    def write(self, text: str) -> int:
        name = component.get()
        if name not in deployed.functions:
            return self.out.write(text)
        made.log_bytes[name] += len(text.replace("\n", "").encode())
        made.log_lines[name] += text.count("\n")
        try:
            record = json.loads(text) if '"_aws"' in text else None
        except ValueError:
            record = None
        if isinstance(record, dict) and "_aws" in record:  # an EMF line: metrics, billed as logs too
            made.emf_lines[name] += 1
            for spec in record["_aws"]["CloudWatchMetrics"]:
                dims = ",".join(f"{d}={record.get(d)}" for ds in spec["Dimensions"] for d in ds)
                metrics_seen.update((spec["Namespace"], m["Name"], dims) for m in spec["Metrics"])
        return len(text)

    def flush(self) -> None:
        self.out.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.out, name)


def invoking(name: str, handler: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """`handler` as Lambda invokes function `name`: its context, its log level, timed and counted."""
    from runplane.local.lambda_context import LocalLambdaContext
    from runplane.observability import logger

    facts = deployed.functions[name]

    @dataclass
    class Context(LocalLambdaContext):
        @property
        def invoked_function_arn(self) -> str:
            return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    def invoke(event: Any, _context: Any) -> Any:
        token = component.set(name)
        logger.setLevel(facts.app_level)
        began = time.perf_counter()
        try:
            context = Context(facts.function_name, 900, facts.memory_mb)
            return handler(event, context)
        finally:
            made.billed_ms[name] += math.ceil((time.perf_counter() - began) * 1000)
            made.invocations[name] += 1
            component.reset(token)

    return invoke


class Stack:
    """The functions, as deployed, around one moto."""

    def __init__(self) -> None:
        from runplane import definitions as defs
        from runplane.handlers import api as api_handler
        from runplane.local.poller import Poller
        from runplane.logic.keys import create_key

        import tests.conftest as conftest

        api = invoking("api", api_handler.lambda_handler)

        def serve(_app: Any, event: dict[str, Any], context: Any) -> dict[str, Any]:
            answer = api(event, context)
            http = event.get("requestContext", {}).get("http", {})  # an HTTP API's event, else a REST one
            method, path = http.get("method") or event["httpMethod"], http.get("path") or event["path"]
            body = (answer.get("body") or "").encode()
            made.api_calls.append((method, path, answer["statusCode"], len(body)))
            return answer

        conftest.serve = serve  # tests.conftest.Api calls the handler through this name
        self.api = conftest.Api(create_key("bench").token)
        self.pollers = {f.name: Poller(f, wait_seconds=0) for f in defs.FUNCTIONS if f.queue}
        for name, poller in self.pollers.items():
            poller.handler = invoking(name, poller.handler)

    def poll(self, name: str) -> int:
        token = component.set(f"esm:{name}")
        try:
            return self.pollers[name].poll_once()
        finally:
            component.reset(token)

    def drain(self, *names: str) -> None:
        while sum(self.poll(name) for name in names):
            pass

    @contextmanager
    def working(self, workers: int) -> Iterator[None]:
        """Worker event source mappings polling beside the caller (sync runs, a parent waiting on a child)."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                if not self.poll("worker"):
                    time.sleep(0.005)

        threads = [threading.Thread(target=loop) for _ in range(workers)]
        for thread in threads:
            thread.start()
        try:
            yield
        finally:
            stop.set()
            for thread in threads:
                thread.join()

    def submit(self, runnable: str, body: dict[str, Any], **kw: Any) -> str:
        reply = self.api.post(f"/v1/runnable/{runnable}/runs", body, **kw)
        assert reply.status == 202, reply.text
        return reply.json()["id"]

    def completed(self, run_id: str) -> dict[str, Any]:
        reply = self.api.get(f"/v1/run/{run_id}")
        assert reply.status == 200, reply.text
        assert reply.json()["status"] == "completed", reply.text
        return reply.json()


# --- the scenarios: each makes one run, as a client would ---


class Scenarios:
    def __init__(self, stack: Stack) -> None:
        from tests.conftest import make_runnable

        self.s = stack
        self.echo = make_runnable("bench", "echo")  # a no-op: outputs are the inputs, here none
        self.parent = make_runnable("bench", "parent")
        self.progress = make_runnable("bench", "progress")
        self.reader = make_runnable("bench", "bench_read")  # bench/resources.py: reads each resource
        body = {"name": "notes.txt", "directory_path": "docs", "content": "data:text/plain;base64,"}
        body["content"] += __import__("base64").b64encode(SMALL).decode()
        reply = stack.api.post("/v1/resources", body)
        assert reply.status == 201, reply.text
        self.resource = reply.json()["id"]
        self.keys = iter(range(10**9))

    def async_(self) -> None:
        run_id = self.s.submit(self.echo, {"inputs": {}})
        self.s.drain("worker")
        self.s.completed(run_id)

    def callback(self) -> None:
        run_id = self.s.submit(self.echo, {"inputs": {}, "callback_url": self.receiver.url})
        self.s.drain("worker")
        self.s.drain("callbacks")
        self.s.completed(run_id)
        assert self.receiver.received, "no callback delivered"

    def sync(self) -> None:
        with self.s.working(1):
            reply = self.s.api.post(f"/v1/runnable/{self.echo}/runs?mode=sync", {"inputs": {}})
        assert reply.status == 200, reply.text
        assert reply.json()["status"] == "completed", reply.text

    def intake(self) -> None:
        from runplane.adapters import aws
        from runplane.domain.ids import intake_run_id
        from runplane.logic.services import services

        message = {"account_id": "bench", "runnable_id": self.echo, "inputs": {}}
        token = component.set("producer")
        try:
            sent = aws.client("sqs").send_message(
                QueueUrl=services().settings.intake_queue_url, MessageBody=json.dumps(message)
            )
        finally:
            component.reset(token)
        self.s.drain("intake")
        self.s.drain("worker")
        self.s.completed(intake_run_id(sent["MessageId"]))

    def idempotent(self) -> None:
        headers = {"Idempotency-Key": f"bench-{next(self.keys)}"}
        run_id = self.s.submit(self.echo, {"inputs": {}}, headers=headers)
        self.s.drain("worker")
        self.s.completed(run_id)

    def child(self) -> None:
        from runplane.domain.states import Status
        from runplane.logic.services import services

        with self.s.working(2):  # the parent's worker waits for the child, which another worker runs
            run_id = self.s.submit(self.parent, {"inputs": {"child": self.echo, "items": [{}]}})
            deadline = time.monotonic() + 60
            while (found := services().runs.get("bench", run_id, consistent=True)).status != "completed":
                assert time.monotonic() < deadline, "the parent did not end"
                assert not Status(found.status).terminal, found.status
                time.sleep(0.02)
        self.s.completed(run_id)

    def progressing(self) -> None:
        run_id = self.s.submit(self.progress, {"inputs": {"steps": 3}})
        self.s.drain("worker")
        self.s.completed(run_id)

    def resourced(self) -> None:
        body = {"inputs": {}, "resources": [{"name": "doc", "resource": {"id": self.resource}}]}
        run_id = self.s.submit(self.reader, body)
        run_code_calls()
        self.s.drain("worker")
        made.requests.update(run_code_calls())  # the run's own process: its GetObject
        assert self.s.completed(run_id)["result"]["outputs"] == {"doc": len(SMALL)}


SCENARIOS = {
    "async": ("async run of a python no-op (echo {}), polled once with GET", "async_"),
    "callback": ("the same with a callback_url, delivered at once (receiver answers 200)", "callback"),
    "sync": ("sync run (?mode=sync): the answer is the result", "sync"),
    "intake": ("submitted through the intake queue (the producer's SendMessage), polled once", "intake"),
    "idempotency": ("async with an Idempotency-Key header, polled once", "idempotent"),
    "child": ("a python parent that starts one child run (echo) and waits for it, polled once", "child"),
    "progress": (
        "python runnable reporting progress (3 x set_state + log + print, set_outputs)",
        "progressing",
    ),
    "resource": ("python runnable reading a referenced 1 KiB resource, polled once", "resourced"),
}


# --- measuring and billing ---


def measure(action: Callable[[], object]) -> Made:
    """What `action` made, the requests of the bench itself ("setup") left out."""
    global made
    made, _ = Made(), units.clear()
    answer = action()
    run, made = made, Made()
    run.answer = answer
    run.requests = Counter({k: v for k, v in run.requests.items() if k[0] != "setup"})
    run.wru = Counter({k: v for k, v in units.wru.items() if k[0] != "setup"})
    run.rru = Counter({k: v for k, v in units.rru.items() if k[0] != "setup"})
    return run


def main() -> None:
    global deployed
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=list(SCENARIOS), help="one scenario")
    parser.add_argument("--repeat", type=int, default=5, help="measured runs of each scenario")
    args = parser.parse_args()
    deployed = billing.read()
    plain = deployed.functions["api"].environment.items()  # the settings (resources' names are moto's)
    environment = {k: v for k, v in plain if k.startswith(("RUNPLANE_", "POWERTOOLS_"))}
    environment |= {
        "RUNPLANE_RUNNABLE_PACKAGES": "tests.fixtures.runnables",  # the parent and progress runnables
        "RUNPLANE_ALLOW_LOOPBACK": "1",  # the callback receiver is on loopback
        "POWERTOOLS_METRICS_DISABLED": "false",
        "POWERTOOLS_LOG_LEVEL": deployed.functions["api"].app_level,
    }
    environment.setdefault("RUNPLANE_API_TYPE", deployed.api_type.lower())  # the events the api is sent
    with moto_backed(**environment):
        from runplane.adapters import aws
        from runplane.observability import logger

        from tests.receiver import Answer, receiving

        events = aws.session().events
        events.register("before-call", before_call)
        events.register("after-call", after_call)
        units.register(events)
        aws._client.cache_clear()  # clients copy the session's handlers when created
        count_run_code()
        out, err = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = Tap(out), Tap(err)
        logger.registered_handler.setStream(sys.stdout)
        os.environ.pop("AWS_LAMBDA_LOG_LEVEL", None)  # each invocation sets its function's level instead
        if deployed.api_tracing:
            os.environ["_X_AMZN_TRACE_ID"] = billing.TRACE_HEADER  # Lambda sets it: every log line names it
        try:
            biller = Biller(deployed)
            scenarios = Scenarios(Stack())
            from runplane.logic.services import services

            biller.print_header(services().settings)
            rows = {}
            with receiving(Answer(200)) as scenarios.receiver:
                for number, (name, (what, method)) in enumerate(SCENARIOS.items(), 1):
                    if args.only in (None, name):
                        action = getattr(scenarios, method)
                        action()  # the warm-up
                        runs = [measure(action) for _ in range(args.repeat)]
                        rows[name] = (biller.print_run(f"({number}) {name}: {what}", runs), runs)
            biller.print_summary(rows)
            from runplane import definitions as defs
            from runplane.handlers import sweeper

            sweep = measure(lambda: invoking("sweeper", sweeper.lambda_handler)({}, None))
            biller.print_fixed(sweep, defs.function("sweeper").schedule_minutes or 1, metrics_seen)
        finally:
            sys.stdout, sys.stderr = out, err


if __name__ == "__main__":
    main()
