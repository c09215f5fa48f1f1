"""A burst against a concurrency limit: does the limit hold, does every run complete once, in what order,
and what does waiting cost in AWS requests.

    .venv/bin/python bench/concurrency.py [--runs 1000] [--limit 5] [--workers 8] [--seconds 2]

The real api and worker handlers run against moto in this process (as the tests do): `--workers` threads
poll the dispatch queue like Lambda's event source mapping, 8 clients submit the runs at once. Each run
executes the `span` test runnable, which writes down when it executed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from inprocess import moto_backed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()

    with moto_backed(RUNPLANE_RUNNABLE_PACKAGES="tests.fixtures.runnables", RUNPLANE_RATE_LIMIT_BURST="0"):
        from runplane.adapters import aws
        from runplane.logic.keys import create_key
        from runplane.logic.services import services

        from tests.conftest import Api, make_runnable, working
        from tests.spans import most_at_once, spans

        operations: Counter[str] = Counter()
        aws.session().events.register(
            "before-call",
            lambda model, **_: operations.update([f"{model.service_model.service_name} {model.name}"]),
        )
        api = Api(create_key("bench").token)
        runnable = make_runnable("bench", "span", max_concurrency=args.limit)
        executions = Path(tempfile.mkdtemp()) / "executions"
        body = {"inputs": {"path": str(executions), "seconds": args.seconds}}

        with working(args.workers):
            began = time.time()
            with ThreadPoolExecutor(8) as clients:
                ids = list(
                    clients.map(
                        lambda _: api.post(f"/v1/runnable/{runnable}/runs", body).json()["id"],
                        range(args.runs),
                    )
                )
            submitted = time.time()
            runs = services().runs
            progress = (0, time.monotonic())
            while True:
                records = [runs.get("bench", run_id, consistent=True) for run_id in ids]
                ended = sum(r.status.terminal for r in records)
                if ended == len(ids):
                    break
                if ended > progress[0]:
                    progress = (ended, time.monotonic())
                elif time.monotonic() - progress[1] > 60:
                    stuck = [r for r in records if not r.status.terminal]
                    raise SystemExit(f"no run ended for 60 s; {len(stuck)} left, e.g. {stuck[0]!r}")
                time.sleep(1)

        executed = spans(executions)
        finished = max(end for _, end in executed.values())
        lines = len(executions.read_text().splitlines())
        created = {r.id: r.created_at.timestamp() for r in records}
        waits = sorted(executed[r][0] - created[r] for r in ids)
        by_start = sorted(ids, key=lambda r: executed[r][0])
        overtaken = [  # how many runs created after this one started before it
            sum(1 for later in by_start[:position] if created[later] > created[run_id])
            for position, run_id in enumerate(by_start)
        ]
        print(f"{args.runs} runs against max_concurrency={args.limit}, {args.workers} workers")
        print(f"  completed: {Counter(r.status.value for r in records)}")
        print(f"  executions: {lines} (distinct runs {len(executed)})")
        print(f"  most executing at once: {most_at_once(list(executed.values()))}")
        first_start = min(start for start, _ in executed.values())
        busy = sum(end - start for start, end in executed.values())
        idle = args.limit * (finished - first_start) - busy
        print(
            f"  slots busy {busy / (args.limit * (finished - first_start)):.0%} of the time; between one run"
            f" ending and the next starting in its slot: {idle / (args.runs - args.limit):.2f} s on average"
        )
        print(f"  submitted in {submitted - began:.1f} s; all ended after {finished - began:.1f} s")
        print(
            f"  throughput: {args.runs / (finished - began):.1f} runs/s (ideal {args.limit / args.seconds:.0f})"
        )
        quartiles = statistics.quantiles(waits, n=100)
        print(
            f"  created -> executing: p50 {quartiles[49]:.1f} s, p95 {quartiles[94]:.1f} s, max {waits[-1]:.1f} s"
        )
        print(
            f"  start order: {sum(1 for n in overtaken if n == 0)} runs overtaken by none; "
            f"max overtaken by {max(overtaken)} (runs still being submitted join the queue as they arrive)"
        )
        print(
            f"  AWS requests per run (api + worker, event source mapping polls included): "
            f"{sum(operations.values()) / args.runs:.1f}"
        )
        for operation, n in operations.most_common():
            print(f"    {operation:<40} {n / args.runs:6.2f}")


if __name__ == "__main__":
    main()
