"""Async agents against sync ones: how long a run holds a worker, and what an async run's reports cost.

    .venv/bin/python bench/async_agents.py [--lengths 1 10 60] [--every 60] [--heartbeat 300]
                                           [--hours 1] [--repeat 10]

The real api and worker handlers run against moto in this process; the agent is a real HTTP server on
loopback. For each run length L, in real time:

- sync: an `http` runnable whose agent answers the POST after L seconds with the final report; the worker
  invocation is held for all of it;
- async: the same runnable with `mode: async`; the agent accepts the POST at once (202), reports `{}`
  every `--every` seconds while the run lasts, and L seconds after the start POSTs the final report to
  the run's report URL with its run token (through the api handler).

Both run with the defaults: the per-key rate limit and the account's concurrency limit on.

The worker's busy time is the worker handler's invocation, timed around the call the event source mapping
makes (what Lambda bills). AWS requests are counted with botocore `before-call` events, DynamoDB units
computed by bench/capacity.py from the items themselves (moto's ConsumedCapacity is a fixed figure).

Then each kind of report on its own (a heartbeat that extends the agent's lease, one that does not, a
progress report with state and log lines, the final report), and a run of `--hours` with a heartbeat
`{}` every `--every` seconds, the clock moved forward between reports with time-machine (the reports are
real; only the waiting is skipped), next to what the per-report costs add up to. Prices: us-east-1 list
prices as in docs/operations.md; the worker's memory from runplane.definitions.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from capacity import Units
from inprocess import moto_backed
from runplane import definitions as defs
from runplane.settings import Settings

# us-east-1 on demand, as in docs/operations.md
WRU = 0.625e-6
RRU = 0.125e-6
SQS = 0.40e-6
API_GATEWAY = 3.50e-6
LAMBDA_REQUEST = 0.20e-6
LAMBDA_GB_SECOND = 0.0000133334  # arm64
MAX_SYNC_SECONDS = Settings.model_fields["max_run_seconds"].default  # the longest a sync run may last
WORKER_GB = defs.function("worker").memory_mb / 1024
API_GB = defs.function("api").memory_mb / 1024

USAGE = {"provider": "openai", "model": "gpt-4o", "prompt_tokens": 100, "completion_tokens": 20}
FINAL = {"outputs": {"answer": 42}, "usage": [USAGE]}
PROGRESS = {"state": {"step": 3, "phase": "reading"}, "logs": [f"fetched page {n}" for n in range(10)]}
PUBLIC_URL = "https://runplane.example"
EVENT_SOURCE_MAPPING = {"ReceiveMessage", "DeleteMessageBatch", "GetQueueAttributes"}

label = {"now": "setup"}  # who makes the requests now: one thing at a time, whatever the thread
calls: Counter[tuple[str, str, str]] = Counter()
units = Units(lambda: label["now"])


def count(model: Any, **_: Any) -> None:
    name = label["now"]
    if name == "worker" and model.name in EVENT_SOURCE_MAPPING:
        name = "esm"  # the event source mapping's receive and delete (the Lambda service's, in AWS)
    calls[(name, model.service_model.service_name, model.name)] += 1


@dataclass
class Made:
    """What one run, or one report, made: requests by (function, service, operation), units, seconds."""

    requests: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    wru: float = 0.0
    rru: float = 0.0
    worker_seconds: float = 0.0
    api_seconds: float = 0.0  # the api function's handling: the submit and the reports
    api_calls: int = 0  # requests through API Gateway (each an api function invocation)
    worker_calls: int = 0

    def __add__(self, other: Made) -> Made:
        return Made(
            self.requests + other.requests,
            self.wru + other.wru,
            self.rru + other.rru,
            self.worker_seconds + other.worker_seconds,
            self.api_seconds + other.api_seconds,
            self.api_calls + other.api_calls,
            self.worker_calls + other.worker_calls,
        )

    def times(self, n: float) -> Made:
        return Made(
            Counter({k: v * n for k, v in self.requests.items()}),
            self.wru * n,
            self.rru * n,
            self.worker_seconds * n,
            self.api_seconds * n,
            self.api_calls * n,
            self.worker_calls * n,
        )

    def aws_requests(self) -> float:
        """Requests of Runplane's functions (the event source mapping's left out, as in aws_requests.py)."""
        return sum(v for (f, _, _), v in self.requests.items() if f != "esm")

    def sqs(self) -> float:
        return sum(v for (_, service, _), v in self.requests.items() if service == "sqs")

    def cost(self) -> dict[str, float]:
        """Dollars, by item."""
        return {
            "DynamoDB": self.wru * WRU + self.rru * RRU,
            "SQS": self.sqs() * SQS,
            "API Gateway": self.api_calls * API_GATEWAY,
            "Lambda requests": (self.api_calls + self.worker_calls) * LAMBDA_REQUEST,
            "api GB-s": self.api_seconds * API_GB * LAMBDA_GB_SECOND,
            "worker GB-s": self.worker_seconds * WORKER_GB * LAMBDA_GB_SECOND,
        }

    def dollars(self) -> float:
        return sum(self.cost().values())


def collect(name: str, action: Any) -> tuple[Any, Made]:
    """Run `action` as `name` and return its answer and what it made (with its wall time)."""
    calls.clear()
    units.clear()
    label["now"] = name
    began = time.perf_counter()
    try:
        answer = action()
    finally:
        took = time.perf_counter() - began
        label["now"] = "setup"
    made = Made(
        Counter(calls),
        sum(v for (f, _), v in units.wru.items() if f == name),
        sum(v for (f, _), v in units.rru.items() if f == name),
    )
    if name == "worker":
        made.worker_seconds, made.worker_calls = timed["seconds"], 1
    else:
        made.api_seconds, made.api_calls = took, 1
    calls.clear()
    units.clear()
    return answer, made


timed = {"seconds": 0.0}


class Bench:
    def __init__(self) -> None:
        from runplane.local.poller import Poller
        from runplane.logic.keys import create_key

        from tests.conftest import Api

        self.api = Api(create_key("bench").token)
        self.agent_api = Api(None)  # an agent: no API key, its run token
        self.worker = Poller(defs.function("worker"), wait_seconds=0)
        handler = self.worker.handler

        def timed_handler(event: Any, context: Any) -> Any:
            began = time.perf_counter()
            try:
                return handler(event, context)
            finally:
                timed["seconds"] = time.perf_counter() - began

        self.worker.handler = timed_handler
        self.hand_offs: list[float] = []  # the worker's busy seconds of every async run

    def runnable(self, name: str, config: dict[str, Any], timeout: int) -> str:
        spec = {"name": name, "kind": "http", "config": config, "timeout_seconds": timeout}
        reply = self.api.post("/v1/runnables", spec)
        assert reply.status == 201, reply.text
        return reply.json()["id"]

    def submit(self, runnable: str) -> tuple[str, Made]:
        reply, made = collect(
            "api", lambda: self.api.post(f"/v1/runnable/{runnable}/runs", {"inputs": {"topic": "tides"}})
        )
        assert reply.status == 202, reply.text
        return reply.json()["id"], made

    def execute(self) -> Made:
        polled, made = collect("worker", self.worker.poll_once)
        assert polled == 1, "no run in the dispatch queue"
        return made

    def report(self, sent: dict[str, Any], body: dict[str, Any]) -> tuple[dict[str, Any], Made]:
        path = urlsplit(sent["report_url"]).path
        reply, made = collect("report", lambda: self.agent_api.post(path, body, token=sent["run_token"]))
        assert reply.status == 200, reply.text
        return reply.json(), made

    def state(self, run_id: str) -> dict[str, Any]:
        return self.api.get(f"/v1/run/{run_id}").json()

    def sync_run(self, agent_url: str, length: float) -> tuple[Made, dict[str, Any]]:
        runnable = self.runnable("sync agent", {"url": agent_url}, int(length) + 60)
        run_id, submitted = self.submit(runnable)
        executed = self.execute()
        ended = self.state(run_id)
        assert ended["status"] == "completed", ended
        return submitted + executed, ended

    def async_run(
        self, agent: Any, length: float, heartbeat: int, every: float
    ) -> tuple[Made, dict[str, Any]]:
        """An async run of `length` seconds whose agent reports `{}` every `every` seconds, then the end."""
        config = {"url": agent.url, "mode": "async", "heartbeat_seconds": heartbeat}
        runnable = self.runnable("async agent", config, int(length) + 60)
        run_id, made = self.submit(runnable)
        began = time.monotonic()
        made += self.execute()
        self.hand_offs.append(made.worker_seconds)
        sent = json.loads(agent.received[-1].body)
        assert self.state(run_id)["status"] == "running"
        beat = every
        while beat < length:  # the agent works, and says so
            time.sleep(max(0.0, beat - (time.monotonic() - began)))
            made += self.report(sent, {})[1]
            beat += every
        time.sleep(max(0.0, length - (time.monotonic() - began)))
        answer, final = self.report(sent, FINAL)
        assert answer["status"] == "completed", answer
        return made + final, self.state(run_id)


def seconds_between(state: dict[str, Any], start: str, end: str) -> float:
    from datetime import datetime

    return (datetime.fromisoformat(state[end]) - datetime.fromisoformat(state[start])).total_seconds()


def per_million(dollars: float) -> str:
    return f"${dollars * 1e6:,.2f}"


def describe(made: Made) -> str:
    parts = Counter()
    for (function, _, operation), n in made.requests.items():
        if function != "esm":
            parts[operation] += n
    return ", ".join(f"{op} {n:g}" for op, n in sorted(parts.items()))


def heartbeat_schedule(hours: float, every: float, heartbeat: int) -> tuple[int, int]:
    """(heartbeats that extend the lease, heartbeats that write nothing) in a run of `hours` reporting `{}`
    every `every` seconds, by logic/agent_reports._lease: a report extends the lease to now + heartbeat
    when that moves it by a third of a heartbeat or more. The final report comes at the end."""
    length = hours * 3600
    lease_until, extended, fresh = float(heartbeat), 0, 0
    at = every
    while at < length - 1e-9:
        if at + heartbeat - lease_until >= heartbeat / 3:
            lease_until, extended = at + heartbeat, extended + 1
        else:
            fresh += 1
        at += every
    return extended, fresh


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", type=float, nargs="+", default=[1.0, 10.0, 60.0], help="run lengths, s")
    parser.add_argument("--every", type=float, default=60.0, help="the agent's heartbeat interval, s")
    parser.add_argument("--heartbeat", type=int, default=300, help="the runnable's heartbeat_seconds")
    parser.add_argument("--hours", type=float, default=1.0, help="the long async run's length")
    parser.add_argument("--repeat", type=int, default=10, help="runs of each single-report measurement")
    args = parser.parse_args()
    with moto_backed(RUNPLANE_PUBLIC_URL=PUBLIC_URL, RUNPLANE_RUNNABLE_PACKAGES="tests.fixtures.runnables"):
        from runplane.adapters import aws

        aws.session().events.register("before-call", count)
        units.register(aws.session().events)
        aws._client.cache_clear()  # clients copy the session's handlers when created
        from tests.receiver import Answer, receiving

        bench = Bench()
        print(
            f"worker {defs.function('worker').memory_mb} MB, api {defs.function('api').memory_mb} MB; "
            "defaults: per-key rate limit and account max_concurrency on"
        )
        with (
            receiving(Answer(status=202, body=b"")) as async_agent,
            receiving(Answer(body=json.dumps(FINAL).encode())) as quick_agent,
        ):
            bench.sync_run(quick_agent.url, 0)  # warm: clients, the key cache, the signing secret
            bench.async_run(async_agent, 0, args.heartbeat, args.every)
            rows = []
            for length in args.lengths:
                with receiving(Answer(delay=length, body=json.dumps(FINAL).encode())) as slow_agent:
                    sync, sync_state = bench.sync_run(slow_agent.url, length)
                async_, async_state = bench.async_run(async_agent, length, args.heartbeat, args.every)
                rows.append((length, sync, sync_state, async_, async_state))
            singles = single_reports(bench, async_agent, args.repeat)
            long_run = hour_run(bench, async_agent, args.hours, args.every, args.heartbeat)
        report_tables(rows, singles, long_run, args, bench.hand_offs[1:])  # the first one warmed up


def single_reports(bench: Bench, agent: Any, repeat: int) -> dict[str, list[Made]]:
    """Each kind of report on its own, on async runs whose heartbeat_seconds is 3 (a lease is extended by
    a report 1 s or more after the last extension): what it costs does not depend on the interval."""
    kinds: dict[str, list[Made]] = {
        "heartbeat {}, lease extended": [],
        "heartbeat {}, lease fresh (nothing written)": [],
        "progress: state + 10 log lines": [],
        "progress + lease extended": [],
        "final: outputs + usage": [],
    }
    for _ in range(repeat):
        runnable = bench.runnable(
            "reporting agent", {"url": agent.url, "mode": "async", "heartbeat_seconds": 3}, 60
        )
        bench.submit(runnable)
        bench.hand_offs.append(bench.execute().worker_seconds)
        sent = json.loads(agent.received[-1].body)
        _, made = bench.report(sent, {})
        kinds["heartbeat {}, lease fresh (nothing written)"].append(made)
        _, made = bench.report(sent, PROGRESS)
        kinds["progress: state + 10 log lines"].append(made)
        time.sleep(1.1)
        _, made = bench.report(sent, {})
        kinds["heartbeat {}, lease extended"].append(made)
        time.sleep(1.1)
        _, made = bench.report(sent, PROGRESS)
        kinds["progress + lease extended"].append(made)
        answer, made = bench.report(sent, FINAL)
        assert answer["status"] == "completed", answer
        kinds["final: outputs + usage"].append(made)
    return kinds


def typical(made: list[Made]) -> Made:
    """The requests and units of the first (they are checked to be the same every time), the median time."""
    first = made[0]
    for other in made[1:]:
        if other.requests != first.requests or (other.wru, other.rru) != (first.wru, first.rru):
            print(f"  note: a repeat differed: {describe(other)} {other.wru} WRU vs {describe(first)}")
    return Made(
        first.requests,
        first.wru,
        first.rru,
        statistics.median(m.worker_seconds for m in made),
        statistics.median(m.api_seconds for m in made),
        first.api_calls,
        first.worker_calls,
    )


@dataclass
class LongRun:
    measured: Made
    extended: int
    fresh: int
    lengths_seen: float
    status: str


def hour_run(bench: Bench, agent: Any, hours: float, every: float, heartbeat: int) -> LongRun:
    """A run of `hours`, `{}` every `every` seconds, then the final report; the clock is moved forward
    between reports (time-machine), the reports themselves are real requests."""
    import time_machine

    config = {"url": agent.url, "mode": "async", "heartbeat_seconds": heartbeat}
    runnable = bench.runnable("hour agent", config, int(hours * 3600) + 600)
    with time_machine.travel(time.time(), tick=True) as clock:
        run_id, total = bench.submit(runnable)
        total += bench.execute()
        sent = json.loads(agent.received[-1].body)
        began = time.time()
        extended = fresh = 0
        report_by = lease_until(run_id)
        while True:
            clock.shift(every - (time.time() - began) % every)
            if time.time() - began >= hours * 3600 - 1:
                break
            answer, made = bench.report(sent, {})
            assert answer["status"] == "running", answer
            if answer["report_by"] != report_by:
                extended += 1
            else:
                fresh += 1
            report_by = answer["report_by"]
            total += made
        answer, made = bench.report(sent, FINAL)
        assert answer["status"] == "completed", answer
        total += made
        ended = bench.state(run_id)
    return LongRun(
        total, extended, fresh, seconds_between(ended, "created_at", "completed_at"), ended["status"]
    )


def lease_until(run_id: str) -> str:
    """The agent's lease as the report endpoint answers it (report_by)."""
    from datetime import UTC, datetime

    from runplane.logic.services import services

    record = services().runs.get("bench", run_id, consistent=True)
    assert record is not None
    assert record.lease_until is not None
    return datetime.fromtimestamp(record.lease_until, UTC).isoformat().replace("+00:00", "Z")


