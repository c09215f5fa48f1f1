"""How long the sweeper takes to recover a run nobody works on, and what one sweep reads from DynamoDB.

    .venv/bin/python bench/recovery.py [--live 0 100 1000] [--crashed 1000] [--json out.json]
    .venv/bin/python bench/recovery.py --compare before.json after.json

The real api, worker and sweeper handlers run against moto in this process. The clock is time-machine's
(ticking, `time.time` and `datetime.now`, so moto's SQS too); it is moved in steps of the sweeper's
schedule (runplane.definitions: the sweeper every `schedule_minutes`), the sweeper's handler called at each
step, as EventBridge invokes it.

Recovery, in simulated seconds from the moment nobody works on the run to the sweep that re-dispatches it
(or ends it): for each scenario four runs, the first sweep after the loss coming 55, 40, 25 and 10 s later
(the loss at a different moment of the schedule each time):

- worker crashed: the event source mapping received the run's dispatch message and a worker claimed the
  run (admission, a lease of `RUNPLANE_LEASE_SECONDS`), then died (its message stays in flight until its
  visibility timeout, hours later). Its runnable runs again (`retry_on_worker_lost`, the default): the
  sweeper re-dispatches it; or it does not: the sweeper ends it failed `worker_lost`;
- dispatch message lost: a waiting run whose message never reached a worker (due
  `RUNPLANE_REDISPATCH_SECONDS` after its creation);
- async agent silent: an http runnable in `mode: async` handed its run (a loopback agent answering 202),
  then never reported (the lease is the agent's heartbeat, `RUNPLANE_AGENT_HEARTBEAT_SECONDS`);
- many workers crashed at once: `--crashed` runs of one account claimed and lost together; the time until
  the last is re-dispatched, and the sweeps it took.

The sweeper's cost: one sweep (the run, callback and concurrency-recheck indexes of every shard) with N
live runs of one account (waiting, none of them due yet), and the first sweep of the mass crash (all due).
DynamoDB requests are counted with botocore events; read units are computed from the items as DynamoDB
bills them on demand (bench/capacity.py's Units, item sizes by its rules) — a Query with a filter is billed
for every index entry it read before the filter, so the bench reads those again (an unhooked client, the
same key condition, `Limit` = the answer's ScannedCount) to size them.

Before and after a change to the runs table, run it in each tree (a git worktree, its functions/ first on
PYTHONPATH and this file and capacity.py copied in its bench/), each writing --json, then --compare.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from capacity import Units, item_size
from inprocess import moto_backed

SETTINGS = {
    "RUNPLANE_RATE_LIMIT_BURST": "0",  # the bench starts runs faster than a key may
    "RUNPLANE_ACCOUNT_MAX_CONCURRENCY": "0",  # so that every crashed run was claimed (none queued)
    "RUNPLANE_PUBLIC_URL": "https://runplane.example",  # async agents need the report URL
    "RUNPLANE_RUNNABLE_PACKAGES": "tests.fixtures.runnables",
}
FIRST_SWEEP_AFTER = (55.0, 40.0, 25.0, 10.0)  # seconds from the loss to the next sweep, one run each
HORIZON_SECONDS = 6 * 3600  # a run not recovered by then counts as never
ENDED = ("failed", "timeout", "cancelled", "recovered")  # sweep actions that end a run

label = {"now": "setup"}  # who makes the requests now
calls: Counter[tuple[str, str]] = Counter()  # (label, operation) -> DynamoDB requests
query_units: Counter[str] = Counter()  # label -> read units of Query requests, filtered entries included
units = Units(lambda: label["now"])
_query: dict[str, Any] = {}


def _count(model: Any, **_: Any) -> None:
    if model.service_model.service_name == "dynamodb":
        calls[(label["now"], model.name)] += 1


def _before_query(params: dict[str, Any], **_: Any) -> None:
    _query["params"] = copy.deepcopy(params)


def _after_query(parsed: dict[str, Any], **_: Any) -> None:
    query_units[label["now"]] += evaluated_units(_query.pop("params", {}), parsed)


_raw: dict[str, Any] = {}


def evaluated_units(params: dict[str, Any], parsed: dict[str, Any]) -> float:
    """A Query's read units: ceil(4 KB) of every item it read, those its filter dropped included (half for
    an eventually consistent read, which every index read is)."""
    items = parsed.get("Items", [])
    if "FilterExpression" in params and parsed.get("ScannedCount", 0) > len(items):
        request = {k: v for k, v in params.items() if k != "FilterExpression"}
        request["Limit"] = parsed["ScannedCount"]
        used = request["KeyConditionExpression"] + request.get("ProjectionExpression", "")
        for part in ("ExpressionAttributeValues", "ExpressionAttributeNames"):
            kept = {k: v for k, v in request.get(part, {}).items() if re.search(re.escape(k) + r"\b", used)}
            if kept:
                request[part] = kept
            else:
                request.pop(part, None)
        items = _raw["dynamodb"].query(**request)["Items"]
    read = max(1, math.ceil(sum(item_size(item) for item in items) / 4096))
    return read if params.get("ConsistentRead") else read / 2


@contextmanager
def world() -> Iterator[Any]:
    """A fresh moto with every resource, the requests counted, a key for the account `bench`."""
    import boto3

    with moto_backed(**SETTINGS):
        from runplane.adapters import aws
        from runplane.logic import keys, services

        aws.session.cache_clear()
        aws._client.cache_clear()
        events = aws.session().events
        events.register("before-call", _count)
        events.register("before-parameter-build.dynamodb.Query", _before_query)
        events.register("after-call.dynamodb.Query", _after_query)
        units.register(events)
        _raw["dynamodb"] = boto3.session.Session().client("dynamodb")  # not counted
        services.reset()
        keys._cache = keys._PrincipalCache()
        yield Bench(keys.create_key("bench").token)
        aws.session.cache_clear()
        aws._client.cache_clear()


def clear() -> None:
    calls.clear()
    query_units.clear()
    units.clear()


class Bench:
    def __init__(self, token: str):
        from runplane import definitions as defs
        from runplane.local.poller import Poller
        from runplane.logic.services import services

        from tests.conftest import Api

        self.api = Api(token)
        self.account_id = "bench"
        self.worker = Poller(defs.function("worker"), wait_seconds=0)
        self.svc = services()
        self.every = 60.0 * (defs.function("sweeper").schedule_minutes or 1)

    def runnable(self, kind: str = "python", **fields: Any) -> str:
        from runplane.domain.models import RunnableFields
        from runplane.logic.runnables import create_runnable

        config = fields.pop("config", {"function": "echo"})
        spec = RunnableFields(name=f"bench {kind}", kind=kind, config=config, **fields)
        return create_runnable(self.account_id, spec).id

    def start(self, runnable_id: str) -> str:
        label["now"] = "api"
        try:
            reply = self.api.post(f"/v1/runnable/{runnable_id}/runs", {"inputs": {}})
        finally:
            label["now"] = "setup"
        assert reply.status == 202, reply.text
        return reply.json()["id"]

    def record(self, run_id: str) -> Any:
        found = self.svc.runs.get(self.account_id, run_id, consistent=True)
        assert found is not None
        return found

    def purge_dispatches(self) -> None:
        """Delete the visible dispatch messages (lost, as far as a run is concerned)."""
        sqs, url = self.svc.queues.client, self.svc.settings.dispatch_queue_url
        while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
            entries = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)]
            sqs.delete_message_batch(QueueUrl=url, Entries=entries)

    def receive_dispatches(self) -> int:
        """The event source mapping takes the visible dispatch messages; the worker that got them dies."""
        sqs, url, taken = self.svc.queues.client, self.svc.settings.dispatch_queue_url, 0
        while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
            taken += len(messages)
        return taken

    def claim(self, run_id: str) -> None:
        """A worker's claim (admission, its lease), and nothing after it."""
        from runplane.logic import admission

        claimed = admission.admit(self.record(run_id), "crashed-worker", self.svc.settings.lease_seconds)
        assert claimed is not None
        assert claimed.id == run_id, claimed

    def sweep(self) -> dict[str, int]:
        from runplane.handlers import sweeper
        from runplane.local.lambda_context import LocalLambdaContext

        label["now"] = "sweeper"
        try:
            return sweeper.lambda_handler({}, LocalLambdaContext("sweeper", 60))["actions"]
        finally:
            label["now"] = "setup"

    def recovered(self, run_id: str, dispatches: int) -> str | None:
        record = self.record(run_id)
        if record.status.terminal:
            error = (json.loads(record.outcome_json or "{}").get("error") or {}).get("code")
            return f"ended {record.status.value}" + (f" {error}" if error else "")
        if record.dispatches > dispatches:
            return "re-dispatched"
        return None


