"""Fault injection: every AWS request a handler makes is an injection point, recovery runs as in production.

- **Points.** `botocore.client.BaseClient._make_api_call` is wrapped in the test process. A request made
  while a handler runs (the driver names the handler: api, worker, callbacks, sweeper, intake,
  dead_letters) is the point `(component, service, operation, site, nth)`: `site` is the runplane code
  that asked (`caller>Adapter.method`), `nth` counts such requests in the scenario. A clean run of a flow
  lists its points; a scenario replays the flow with one fault at one point.
- **Modes.** `throttled` (an error the SDK gave up retrying, nothing sent), `timeout` (could not connect,
  nothing sent), `applied_then_error` (sent and applied, then the caller sees a read timeout),
  `duplicated` (sent twice, the second answer returned: a lost response the SDK retried; DynamoDB
  replays a transaction with the same ClientRequestToken, as AWS does), `crash_before` / `crash_after`
  (`Crash`, a BaseException no handler catches: the Lambda invocation died; its SQS messages stay and
  come back after their visibility timeout, an API request is never answered).
- **Recovery.** A virtual clock (time-machine: `time.time` and `datetime.now`, so moto's SQS visibility
  too) is moved to the next moment something is due: a hidden message, a run's `due_at`, a pending
  callback, a concurrency recheck. The driver delivers visible messages to their handlers as the event
  source mapping does (`runplane.local.poller`, moto's redrive policy moves a message to its DLQ) and
  runs the sweeper when anything is due, until nothing is left.
- **Invariants.** `Stack.violations` (one terminal state that never changes, executions, GET against the
  item and its outcome, callbacks, slots, accounting, API answers).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from contextvars import ContextVar
from dataclasses import astuple, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from unittest import mock

import time_machine
from botocore.client import BaseClient
from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.sqs.models import sqs_backends
from runplane import definitions as defs
from runplane.adapters.concurrency import HELD, HOLDER, WAIT, holder_name
from runplane.domain.models import RunnableFields
from runplane.domain.states import TERMINAL, Status
from runplane.local import moto_atomic
from runplane.local.lambda_context import LocalLambdaContext
from runplane.local.poller import Poller
from runplane.local.provision import provision
from runplane.logic import admission, execute, keys, services
from runplane.logic.runnables import create_runnable
from runplane.observability import logger
from runplane.settings import Settings
from standardwebhooks.webhooks import Webhook

from tests.conftest import TEST_PRICES, Api
from tests.receiver import Answer as Scripted
from tests.receiver import Receiver

moto_atomic.install()

MODES = ("crash_before", "crash_after", "throttled", "timeout", "applied_then_error", "duplicated")
# Requests that change nothing: for them a crash before or after is the same, and so are the errors.
READS = frozenset({"GetItem", "Query", "Scan", "BatchGetItem", "GetObject", "GetQueueAttributes"})
# The default run's modes: each point with the modes that differ for it (`faults_full`: all of them).
DEFAULT_MODES = {True: ("throttled",), False: ("crash_after", "applied_then_error", "duplicated")}


def modes_for(point: Point, full: bool) -> tuple[str, ...]:
    return MODES if full else DEFAULT_MODES[point.operation in READS]


class Crash(BaseException):  # a BaseException: no `except Exception` in the code may handle it
    """The Lambda invocation died at this request (its process was killed, it ran out of time)."""


@dataclass(frozen=True)
class Point:
    component: str  # the handler that made the request
    service: str
    operation: str
    site: str  # "caller>Adapter.method"
    nth: int

    @property
    def id(self) -> str:
        return f"{self.component}:{self.service}.{self.operation}@{self.site}#{self.nth}"


@dataclass
class Fault:
    """`mode` at the request `point` (once), or at every request `where` accepts, `times` times.
    Mode `hold` calls `hold()` before sending (a slow request)."""

    mode: str
    point: Point | None = None
    where: Callable[[Point, dict[str, Any]], bool] | None = None
    times: int = 1
    hold: Callable[[], object] | None = None

    def matches(self, point: Point, params: dict[str, Any]) -> bool:
        if self.times <= 0:
            return False
        if self.point is not None:
            return self.point == point
        return self.where is not None and self.where(point, params)


_component: ContextVar[str | None] = ContextVar("fault_component", default=None)
_original = BaseClient._make_api_call
_active: Injector | None = None


@contextmanager
def acting_as(component: str | None) -> Iterator[None]:
    """Requests made inside are `component`'s (None: the harness's own, never recorded or faulted)."""
    token = _component.set(component)
    try:
        yield
    finally:
        _component.reset(token)


def _site() -> str:
    """`caller>Adapter.method`: the outermost adapter frame asking, and the runplane code calling it."""
    adapter, frame = None, sys._getframe(3)
    while frame is not None:
        path = frame.f_code.co_filename.replace(os.sep, "/")
        if "/runplane/adapters/" in path:
            adapter = frame.f_code.co_qualname
        elif adapter is not None and "/runplane/" in path:
            return f"{frame.f_code.co_name}>{adapter}"
        frame = frame.f_back
    return adapter or "?"


def _throttle(client: Any, operation: str) -> Exception:
    service = client.meta.service_model.service_name
    code = {"dynamodb": "ProvisionedThroughputExceededException", "s3": "SlowDown"}.get(
        service, "ThrottlingException"
    )
    response = {
        "Error": {"Code": code, "Message": "Rate exceeded (injected)"},
        "ResponseMetadata": {"HTTPStatusCode": 503 if service == "s3" else 400},
    }
    return client.exceptions.from_code(code)(response, operation)


class Injector:
    """Records the requests of the named components and applies the faults that match them.

    A python runnable runs in a forked child (runplane.runnables.supervise): its requests (a resource's
    bytes read) are the points of the component that forked it. The child writes each to `forked`, which
    the parent merges (its counts, points and fired faults) before it forks again and at its own requests.
    A crash in the child is its Lambda invocation dying: the child exits, and the parent's next request of
    that component raises `Crash` (the worker dies before it can record anything the child's end told it).
    """

    def __init__(self, components: frozenset[str] | None = None, forked: Path | None = None):
        self.components = components  # None: every component's requests are points
        self.points: list[Point] = []
        self.faults: list[Fault] = []
        self.forked = forked
        self._counts: Counter[tuple[str, str, str, str]] = Counter()
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._merged = 0  # how much of `forked` is merged
        self._dying: dict[str, str] = {}  # component -> the point its forked child crashed at

    def begin(self, components: frozenset[str]) -> None:
        """From now on, record the requests of `components` as points, counted from zero."""
        with self._lock:
            self._merge_forked()
            self.components, self.points = components, []
            self._counts.clear()

    def merge_forked(self) -> None:
        """What forked children requested, merged into this process's record (the harness calls it before
        it reads the points and the faults)."""
        with self._lock:
            self._merge_forked()

    def request(self, client: Any, operation: str, params: dict[str, Any], component: str) -> Any:
        service = client.meta.service_model.service_name
        site = _site()
        forked = os.getpid() != self._pid
        with self._lock:
            if not forked:
                self._merge_forked()
                if (dead_at := self._dying.pop(component, None)) is not None:
                    raise Crash(f"{dead_at} (in its forked child)")
            key = (component, service, operation, site)
            self._counts[key] += 1
            point = Point(*key, self._counts[key])
            recorded = self.components is None or component in self.components
            if recorded:
                self.points.append(point)
            fault = next((f for f in self.faults if f.matches(point, params)), None)
            if fault is not None and (recorded or fault.point is None):
                fault.times -= 1
            else:
                fault = None
            if forked:
                self._tell_parent(point, recorded, fault)
        if fault is None:
            return _original(client, operation, params)
        if forked and fault.mode in ("crash_before", "crash_after"):
            if fault.mode == "crash_after":
                _original(client, operation, dict(params))
            self._tell_parent(point, False, None, crashed=True)
            os._exit(70)  # the invocation died: the worker finds its child gone
        return _apply(fault, point, client, operation, params)

    def _tell_parent(self, point: Point, recorded: bool, fault: Fault | None, crashed: bool = False) -> None:
        if self.forked is None:
            return
        line = {
            "point": list(astuple(point)),
            "recorded": recorded,
            "fault": None if fault is None else self.faults.index(fault),
            "crashed": crashed,
        }
        with self.forked.open("a") as file:  # one short write: the parent reads whole lines
            file.write(json.dumps(line) + "\n")

    def _merge_forked(self) -> None:
        if self.forked is None or not self.forked.exists():
            return
        with self.forked.open() as file:
            file.seek(self._merged)
            text = file.read()
        complete = text[: text.rfind("\n") + 1]
        self._merged += len(complete.encode())
        for line in complete.splitlines():
            told = json.loads(line)
            point = Point(*told["point"])
            if told["crashed"]:
                self._dying[point.component] = point.id
                continue
            self._counts[(point.component, point.service, point.operation, point.site)] += 1
            if told["recorded"]:
                self.points.append(point)
            if told["fault"] is not None:
                self.faults[told["fault"]].times -= 1


def _before_fork() -> None:
    """A child forked while a scenario runs starts from the parent's record, with the injector's lock free."""
    if _active is not None:
        _active._lock.acquire()
        _active._merge_forked()


def _after_fork() -> None:
    if _active is not None and _active._lock.locked():
        _active._lock.release()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork)


def _apply(fault: Fault, point: Point, client: Any, operation: str, params: dict[str, Any]) -> Any:
    endpoint = client.meta.endpoint_url
    mode = fault.mode
    if mode == "crash_before":
        raise Crash(point.id)
    if mode == "throttled":
        raise _throttle(client, operation)
    if mode == "timeout":
        raise ConnectTimeoutError(endpoint_url=endpoint)
    if mode == "hold" and fault.hold is not None:
        fault.hold()
    sent = dict(params)  # botocore fills in (and may rewrite) what it sends: a retry resends the original
    answer = _original(client, operation, sent)
    if mode == "crash_after":
        raise Crash(point.id)
    if mode == "applied_then_error":
        raise ReadTimeoutError(endpoint_url=endpoint)
    if mode == "duplicated" and "ClientRequestToken" not in sent:
        return _original(client, operation, dict(params))
    return answer


def _make_api_call(self: Any, operation: str, params: dict[str, Any]) -> Any:
    component = _component.get()
    if _active is None or component is None:
        return _original(self, operation, params)
    return _active.request(self, operation, params, component)


@contextmanager
def _hooked(injector: Injector) -> Iterator[None]:
    """Every boto3 client of the process sends its requests through `injector`."""
    global _active
    BaseClient._make_api_call = _make_api_call  # type: ignore[method-assign]
    _active = injector
    try:
        yield
    finally:
        _active = None
        BaseClient._make_api_call = _original  # type: ignore[method-assign]


# --- the stack: moto, settings, the clock, the receiver --------------------------------------------

SETTINGS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "RUNPLANE_RUNNABLE_PACKAGES": "tests.fixtures.runnables",
    "RUNPLANE_MODEL_PRICES": json.dumps(TEST_PRICES),
    "RUNPLANE_ALLOW_LOOPBACK": "1",
    "RUNPLANE_CALLBACK_CONNECT_TIMEOUT_SECONDS": "0.5",
    "RUNPLANE_CALLBACK_TIMEOUT_SECONDS": "2",
    "RUNPLANE_INLINE_LIMIT_BYTES": "1024",  # payloads and outcomes of the flows go to S3
    # rate limits with shares of one request (a burst of at most 8) and windows of 8 ms: every API request
    # and every report writes its counter (a point of the flow), and none is refused
    "RUNPLANE_RATE_LIMIT_BURST": "8",
    "RUNPLANE_RATE_LIMIT_PER_SECOND": "1000",
    "RUNPLANE_REPORT_BURST": "8",
    "RUNPLANE_REPORT_RATE_PER_SECOND": "1000",
}
PAD = 1100  # characters that take a payload or an outcome past the inline limit
# Leases keep their production length (30 s, on the virtual clock) but are renewed this often (real
# seconds, not lease / 3): a body of a fraction of a second renews its lease.
HEARTBEAT_SECONDS = 0.1
CONSUMERS = ("intake", "worker", "callbacks", "dead_letters")  # functions fed by a queue, in path order
HORIZON_SECONDS = 8 * 24 * 3600  # longer than any retry schedule: a scenario still going then is stuck


class _CachedClients:
    """A boto3 session for `provision` that hands out the process's shared clients."""

    def client(self, service: str) -> Any:
        from runplane.adapters import aws

        return aws.client(service)