def report_tables(
    rows: list, singles: dict[str, list[Made]], long_run: LongRun, args: Any, hand_offs: list[float]
) -> None:
    print("\n(a) worker busy time per run: the worker invocation, sync agent answering after L vs async")
    print(
        f"  {'L':>6} {'sync ms':>10} {'async ms':>9} {'sync run, created->completed':>26} {'async run':>10}"
    )
    for length, sync, sync_state, async_, async_state in rows:
        print(
            f"  {length:>5g}s {sync.worker_seconds * 1000:>10.0f} {async_.worker_seconds * 1000:>9.0f}"
            f" {seconds_between(sync_state, 'created_at', 'completed_at'):>25.1f}s"
            f" {seconds_between(async_state, 'created_at', 'completed_at'):>9.1f}s"
        )
    ms = sorted(1000 * t for t in hand_offs)
    print(
        f"  async hand-offs, all {len(ms)}: median {statistics.median(ms):.0f} ms,"
        f" p95 {ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]:.0f} ms, max {ms[-1]:.0f} ms"
    )

    print("\n(b) AWS requests per run (api submit + worker + report endpoint), by function and operation")
    keys = sorted({k for row in rows for made in (row[1], row[3]) for k in made.requests})
    header = "".join(f" | {'sync ' + format(r[0], 'g') + 's':>9} {'async':>6}" for r in rows)
    print(f"  {'function service operation':<40}{header}")
    for key in keys:
        cells = "".join(f" | {r[1].requests[key]:>9g} {r[3].requests[key]:>6g}" for r in rows)
        print(f"  {' '.join(key):<40}{cells}")
    print(
        f"  {'requests (esm left out)':<40}"
        + "".join(f" | {r[1].aws_requests():>9g} {r[3].aws_requests():>6g}" for r in rows)
    )
    print(f"  {'WRU':<40}" + "".join(f" | {r[1].wru:>9.0f} {r[3].wru:>6.0f}" for r in rows))
    print(f"  {'RRU':<40}" + "".join(f" | {r[1].rru:>9.1f} {r[3].rru:>6.1f}" for r in rows))

    print("\n    cost per million runs, by item")
    items = list(rows[0][1].cost())
    for item in [*items, "total"]:
        cells = ""
        for r in rows:
            s, a = (
                (r[1].dollars(), r[3].dollars())
                if item == "total"
                else (r[1].cost()[item], r[3].cost()[item])
            )
            cells += f" | {per_million(s):>10} {per_million(a):>10}"
        print(f"  {item:<18}{cells}")

    print("\n    one report of each kind (api function: API Gateway request, invocation, DynamoDB)")
    print(f"  {'report':<46} {'requests':>8} {'WRU':>5} {'RRU':>5} {'api ms':>7} {'per 1M':>8}  operations")
    typicals = {name: typical(made) for name, made in singles.items()}
    for name, made in typicals.items():
        print(
            f"  {name:<46} {made.aws_requests():>8g} {made.wru:>5.0f} {made.rru:>5.1f}"
            f" {made.api_seconds * 1000:>7.1f} {per_million(made.dollars()):>8}  {describe(made)}"
        )

    extended, fresh = heartbeat_schedule(args.hours, args.every, args.heartbeat)
    quiet = [r for r in rows if r[0] <= args.every] or rows[:1]  # async runs that sent no heartbeat
    hand_off = quiet[0][3]  # the submit, the worker and the final report
    computed = (
        hand_off
        + typicals["heartbeat {}, lease extended"].times(extended)
        + typicals["heartbeat {}, lease fresh (nothing written)"].times(fresh)
    )
    measured = long_run.measured
    print(
        f"\n    a {args.hours:g} h async run, `{{}}` every {args.every:g} s, heartbeat_seconds {args.heartbeat}:"
        f" {extended} heartbeats extend the lease, {fresh} write nothing, then the final report"
    )
    print(f"  {'':<34} {'requests':>8} {'WRU':>6} {'RRU':>6} {'API calls':>9} {'per 1M runs':>12}")
    for name, made in (
        ("computed from the single reports", computed),
        ("measured (clock moved forward)", measured),
    ):
        print(
            f"  {name:<34} {made.aws_requests():>8g} {made.wru:>6.0f} {made.rru:>6.1f} {made.api_calls:>9g}"
            f" {per_million(made.dollars()):>12}"
        )
    print(
        f"  measured run: {long_run.status} after {long_run.lengths_seen:.0f} s; {long_run.extended} heartbeats"
        f" wrote the run, {long_run.fresh} did not"
    )
    for item, value in measured.cost().items():
        print(f"    {item:<18} {per_million(value):>12}")

    # sync cost against length: a line through the measured runs
    lengths = [r[0] for r in rows]
    sync_costs = [r[1].dollars() for r in rows]
    slope, intercept = line(lengths, sync_costs)
    async_fixed = statistics.mean(r[3].dollars() for r in quiet)
    beats = extended + fresh
    beat = (
        typicals["heartbeat {}, lease extended"].dollars() * extended
        + typicals["heartbeat {}, lease fresh (nothing written)"].dollars() * fresh
    ) / max(beats, 1)
    print("\n(c) worker Lambda GB-seconds per run and the break-even")
    print(
        f"  {'L':>6} {'sync GB-s':>10} {'async GB-s':>11} {'sync worker $/1M':>17} {'async worker $/1M':>18}"
    )
    for length, sync, _, async_, _ in rows:
        print(
            f"  {length:>5g}s {sync.worker_seconds * WORKER_GB:>10.3f} {async_.worker_seconds * WORKER_GB:>11.3f}"
            f" {per_million(sync.cost()['worker GB-s']):>17} {per_million(async_.cost()['worker GB-s']):>18}"
        )
    print(
        f"  sync run ≈ {per_million(intercept)} + {per_million(slope)} per second of run, per 1M runs"
        " (a least-squares line through the measured lengths)"
    )
    print(
        f"  async run ≈ {per_million(async_fixed)} + ≈ {per_million(beat)} per heartbeat"
        f" (one every {args.every:g} s: {per_million(beat / args.every)} per second of run)"
    )

    def async_cost(length: float) -> float:
        return async_fixed + beat * max(0, math.ceil(length / args.every) - 1)

    even = next(
        (
            n / 100
            for n in range(0, MAX_SYNC_SECONDS * 100)
            if async_cost(n / 100) < intercept + slope * n / 100
        ),
        None,
    )
    if even is None:
        print(f"  break-even: none under {MAX_SYNC_SECONDS} s")
    else:
        print(f"  break-even: async is cheaper from ≈ {even:.2f} s of run")
    hour = args.hours * 3600
    print(
        f"  a {args.hours:g} h run: async {per_million(measured.dollars())} per 1M runs; sync is not possible"
        f" (a sync run may last {MAX_SYNC_SECONDS} s, a worker invocation {defs.WORKER_TIMEOUT_SECONDS} s);"
        f" the sync line would say {per_million(intercept + slope * hour)}"
    )


def line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares: (slope, intercept)."""
    if len(xs) < 2:
        return 0.0, ys[0]
    mx, my = statistics.mean(xs), statistics.mean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


if __name__ == "__main__":
    main()