def recovery(bench: Bench, clock: Any, lose: Callable[[], str]) -> tuple[list[float], str]:
    """For each moment of the schedule: a run lost by `lose` (which returns its id), and the simulated
    seconds from the loss to the sweep that re-dispatched or ended it. (The runs of the moments before
    are re-dispatched again and again meanwhile, nobody executing them: a few more runs the sweeps see.)"""
    seconds: list[float] = []
    how = ""
    for first in FIRST_SWEEP_AFTER:
        run_id = lose()
        lost_at, dispatches = time.time(), bench.record(run_id).dispatches
        due = swept_at = lost_at + first
        while (done := bench.recovered(run_id, dispatches)) is None and due - lost_at <= HORIZON_SECONDS:
            clock.shift(due - time.time())
            swept_at = time.time()  # the sweep's invocation (its own work takes real time)
            bench.sweep()
            due += bench.every
        seconds.append(swept_at - lost_at if done else math.inf)
        how = done or "never"
    return seconds, how


def single_scenarios() -> dict[str, Any]:
    import time_machine

    from tests.receiver import Answer, receiving

    found: dict[str, Any] = {}
    with world() as bench, time_machine.travel(time.time(), tick=True) as clock:
        retried = bench.runnable()
        not_retried = bench.runnable(retry_on_worker_lost=False)

        def crashed(runnable_id: str) -> Callable[[], str]:
            def lose() -> str:
                bench.purge_dispatches()  # what the sweeps sent for the runs before
                run_id = bench.start(runnable_id)
                assert bench.receive_dispatches() == 1
                bench.claim(run_id)
                return run_id

            return lose

        def message_lost() -> str:
            run_id = bench.start(retried)
            bench.purge_dispatches()
            return run_id

        scenarios: dict[str, Callable[[], str]] = {
            "worker crashed, runnable runs again": crashed(retried),
            "worker crashed, retry_on_worker_lost false": crashed(not_retried),
            "dispatch message lost (waiting run)": message_lost,
        }
        with receiving(Answer(status=202, body=b"")) as agent:
            agent_runnable = bench.runnable("http", config={"url": agent.url, "mode": "async"})

            def agent_silent() -> str:
                bench.purge_dispatches()
                run_id = bench.start(agent_runnable)
                assert bench.worker.poll_once() == 1  # the hand-off: then the agent never reports
                held = bench.record(run_id)
                assert (held.status.value, held.lease_owner) == ("running", "agent:1"), held
                return run_id

            scenarios["async agent silent (heartbeat)"] = agent_silent
            for name, lose in scenarios.items():
                seconds, how = recovery(bench, clock, lose)
                found[name] = {"seconds": seconds, "how": how}
        settings = bench.svc.settings
        found["settings"] = {
            "lease_seconds": settings.lease_seconds,
            "redispatch_seconds": settings.redispatch_seconds,
            "agent_heartbeat_seconds": settings.agent_heartbeat_seconds,
            "sweep_every": bench.every,
        }
    return found