@cache
def _receiver() -> Receiver:
    """One loopback receiver per process (each scenario starts with its record cleared, answering 200)."""
    return Receiver()


@cache
def _agent_receiver() -> Receiver:
    """One loopback agent per process for async http runnables (each scenario clears its record): it
    accepts each run it is sent with a 202, a little slowly, so that the worker renews its lease while it
    waits (the renewal is one of the points)."""
    return Receiver()


AGENT_ACCEPTS = Scripted(status=202, body=b"", delay=0.15)


@dataclass
class Answer:
    """What an API client saw: a status and body, none (the request died), or an escaped exception."""

    status: int | None
    body: Any = None
    escaped: str | None = None
    stored: bool = False  # the request created the run


@dataclass
class Crashed:
    """An invocation that died: where, the run's status then, whether it had started the runnable."""

    component: str
    point: str
    status: str | None
    body_started: bool


class Stack:
    """One scenario's world: moto with every resource, the virtual clock, a callback receiver, an API
    key, and the `tally` runnable. Use as a context manager."""

    def __init__(
        self,
        tmp: Path,
        settings: dict[str, str] | None = None,
        runnable: dict[str, Any] | None = None,
        heartbeat: float = HEARTBEAT_SECONDS,
    ):
        self.heartbeat = heartbeat
        self.settings = {**SETTINGS, **(settings or {})}
        self.runnable_fields = runnable or {}
        self.executions_file = tmp / "executions"
        self.injector = Injector(forked=tmp / "forked_requests")
        self.answers: list[Answer] = []
        self.crashes: list[Crashed] = []
        self.history: dict[str, list[tuple[str, str]]] = {}  # run -> (status, outcome digest) observed
        self.errors: list[str] = []  # what the harness itself saw go wrong (escapes, a stuck drive)
        # what acts between deliveries, before time passes (a scripted agent): each returns whether it did
        self.actors: list[Callable[[], bool]] = []

    # --- set-up ---

    def __enter__(self) -> Stack:
        with ExitStack() as undo:  # a failure part-way undoes what was set up
            saved = dict(os.environ)
            undo.callback(lambda: (os.environ.clear(), os.environ.update(saved), services.reset()))
            os.environ.pop("AWS_ENDPOINT_URL", None)
            os.environ.update(self.settings)
            beat = property(lambda settings: self.heartbeat)
            undo.enter_context(mock.patch.object(Settings, "heartbeat_seconds", beat))
            # fresh moto backends; the process's boto3 clients are kept (they are slow to make)
            undo.enter_context(mock_aws())
            os.environ.update(provision(_CachedClients(), "test"))
            services.reset()
            keys._cache = keys._PrincipalCache()
            undo.callback(logger.setLevel, logger.log_level)
            logger.setLevel("CRITICAL")  # faults make the handlers log tracebacks by design
            self.clock = undo.enter_context(time_machine.travel(time.time(), tick=True))
            self.receiver = _receiver()
            self.receiver.received.clear()
            self.receiver.script = [Scripted()]
            self.agent = _agent_receiver()
            self.agent.received.clear()
            self.agent.script = [AGENT_ACCEPTS]
            self.key = keys.create_key("acme", scopes=["admin"])
            self.account_id = self.key.account_id
            spec = RunnableFields(
                name="tally", kind="python", config={"function": "tally"}, **self.runnable_fields
            )
            self.runnable_id = create_runnable(self.account_id, spec).id
            self.api = Api(self.key.token)
            self.pollers = {f.name: self._poller(f) for f in defs.FUNCTIONS if f.queue}
            undo.enter_context(_hooked(self.injector))
            undo.enter_context(mock.patch.object(execute, "admit", self._admit_holding_its_slots))
            self._undo = undo.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self._undo.close()

    def _poller(self, function: defs.Function) -> Poller:
        poller = Poller(function, wait_seconds=0)
        handler = poller.handler
        poller.handler = lambda event, context: self._invoke(function.name, handler, event, context)
        return poller

    @staticmethod
    def now() -> float:
        return time.time()

    @property
    def svc(self) -> services.Services:
        return services.services()

    def run_inputs(self, **extra: Any) -> dict[str, Any]:
        """The `tally` runnable's inputs: padded past the inline limit, asking for padded outputs."""
        return {"path": str(self.executions_file), "filler": "x" * PAD, "pad": PAD, **extra}

    # --- the handlers, as Lambda invokes them ---

    def _invoke(self, component: str, handler: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        before = self.executions()
        try:
            with acting_as(component):
                return handler(*args, **kwargs)
        except Crash as crash:
            run = self.only_run()
            started = self.executions() > before
            self.crashes.append(Crashed(component, str(crash), run and run["status"], started))
            raise
        finally:
            self.observe()

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Answer:
        """One API request as a client sends it; a crash leaves it unanswered."""
        before = {run["id"] for run in self.runs()}
        try:
            reply = self._invoke("api", self.api.call, method, path, body, headers=headers)
            answer = Answer(reply.status, _json_or_text(reply.text))
        except Crash:
            answer = Answer(None)
        except Exception as error:  # the handler let it out: API Gateway answers 502
            answer = Answer(None, escaped=f"{type(error).__name__}: {error}")
            self.errors.append(f"{method} {path}: the api handler raised {answer.escaped}")
        answer.stored = bool({run["id"] for run in self.runs()} - before)
        self.answers.append(answer)
        return answer

    def start_run(self, attempts: int = 4, **body: Any) -> str | None:
        """POST a run with an Idempotency-Key, retried as a client does until answered 2xx."""
        path = f"/v1/runnable/{self.runnable_id}/runs"
        headers = {"Idempotency-Key": "fault-" + uuid.uuid4().hex}
        body = {"inputs": self.run_inputs(), "callback_url": self.receiver.url, **body}
        for _ in range(attempts):
            answer = self.request("POST", path, body, headers)
            if answer.status is not None and answer.status < 300:
                return answer.body["id"]
        return None

    def send_intake(self, **body: Any) -> None:
        message = {
            "account_id": self.account_id,
            "runnable_id": self.runnable_id,
            "inputs": self.run_inputs(),
            "callback_url": self.receiver.url,
            **body,
        }
        self.svc.queues.client.send_message(
            QueueUrl=self.queue_url("intake"), MessageBody=json.dumps(message)
        )

    def queue_url(self, queue: str) -> str:
        return os.environ[defs.queue(queue).env_var]

    def sweep(self) -> None:
        from runplane.handlers import sweeper

        # a failed invocation is retried by the schedule, a minute later
        with suppress(Crash, Exception):
            self._invoke("sweeper", sweeper.lambda_handler, {}, LocalLambdaContext("sweeper", 60))

    def receive(self, queue: str) -> dict[str, Any]:
        """Take the one message on `queue` as the event source mapping would: its SQS record."""
        from runplane.local.poller import sqs_record

        poller = self.pollers[next(f.name for f in defs.FUNCTIONS if f.queue == queue)]
        (message,) = poller.sqs.receive_message(
            QueueUrl=poller.queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]
        )["Messages"]
        poller.sqs.delete_message(QueueUrl=poller.queue_url, ReceiptHandle=message["ReceiptHandle"])
        return sqs_record(message, poller.queue_arn, os.environ["AWS_DEFAULT_REGION"])

    def deliver(self, *consumers: str) -> int:
        """One batch from each consumed queue (or those of `consumers`) to its handler; how many
        messages were received."""
        received = 0
        for name in consumers or CONSUMERS:
            if not any(
                at <= time.time() for at in self.hidden_until(self.pollers[name].function.queue or "")
            ):
                continue  # nothing to receive (asking moto is what costs)
            try:
                received += self.pollers[name].poll_once()
            except Crash:  # the invocation died: its messages come back after their visibility timeout
                received += 1
        return received

    def deliver_visible(self, *consumers: str) -> None:
        """Deliver what is on the queues (of `consumers`) now, without letting time pass."""
        for _ in range(50):
            if not self.deliver(*consumers):
                return

    def drive(self, max_steps: int = 300) -> None:
        """Deliver, sweep and let time pass until nothing is left to do (or note that it never ends).

        Time jumps to the next moment anything is due; the sweeper runs whenever it has something due
        (a sweep with nothing due only reads, so the minutes in between are skipped). The actors act
        whenever nothing is left to deliver, before time jumps."""
        start = time.time()
        for _ in range(max_steps):
            if self.deliver() or any(actor() for actor in self.actors):
                continue
            messages, sweeps = self.next_events()
            if not messages and not sweeps:
                return
            at = min(messages + sweeps)
            if at - start > HORIZON_SECONDS:
                break
            if at > time.time():
                self.clock.shift(at - time.time() + 0.5)
            if sweeps and min(sweeps) <= time.time():
                self.sweep()
        self.errors.append(f"not quiescent after {max_steps} steps / {time.time() - start:.0f} s")

    # --- reading the world (the harness's own requests: never faulted) ---

    def scan(self, table: defs.Table) -> list[dict[str, Any]]:
        client, items, request = self.svc.runs.client, [], {"TableName": os.environ[table.env_var]}
        while True:
            page = client.scan(**request, ConsistentRead=True)
            items += [{k: _value(v) for k, v in item.items()} for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                return items
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def runs(self) -> list[dict[str, Any]]:
        """The runs as stored, with the id their key holds."""
        return [
            {**item, "id": item["pk"].rpartition("#")[2]} for item in self.scan(defs.RUNS) if "status" in item
        ]

    def only_run(self) -> dict[str, Any] | None:
        runs = self.runs()
        return runs[0] if len(runs) == 1 else None

    def outcome_document(self, run: dict[str, Any]) -> str | None:
        if run.get("outcome_ref"):
            try:
                return self.svc.blobs.get(run["outcome_ref"])
            except Exception:
                return None
        return run.get("outcome_json")

    def observe(self) -> None:
        for run in self.runs():
            document = self.outcome_document(run) or ""
            seen = (run["status"], hashlib.sha256(document.encode()).hexdigest()[:12])
            history = self.history.setdefault(run["id"], [])
            if not history or history[-1] != seen:
                history.append(seen)

    def _admit_holding_its_slots(self, *args: Any) -> Any:
        """`admission.admit`, checking that the run it starts holds every concurrency slot it lists."""
        started = admission.admit(*args)
        if started is not None:
            with acting_as(None):
                held = {(c["scope"], c["entry"]): c for c in self.scan(defs.CONCURRENCY)}
            for slot in started.slots:
                scope, shard = slot.rsplit("|", 1)
                if holder_name(started.id) not in held.get((scope, f"{HELD}{int(shard):04d}"), {}):
                    self.errors.append(f"run {started.id} started without the slot {slot} it lists")
        return started

    def executions(self, run_id: str | None = None) -> int:
        return len(self.execution_attempts(run_id))

    def execution_attempts(self, run_id: str | None = None) -> list[int]:
        """The attempts that executed: the `tally` body's, and the envelopes sent to the agent (an async
        run executes when its agent is sent it)."""
        lines = self.executions_file.read_text().splitlines() if self.executions_file.exists() else []
        executed = [(rid, int(attempt)) for rid, attempt in (line.split() for line in lines)]
        executed += [(sent["run_id"], sent["attempt"]) for sent in self.envelopes()]
        return [attempt for rid, attempt in executed if run_id is None or rid == run_id]

    def envelopes(self) -> list[dict[str, Any]]:
        """What the agent was sent, in order."""
        return [json.loads(request.body) for request in list(self.agent.received)]

    def hidden_until(self, queue: str) -> list[float]:
        """When the queue's messages are (or become) receivable: moto's own state, on the virtual clock."""
        name = self.queue_url(queue).rsplit("/", 1)[1]
        backend = sqs_backends[DEFAULT_ACCOUNT_ID][os.environ["AWS_DEFAULT_REGION"]]
        messages = list(backend.queues[name]._messages)
        return [max(m.visible_at, m.delayed_until or 0) / 1000 for m in messages]

    def next_events(self) -> tuple[list[float], list[float]]:
        """When messages become receivable, and when the sweeper has something due: a run, a pending
        callback whose message may be lost, a concurrency recheck."""
        from runplane.logic.callbacks import OVERDUE_AFTER_SECONDS

        messages = [at for f in defs.FUNCTIONS if f.queue for at in self.hidden_until(f.queue)]
        sweeps = [run["due_at"] for run in self.runs() if "due_at" in run]
        sweeps += [
            d["next_attempt_at"] + OVERDUE_AFTER_SECONDS
            for d in self.scan(defs.CALLBACKS)
            if d.get("state") == "pending" and "next_attempt_at" in d
        ]
        sweeps += [c["recheck_at"] for c in self.scan(defs.CONCURRENCY) if "recheck_at" in c]
        return messages, sweeps

    def parked(self, queue: str) -> int:
        return len(self.hidden_until(queue))

    # --- the invariants ---

    def violations(self, expect: Expect) -> list[str]:
        """Every invariant the scenario broke, as sentences (empty: all held)."""
        problems = list(self.errors)
        runs = self.runs()
        if len(runs) != expect.runs:
            problems.append(f"{len(runs)} runs stored, expected {expect.runs}")
        problems += self._api_violations(runs, expect)
        for run in runs:
            problems += self._run_violations(run, expect)
        problems += self._accounting_violations(runs)
        if all(_terminal(run["status"]) for run in runs) and (leftover := self._concurrency_left()):
            problems.append(f"concurrency entries left after every run ended: {leftover}")
        for queue in ("intake-dlq", "callbacks-dlq"):
            if count := self.parked(queue):
                problems.append(f"{count} message(s) parked in {queue}")
        return problems

    def _concurrency_left(self) -> list[str]:
        """Queue entries and slot holders left. A crash may leave a holder whose run ended: the sweeper's
        recheck gives it back once the scope needs the room (`admission.reclaim`), so it is asked to
        first; what it leaves is lost."""

        def left() -> tuple[list[str], set[str]]:
            entries = self.scan(defs.CONCURRENCY)
            held = {c["scope"] for c in entries if any(name.startswith(HOLDER) for name in c)}
            return [c["entry"] for c in entries if c["entry"].startswith(WAIT)], held

        waiting, held = left()
        if held:
            with acting_as(None):
                for scope in held:
                    admission.reclaim(scope, time.time() + 2 * admission.STALE_SECONDS)
            waiting, held = left()
        return waiting + [f"a slot of {scope}" for scope in sorted(held)]

    def _api_violations(self, runs: list[dict[str, Any]], expect: Expect) -> list[str]:
        problems = []
        for answer in self.answers:
            if answer.stored and answer.status is not None and answer.status >= 300:
                problems.append(f"a request that stored its run was answered {answer.status}: {answer.body}")
            if answer.status is not None and answer.status >= 500 and not isinstance(answer.body, dict):
                problems.append(f"a {answer.status} answer is not JSON: {answer.body!r}")
        if expect.accepted:
            ids = {a.body.get("id") for a in self.answers if a.status == 202 and isinstance(a.body, dict)}
            if len(ids) != 1 or (runs and ids != {runs[0]["id"]}):
                problems.append(f"the run's request was answered 202 with ids {sorted(map(str, ids))}")
        return problems

    def _run_violations(self, run: dict[str, Any], expect: Expect) -> list[str]:
        problems = []
        run_id, status = run["id"], run["status"]
        if status != expect.status:
            problems.append(f"run ended {status}, expected {expect.status}")
        history = self.history.get(run_id, [])
        ended = [seen for seen in history if _terminal(seen[0])]
        if len(set(ended)) > 1:
            problems.append(f"the ended run changed afterwards: {ended}")
        problems += self._execution_violations(run, expect)
        document = self.outcome_document(run)
        outcome = json.loads(document) if document else None
        if _terminal(status) and outcome is None:
            problems.append("the ended run names no readable outcome")
        code = ((outcome or {}).get("error") or {}).get("code")
        if expect.code and code != expect.code:
            problems.append(f"error code {code}, expected {expect.code}")
        if outcome and outcome.get("outputs") and outcome["outputs"].get("attempt") != run.get("attempt"):
            problems.append(
                f"the outcome is attempt {outcome['outputs'].get('attempt')}'s, the run's is {run.get('attempt')}"
            )
        with acting_as(None):
            got = self.api.get(f"/v1/run/{run_id}")
        state = got.json() if got.status == 200 else {}
        if got.status != 200 or state.get("status") != status:
            problems.append(f"GET answered {got.status} {state.get('status')}, the item says {status}")
        elif outcome is not None and (state.get("result") or {}).get("outputs") != outcome.get("outputs"):
            problems.append("GET's outputs differ from the outcome the item names")
        if run.get("callback_url"):
            problems += self._callback_violations(run, state)
        return problems

    def _execution_violations(self, run: dict[str, Any], expect: Expect) -> list[str]:
        """Once, or under the crash rule once more for each worker lost holding the lease after the body
        ran (none more when the runnable is not retried; fewer when the takeover kept its outcome)."""
        attempts = self.execution_attempts(run["id"])
        lost = [
            c.point
            for c in self.crashes
            if c.component == "worker" and c.status == "running" and c.body_started
        ]
        most = expect.executions + (len(lost) if expect.retried_when_lost else 0)
        problems = []
        if not expect.executions <= len(attempts) <= most:
            wanted = expect.executions if most == expect.executions else f"{expect.executions} to {most}"
            problems.append(
                f"body executed {len(attempts)} times {attempts}, expected {wanted}; workers lost after it ran: {lost}"
            )
        if attempts != sorted(set(attempts)):
            problems.append(f"executions repeat an attempt: {attempts}")
        return problems

    def _callback_violations(self, run: dict[str, Any], state: dict[str, Any]) -> list[str]:
        received = [r for r in self.receiver.received if json.loads(r.body).get("id") == run["id"]]
        if not received:
            return ["no callback was delivered"]
        problems = []
        expected_id = "msg_" + run["id"].replace("-", "")
        if ids := {r.headers.get("webhook-id") for r in received} - {expected_id}:
            problems.append(f"callbacks carried other webhook-ids: {ids}")
        from runplane.logic.callbacks import callback_secret

        with acting_as(None):
            secret = callback_secret(self.account_id).secret
        for request in received:
            try:
                with time_machine.travel(request.at, tick=False):  # checked as it arrived
                    Webhook(secret).verify(request.body, request.headers)
            except Exception as error:
                problems.append(f"a callback's signature does not verify: {error}")
        bodies = [json.loads(r.body) for r in received]
        if early := [body["status"] for body in bodies if Status(body["status"]) not in TERMINAL]:
            problems.append(f"callbacks were sent before the run ended: {early}")
        last = json.loads(received[-1].body)
        if last.get("status") != run["status"] or last.get("result") != state.get("result"):
            problems.append(f"the last callback says {last.get('status')}, GET says {state.get('status')}")
        deliveries = [d for d in self.scan(defs.CALLBACKS) if d.get("run_id") == run["id"]]
        if [d.get("state") for d in deliveries] != ["succeeded"]:
            problems.append(f"deliveries: {[d.get('state') for d in deliveries]}")
        return problems

    def _accounting_violations(self, runs: list[dict[str, Any]]) -> list[str]:
        with acting_as(None):
            account = self.api.get("/v1/account").json()
            usage = self.api.get("/v1/account/usage").json()
        problems = []
        budgeted = account["credits"]["limit_runs"] is not None or account["credits"]["limit_usd"] is not None
        if (used := account["credits"]["used_runs"]) != (
            len(runs) if budgeted else 0
        ):  # logic/runs.py, BUDGET_SECONDS
            problems.append(f"credits.used_runs is {used} for {len(runs)} runs (budget: {budgeted})")
        outcomes = [json.loads(d) for run in runs if (d := self.outcome_document(run))]
        cost = sum(o.get("cost_usd") or 0 for o in outcomes)
        if abs(account["credits"]["used_usd"] - cost) > 1e-9:
            problems.append(f"credits.used_usd is {account['credits']['used_usd']}, the outcomes cost {cost}")
        tokens = sum(u.get("prompt_tokens", 0) for o in outcomes for u in o.get("usage", []))
        if usage["total_input_tokens"] != tokens or abs(usage["total_token_cost_usd"] - cost) > 1e-9:
            problems.append(
                f"the day's usage is {usage['total_input_tokens']} input tokens ${usage['total_token_cost_usd']},"
                f" the outcomes {tokens} and ${cost}"
            )
        return problems


def wait_until(condition: Callable[[], object], seconds: float = 10) -> None:
    """Real time: for another thread (a worker) to get somewhere."""
    until = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > until:
            raise AssertionError("the condition never came true")
        time.sleep(0.005)


def _terminal(status: str) -> bool:
    return Status(status).terminal


def _value(attribute: dict[str, Any]) -> Any:
    """A DynamoDB attribute value as plain Python (numbers as int or float)."""
    ((kind, value),) = attribute.items()
    if kind == "N":
        return int(value) if value.lstrip("-").isdigit() else float(value)
    return value


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


@dataclass(frozen=True)
class Expect:
    """How a flow ends when every fault is recovered from."""

    status: str = "completed"
    code: str | None = None
    executions: int = 1  # of the body, before the crash rule
    retried_when_lost: bool = True  # a worker lost after the body ran: the run is executed again
    runs: int = 1
    accepted: bool = False  # the flow's run was asked for over the API: one 202 with its id


@dataclass
class Report:
    """One scenario: the fault, whether it fired, and what broke."""

    flow: str
    point: str | None
    mode: str | None
    fired: bool
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0
