"""How soon a watcher sees a run's state change, and what a waiting long poll costs.

    .venv/bin/python bench/watch.py [--samples 30] [--http] [--window 25]

A run of the `stamped` fixture runnable changes its state each time the bench creates a gate file, with
the time of the change in the state itself; a client long-polls `GET /v1/run/{id}/events?after=&wait=20`
meanwhile, and the latency is from that time to the answer reaching the client. The change comes after
the poll has waited `idle` seconds, since the poll reads the run more slowly the longer it waits (50 ms
doubling to 500 ms), and FLUSH_SECONDS after the previous change or (the last row) right after the previous
answer, when the worker holds the change back (progress is written at most once a second). In process (the default) the api handler and a
worker thread run against moto here; with --http, through `runplane local` over HTTP.

Then one long poll with nothing to see, for its whole window: the DynamoDB reads it makes while it waits
(requests and read units, bench/capacity.py), which with its Lambda time is what a watcher costs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from capacity import Units
from inprocess import moto_backed
from runplane.domain.events import FLUSH_SECONDS

# (seconds the poll has waited when the state changes, whether a second passed since the last change)
ROWS = ((0.1, True), (0.5, True), (2.0, True), (0.1, False))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(get: Callable[[str], Any], start: Callable[[dict], str], samples: int, folder: Path) -> None:
    """`get(path)` answers JSON; `start(inputs)` starts a run of `stamped` and returns its id."""
    changes = samples * len(ROWS)
    run_id = start({"changes": changes, "dir": str(folder)})
    deadline = time.monotonic() + 60
    while get(f"/v1/run/{run_id}")["status"] != "running":
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.05)
    seen = get(f"/v1/run/{run_id}/events")["last_seq"]
    latencies: dict[tuple[float, bool], list[float]] = {row: [] for row in ROWS}
    n = 0
    for _ in range(samples):
        for idle, rested in ROWS:
            if rested:
                time.sleep(FLUSH_SECONDS)  # the change is not held back by the throttle
            answer: list[tuple[float, dict]] = []
            poll = threading.Thread(
                target=lambda s=seen, a=answer: a.append(
                    (get(f"/v1/run/{run_id}/events?after={s}&wait=20"), time.time())
                )
            )
            poll.start()
            time.sleep(idle)
            (folder / f"go{n}").touch()
            poll.join(30)
            page, answered = answer[0]
            state = next(e["state"] for e in page["events"] if e["type"] == "state")
            assert state["n"] == n, (state, n)
            latencies[(idle, rested)].append(answered - state["at"])
            seen, n = page["last_seq"], n + 1
    print(f"\nstate change -> long poll answered ({samples} changes each)")
    print(
        f"  {'poll waited':>12} {'after the last change':>22} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}"
    )
    for (idle, rested), values in latencies.items():
        ms = [v * 1000 for v in values]
        since = "over 1 s" if rested else "under 1 s"
        print(
            f"  {idle:>10.1f} s {since:>22} {statistics.median(ms):>10.0f} {percentile(ms, 0.95):>8.0f}"
            f" {max(ms):>8.0f}"
        )


def waiting_poll(
    get: Callable[[str], Any], start: Callable[[dict], str], folder: Path, window: float
) -> None:
    """A long poll that sees nothing for its whole window (in process only: it counts requests)."""
    from runplane.adapters import aws

    run_id = start({"changes": 1, "dir": str(folder / "idle")})
    deadline = time.monotonic() + 60
    while get(f"/v1/run/{run_id}")["status"] != "running":
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.05)
    seen = get(f"/v1/run/{run_id}/events")["last_seq"]
    made: Counter[str] = Counter()
    label = threading.local()

    def count(model: Any, **_: Any) -> None:
        if getattr(label, "name", None) == "poll":
            made[model.name] += 1

    units = Units(lambda: getattr(label, "name", "other"))
    aws.session().events.register("before-call", count)
    units.register(aws.session().events)
    aws._client.cache_clear()  # clients copy the session's handlers when created
    label.name = "poll"
    began = time.monotonic()
    page = get(f"/v1/run/{run_id}/events?after={seen}&wait={window:g}")
    took = time.monotonic() - began
    label.name = "other"
    assert page["events"] == [], page
    (folder / "idle").mkdir(exist_ok=True)
    (folder / "idle" / "go0").touch()
    rru = sum(v for (name, _), v in units.rru.items() if name == "poll")
    print(f"\na long poll with nothing new: answered after {took:.1f} s (window {window:g} s)")
    print(f"  requests while it waited: {dict(made)}; {rru:g} read units (consistent GetItem of the run)")


def in_process(samples: int, window: float) -> None:
    with moto_backed(RUNPLANE_RUNNABLE_PACKAGES="tests.fixtures.runnables", RUNPLANE_RATE_LIMIT_BURST="0"):
        from runplane.logic.keys import create_key

        from tests.conftest import Api, make_runnable, working

        key = create_key("bench")
        api, runnable = Api(key.token), make_runnable("bench", "stamped")
        local = threading.local()

        def get(path: str) -> Any:
            if not hasattr(local, "api"):  # a resolver per thread, as each Lambda instance has its own
                local.api = Api(key.token)
            reply = local.api.get(path)
            assert reply.status == 200, reply.text
            return reply.json()

        def start(inputs: dict) -> str:
            return api.post(f"/v1/runnable/{runnable}/runs", {"inputs": inputs}).json()["id"]

        with tempfile.TemporaryDirectory() as folder, working(workers=2):
            measure(get, start, samples, Path(folder))
            waiting_poll(get, start, Path(folder), window)


def over_http(samples: int) -> None:
    import requests

    from tests.local_stack import start_stack

    with tempfile.TemporaryDirectory() as folder:
        stack = start_stack(Path(folder) / "stack", RUNPLANE_RUNNABLE_PACKAGES="tests.fixtures.runnables")
        stack.keep_draining_output()
        try:
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {stack.info['api_key']}"
            local = threading.local()

            def get(path: str) -> Any:
                if not hasattr(local, "session"):
                    local.session = requests.Session()
                    local.session.headers.update(session.headers)
                reply = local.session.get(stack.info["api_url"] + path, timeout=60)
                assert reply.status_code == 200, reply.text
                return reply.json()

            def start(inputs: dict) -> str:
                return stack.start_run("stamped", {"inputs": inputs}).json()["id"]

            measure(get, start, samples, Path(folder))
        finally:
            stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=30, help="changes per idle time")
    parser.add_argument("--http", action="store_true", help="through runplane local over HTTP")
    parser.add_argument("--window", type=float, default=25.0, help="the waiting poll's window")
    args = parser.parse_args()
    if args.http:
        over_http(args.samples)
    else:
        in_process(args.samples, args.window)


if __name__ == "__main__":
    main()