def sweep_cost() -> dict[str, Any]:
    """DynamoDB requests and units of the sweep that just ran."""
    requests = {op: n for (who, op), n in calls.items() if who == "sweeper"}
    rru = sum(v for (who, op), v in units.rru.items() if who == "sweeper" and op != "Query")
    return {
        "requests": requests,
        "total_requests": sum(requests.values()),
        "rru": rru + query_units["sweeper"],
        "wru": sum(v for (who, _), v in units.wru.items() if who == "sweeper"),
    }


def mass_crash(count: int) -> dict[str, Any]:
    import time_machine

    with world() as bench, time_machine.travel(time.time(), tick=True) as clock:
        runnable_id = bench.runnable()
        ids = [bench.start(runnable_id) for _ in range(count)]
        assert bench.receive_dispatches() == count
        for run_id in ids:
            bench.claim(run_id)
        lost_at = time.time()
        due, swept, sweeps, first_sweep = lost_at + FIRST_SWEEP_AFTER[0], 0, [], None
        swept_at = due
        while swept < count and due - lost_at <= HORIZON_SECONDS:
            clock.shift(due - time.time())
            clear()
            swept_at = time.time()
            actions = bench.sweep()
            done = actions.get("redispatched", 0) + sum(actions.get(a, 0) for a in ENDED)
            if done and first_sweep is None:
                first_sweep = sweep_cost()
            swept += done
            sweeps.append(done)
            due += bench.every
        records = bench.svc.runs.get_many(bench.account_id, ids, consistent=True)
        assert sum(r.dispatches > 0 for r in records) == swept, "the actions counted other runs"
        return {
            "runs": count,
            "seconds_to_last": swept_at - lost_at if swept >= count else math.inf,
            "per_sweep": sweeps,
            "first_sweep": first_sweep,
        }


