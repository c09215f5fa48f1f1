"""AWS requests per run, by function, service and operation (botocore `before-call` events, moto in-process).

.venv/bin/python bench/aws_requests.py [--only progress]

The watchable-runs scenario also gives DynamoDB write and read units per run (bench/capacity.py computes
them from the items, as DynamoDB bills them on demand: moto's own ConsumedCapacity is a fixed figure).
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import Counter
from contextvars import ContextVar

from capacity import Units
from inprocess import moto_backed
from runplane.adapters import aws

calls: Counter[tuple[str, str, str]] = Counter()
# a context variable, not a thread-local: the callbacks function's threads (asyncio.to_thread) inherit it
component: ContextVar[str] = ContextVar("component", default="setup")


EVENT_SOURCE_MAPPING = {"ReceiveMessage", "DeleteMessageBatch", "GetQueueAttributes"}


def count(model, **_: object) -> None:
    name = component.get()
    if name in ("worker", "callbacks") and model.name in EVENT_SOURCE_MAPPING:
        name = "esm"  # made by the Lambda event source mapping in AWS (the local poller here)
    calls[(name, model.service_model.service_name, model.name)] += 1


def as_component(name: str, action):
    token = component.set(name)
    try:
        return action()
    finally:
        component.reset(token)


def table(title: str) -> None:
    rows = sorted((k, v) for k, v in calls.items() if k[0] != "setup")
    print(f"\n{title}")
    print(f"  {'function':<10} {'service':<9} {'operation':<22} {'requests':>8}")
    for (function, service, operation), n in rows:
        print(f"  {function:<10} {service:<9} {operation:<22} {n:>8}")
    print(f"  {'total':<43} {sum(v for _, v in rows):>8}")
    calls.clear()


def one_async_run(api, runnable: str, headers: dict[str, str]) -> Counter[str]:
    """Requests by the api and worker functions for one async run, submitted and executed."""
    from tests.conftest import drain

    calls.clear()
    as_component("api", lambda: api.post(f"/v1/runnable/{runnable}/runs", {"inputs": {}}, headers=headers))
    as_component("worker", lambda: drain("worker"))
    made: Counter[str] = Counter()
    for (function, _, _), n in calls.items():
        if function in ("api", "worker"):
            made[function] += n
    calls.clear()
    return made


def tenancy_features(token: str) -> None:
    """What each admission feature adds to an uncontended async run, switched on one after another."""
    import os

    from runplane.logic import keys, services
    from runplane.logic.accounts import set_concurrency, set_credits

    from tests.conftest import Api, make_runnable

    def rate_limit(burst: str) -> None:
        os.environ["RUNPLANE_RATE_LIMIT_BURST"] = burst
        services.reset()
        keys._cache = keys._PrincipalCache()  # keys carry their rate limit in the cache

    api = Api(token)
    echo = make_runnable("bench", "echo")
    limited = make_runnable("bench", "echo", max_concurrency=5)
    steps = [
        (
            "nothing: no rate limit, budget or concurrency limit",
            lambda: set_concurrency("bench", 0),
            echo,
            {},
        ),
        ("+ per-key rate limit", lambda: rate_limit("40"), echo, {}),
        ("+ Idempotency-Key", lambda: None, echo, {"Idempotency-Key": "k"}),
        ("+ credit budget", lambda: set_credits("bench", None, 10**6), echo, {"Idempotency-Key": "k"}),
        ("+ account max_concurrency", lambda: set_concurrency("bench", None), echo, {"Idempotency-Key": "k"}),
        ("+ runnable max_concurrency", lambda: None, limited, {"Idempotency-Key": "k"}),
    ]
    rate_limit("0")
    print("\nadmission features, added one after another (one uncontended async run each)")
    print(f"  {'':<52} {'api':>5} {'worker':>7} {'total':>6} {'added':>6}")
    before = None
    for n, (label, switch_on, runnable, headers) in enumerate(steps):
        switch_on()
        headers = {k: f"{v}-{n}" for k, v in headers.items()}  # a fresh key: not a replay
        one_async_run(api, runnable, headers)  # warm caches (key, rate window) as a warm function has them
        headers = {k: f"{v}-{n}b" for k, v in headers.items()}
        made = one_async_run(api, runnable, headers)
        total = made["api"] + made["worker"]
        added = "" if before is None else f"{total - before:+d}"
        print(f"  {label:<52} {made['api']:>5} {made['worker']:>7} {total:>6} {added:>6}")
        before = total


units = Units(lambda: component.get())


SCENARIOS = {  # the `reporting` fixture runnable's inputs; the same size for every row
    "no progress, 10 s": {"steps": 10, "pause": 1.0, "report": False},
    "10 states + 100 lines over 10 s": {"steps": 10, "pause": 1.0, "report": True},
    "10 states + 100 lines at once": {"steps": 10, "pause": 0.0, "report": True},
    "no progress, instant": {"steps": 10, "pause": 0.0, "report": False},
}


def watched_runs(token: str) -> None:
    """Requests and DynamoDB units per run of the `reporting` runnable, with and without progress: the api
    function's submit and the worker's execution; then, apart, one reading of the whole run (GET of its
    state, of its events and of its log: what a watcher that comes once it ended pays)."""
    from runplane.logic import services

    from tests.conftest import Api, drain, make_runnable

    api = Api(token)
    runnable = make_runnable("bench", "reporting")
    api.post(f"/v1/runnable/{runnable}/runs", {"inputs": {"steps": 0}})  # warm: the key cache
    drain("worker")
    rows: dict[str, tuple[Counter, Counter, Counter, str]] = {}
    for label, inputs in SCENARIOS.items():
        calls.clear()
        units.clear()
        run_id = as_component(
            "api", lambda i=inputs: api.post(f"/v1/runnable/{runnable}/runs", {"inputs": i}).json()["id"]
        )
        as_component("worker", lambda: drain("worker"))
        for path in ("", "/events", "/logs"):
            reply = as_component("reader", lambda p=path, r=run_id: api.get(f"/v1/run/{r}{p}"))
            assert reply.status == 200, reply.text
        record = services.services().runs.get("bench", run_id, consistent=True)
        batches, _ = services.services().events.after("bench", run_id, 0, limit=1000)
        stored = f"seq {record.seq}, log {record.log_bytes} B, {len({e.seq for e in batches})} events stored"
        made = Counter({(f, o): n for (f, _, o), n in calls.items() if f in ("api", "worker", "reader")})
        rows[label] = (made, Counter(units.wru), Counter(units.rru), stored)
        calls.clear()

    print("\nwatchable runs: requests / DynamoDB write units / read units per run, by function and operation")
    print("  " + " | ".join(f"{label}: {row[3]}" for label, row in rows.items()))
    keys = sorted({k for made, wru, _, _ in rows.values() for k in (*made, *wru)})
    print(f"  {'':<26}" + "".join(f" | {label[:31]:>31}" for label in rows))

    def cells(pick) -> str:
        return "".join(
            f" | {sum(made[k] for k in pick):>6} {sum(wru[k] for k in pick):>7.0f} {sum(rru[k] for k in pick):>6.1f}"
            + " " * 9
            for made, wru, rru, _ in rows.values()
        )

    for key in keys:
        print(f"  {key[0] + ' ' + key[1]:<26}{cells([key])}")
    run_keys = [k for k in keys if k[0] in ("api", "worker")]
    print(f"  {'run (api + worker)':<26}{cells(run_keys)}")
    print(f"  {'one reading (reader)':<26}{cells([k for k in keys if k[0] == 'reader'])}")
    dollars = "".join(
        f" | {'$' + format(sum(wru[k] for k in run_keys) * 0.625 + sum(rru[k] for k in run_keys) * 0.125, '.2f'):>31}"
        for made, wru, rru, _ in rows.values()
    )
    print(f"  {'run, DynamoDB per 1M':<26}{dollars}")
    print(
        "  (columns: requests, WRU, RRU; on demand, us-east-1: $0.625 per million WRU, $0.125 per million RRU)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["progress"], help="run one scenario")
    only = parser.parse_args().only
    with moto_backed(RUNPLANE_CALLBACK_SCHEDULE="0.2", RUNPLANE_RUNNABLE_PACKAGES="tests.fixtures.runnables"):
        aws.session().events.register("before-call", count)
        units.register(aws.session().events)
        from runplane.logic.keys import create_key

        if only == "progress":
            watched_runs(create_key("bench").token)
            return

        from tests.conftest import Api, drain, make_runnable
        from tests.receiver import Answer, receiving

        key = create_key("bench")
        echo = make_runnable("bench", "echo")
        api = Api(key.token)
        api.post(f"/v1/runnable/{echo}/runs")  # warm the key cache, as a warm API function would have it
        drain("worker")
        calls.clear()

        run_id = as_component(
            "api", lambda: api.post(f"/v1/runnable/{echo}/runs", {"inputs": {"a": 1}}).json()["id"]
        )
        as_component("worker", lambda: drain("worker"))
        as_component("api", lambda: api.get(f"/v1/run/{run_id}"))
        table("async run: submit, execute, one GET of the result")

        stop = threading.Event()

        def work() -> None:
            component.set("worker")
            while not stop.is_set():
                drain("worker")
                time.sleep(0.01)

        worker = threading.Thread(target=work)
        worker.start()
        reply = as_component(
            "api", lambda: api.post(f"/v1/runnable/{echo}/runs?mode=sync", {"inputs": {"a": 1}})
        )
        stop.set()
        worker.join()
        assert reply.status == 200, reply.text
        table("sync run (echo): submit and wait; the wait polls GetItem with backoff (50 ms x1.5)")
        with receiving(Answer(200)) as receiver:
            run_id = as_component(
                "api",
                lambda: api.post(f"/v1/runnable/{echo}/runs", {"callback_url": receiver.url}).json()["id"],
            )
            as_component("worker", lambda: drain("worker"))
            as_component("callbacks", lambda: drain("callbacks"))
            assert len(receiver.received) == 1
        table("async run with a callback, delivered at the first attempt")

        with receiving(Answer(503), Answer(200)) as receiver:
            api.post(f"/v1/runnable/{echo}/runs", {"callback_url": receiver.url})
            drain("worker")
            calls.clear()
            as_component("callbacks", lambda: drain("callbacks"))
            time.sleep(1.1)  # hidden for the retry delay, rounded up to whole seconds
            as_component("callbacks", lambda: drain("callbacks"))
            assert len(receiver.received) == 2
        table("callback delivery only: a failed attempt, then success")
        tenancy_features(key.token)
        watched_runs(key.token)
        print(
            "\nesm: requests of the Lambda event source mapping (here the local poller; it also re-reads the"
        )
        print("queue ARN per drain). In AWS they are made by the service, not the function.")


if __name__ == "__main__":
    main()
