"""What a dialect costs: the api function's time and AWS requests per call, re-factor vs Roe AI vs Cotool.

    .venv/bin/python bench/dialects.py [--calls 200]

The real api handler runs against moto in this process (so times are moto's, not DynamoDB's: compare the
dialects with each other, not with production). Each dialect starts async runs of the same `echo`
runnable, reads a finished run's status and its result; Roe AI also starts a batch of 100, reads the statuses
and results of 100 and 1000 jobs at once and lists jobs by page number and through `next`. Requests are
counted with botocore `before-call` events. Last, the JSON check every request body gets before routing,
by body size.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import timeit
from collections import Counter

from inprocess import moto_backed

ROUTES = {
    "re-factor": {
        "start": ("POST", "/v1/runnable/{agent}/runs", {"inputs": {"text": "hi"}}),
        "status": ("GET", "/v1/run/{run}", None),
        "result": ("GET", "/v1/run/{run}", None),
    },
    "Roe AI": {
        "start": ("POST", "/v1/agents/run/{agent}/async/", {"text": "hi"}),
        "status": ("GET", "/v1/agents/jobs/{run}/status/", None),
        "result": ("GET", "/v1/agents/jobs/{run}/result/", None),
    },
    "Cotool": {
        "start": ("POST", "/api/agents/{agent}/run-async", {"inputs": {"text": "hi"}}),
        "status": ("GET", "/api/agents/{agent}/run-async/{run}/status", None),
        "result": ("GET", "/api/agents/{agent}/run-async/{run}/result", None),
    },
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    with moto_backed(RUNPLANE_RATE_LIMIT_BURST="0", RUNPLANE_ACCOUNT_MAX_CONCURRENCY="0"):
        from runplane.adapters import aws
        from runplane.api.app import create_app, serve
        from runplane.api.forms import json_object
        from runplane.local.gateway import proxy_event
        from runplane.local.lambda_context import LocalLambdaContext
        from runplane.logic.keys import create_key

        from tests.conftest import drain, make_runnable

        requests: Counter[str] = Counter()  # registered before any client is made, so every client counts
        aws.session().events.register("before-call", lambda model, **_: requests.update([model.name]))
        app, token = create_app(), create_key("bench").token

        def call(method: str, path: str, body: object, key: str | None = None) -> tuple[float, int, dict]:
            headers = {"Authorization": [f"Bearer {token}"], "Content-Type": ["application/json"]}
            if key:
                headers["Idempotency-Key"] = [key]
            data = json.dumps(body).encode() if body is not None else b""
            event = proxy_event(method, path, headers, data, "127.0.0.1")
            requests.clear()
            began = time.perf_counter()
            reply = serve(app, event, LocalLambdaContext("api"))
            elapsed = (time.perf_counter() - began) * 1000
            assert reply["statusCode"] < 300, reply
            return elapsed, sum(requests.values()), json.loads(reply["body"])

        agent = make_runnable("bench", "echo")
        for routes in ROUTES.values():  # warm up: the first calls pay for imports and moto's first items
            for _ in range(20):
                call(*fill(routes["start"], agent, ""))
        drain("worker", rounds=1000)
        print(f"{'dialect':<10} {'call':<7} {'p50 ms':>7} {'p95 ms':>7} {'AWS requests':>13}")
        for dialect, routes in ROUTES.items():
            runs: list[str] = []
            for operation in ("start", "status", "result"):
                times, counts = [], []
                for n in range(args.calls):
                    run = runs[n % len(runs)] if runs else ""
                    elapsed, made, body = call(*fill(routes[operation], agent, run))
                    if operation == "start":
                        runs.append(body if isinstance(body, str) else body.get("id") or body.get("runId"))
                    times.append(elapsed)
                    counts.append(made)
                if operation == "start":
                    drain("worker", rounds=10 * args.calls)
                print(
                    f"{dialect:<10} {operation:<7} {pct(times, 50):>7.1f} {pct(times, 95):>7.1f}"
                    f" {statistics.median(counts):>13.0f}"
                )
        batch = {"inputs": [{"text": str(i)} for i in range(100)]}
        for key in (None, "bench-batch"):
            elapsed, made, _ = call("POST", f"/v1/agents/run/{agent}/async/many/", batch, key)
            keyed = "with" if key else "without"
            print(f"\nRoe AI batch of 100, {keyed} a key: {elapsed:.0f} ms, {made} AWS requests")
        jobs = runs_of_roe(call, agent)
        for count in (100, 1000):
            for route in ("statuses", "results"):
                elapsed, made, body = call("POST", f"/v1/agents/jobs/{route}/", {"job_ids": jobs[:count]})
                assert len(body) == count
                print(f"Roe AI jobs/{route}/ of {count} ids: {elapsed:.0f} ms, {made} AWS requests")
        for page in (1, 2, 5):
            elapsed, made, body = call("GET", f"/v1/agents/{agent}/jobs/?page={page}&page_size=20", None)
            print(f"Roe AI jobs page {page} of 20 by number: {elapsed:.0f} ms, {made} AWS requests")
        following = body["next"].split("/jobs/", 1)[1]
        elapsed, made, _ = call("GET", f"/v1/agents/{agent}/jobs/{following}", None)
        print(f"Roe AI jobs page 6 through `next`: {elapsed:.0f} ms, {made} AWS requests")
        print("\nbody check before routing (runplane.api.forms.json_object)")
        for size in (1_000, 100_000, 1_000_000):
            body = json.dumps({"inputs": {"text": "x" * (size // 2), "items": list(range(size // 14))}})
            seconds = timeit.timeit(lambda body=body: json_object(body, encoded=False), number=20) / 20
            print(f"  {len(body):>9} bytes {seconds * 1000:7.2f} ms")


def runs_of_roe(call, agent: str) -> list[str]:
    """1000 job ids of the agent (10 batches of 100), the agent's jobs listed newest first after them."""
    jobs: list[str] = []
    for first in range(0, 1000, 100):
        batch = {"inputs": [{"text": str(i)} for i in range(first, first + 100)]}
        jobs += call("POST", f"/v1/agents/run/{agent}/async/many/", batch)[2]
    return jobs


def fill(route: tuple[str, str, object], agent: str, run: str) -> tuple[str, str, object]:
    method, path, body = route
    return method, path.format(agent=agent, run=run), body


def pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100)[p - 1]


if __name__ == "__main__":
    main()