def idle_sweeps(sizes: list[int]) -> dict[str, Any]:
    found = {}
    for size in sizes:
        with world() as bench:
            runnable_id = bench.runnable()
            for _ in range(size):
                bench.start(runnable_id)
            bench.purge_dispatches()  # waiting runs, due in redispatch_seconds once looked at
            while bench.sweep().get("dispatch_pending"):  # warm (clients, caches); first looks postponed
                pass
            clear()
            actions = bench.sweep()
            assert not {a for a in actions if a != "errors"}, actions
            found[str(size)] = sweep_cost()
    return found


def tree() -> str:
    import runplane

    root = Path(runplane.__file__).resolve().parents[2]
    commit = subprocess.run(
        ["git", "-C", str(root), "log", "-1", "--format=%h %s"], capture_output=True, text=True
    ).stdout.strip()
    return f"{root} @ {commit[:72]}"


def measure(args: argparse.Namespace) -> dict[str, Any]:
    began = time.perf_counter()
    result = {"tree": tree()}
    print(f"runplane from {result['tree']}", file=sys.stderr)
    result["recovery"] = single_scenarios()
    print(f"  single runs done ({time.perf_counter() - began:.0f} s)", file=sys.stderr)
    result["mass"] = mass_crash(args.crashed)
    print(f"  mass crash done ({time.perf_counter() - began:.0f} s)", file=sys.stderr)
    result["idle"] = idle_sweeps(args.live)
    print(f"  idle sweeps done ({time.perf_counter() - began:.0f} s)", file=sys.stderr)
    return result


def seconds(values: list[float]) -> str:
    if any(math.isinf(v) for v in values):
        return "never"
    return f"{statistics.mean(values):.0f} ({min(values):.0f}-{max(values):.0f})"


def describe(cost: dict[str, Any] | None) -> str:
    if not cost:
        return "-"
    ops = ", ".join(f"{op} {n}" for op, n in sorted(cost["requests"].items()))
    return f"{cost['total_requests']} req ({ops}), {cost['rru']:g} RRU, {cost['wru']:g} WRU"


def report(results: list[dict[str, Any]], names: list[str]) -> None:
    width = 46
    print("\n".join(f"{name}: {result['tree']}" for name, result in zip(names, results, strict=True)))
    settings = results[-1]["recovery"]["settings"]
    print(
        f"lease {settings['lease_seconds']:g} s, redispatch {settings['redispatch_seconds']:g} s, agent "
        f"heartbeat {settings['agent_heartbeat_seconds']} s, a sweep every {settings['sweep_every']:g} s"
    )
    print("\nseconds to recovery, mean (min-max) of 4 moments of the schedule")
    print(f"  {'scenario':<{width}} " + " ".join(f"{name:>16}" for name in names) + "  outcome")
    for scenario in (k for k in results[0]["recovery"] if k != "settings"):
        row = [seconds(r["recovery"][scenario]["seconds"]) for r in results]
        how = results[-1]["recovery"][scenario]["how"]
        print(f"  {scenario:<{width}} " + " ".join(f"{v:>16}" for v in row) + f"  {how}")
    mass = [r["mass"] for r in results]
    title = f"{mass[0]['runs']} crashed at once, until the last"
    cells = " ".join(f"{m['seconds_to_last']:>16.0f}" for m in mass)
    print(f"  {title:<{width}} {cells}  sweeps: " + " / ".join(str(m["per_sweep"]) for m in mass))
    print("\nDynamoDB per sweep (one account's live runs, none due)")
    for size in results[0]["idle"]:
        for name, result in zip(names, results, strict=True):
            print(f"  N={size:<6} {name:<8} {describe(result['idle'][size])}")
    print(f"\nthe first sweep of the mass crash ({mass[0]['runs']} due)")
    for name, m in zip(names, mass, strict=True):
        print(f"  {name:<8} {describe(m['first_sweep'])}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--live", type=int, nargs="+", default=[0, 100, 1000], help="live runs per sweep")
    parser.add_argument("--crashed", type=int, default=1000, help="runs whose workers crash at once")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--compare", nargs="+", help="JSON files of earlier runs: print them side by side")
    args = parser.parse_args()
    if args.compare:
        results = [json.loads(Path(path).read_text()) for path in args.compare]
        report(results, [Path(path).stem for path in args.compare])
        return
    result = measure(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    report([result], ["this tree"])


if __name__ == "__main__":
    main()
