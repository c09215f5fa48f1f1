"""Cold start: import time of each handler module in a fresh interpreter, next to
`import boto3; boto3.client("dynamodb")` measured the same way. Each round runs every probe once, in turn,
so a drift in the machine's speed reaches all of them; the ratio is the median of each round's ratio to
that round's baseline. The api function includes a dialect's routes on the first request in that dialect:
the `+ routes` rows are its import with one dialect's routes included, what that first request adds.

    .venv/bin/python bench/cold_start.py [--repeat 9]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from runplane import definitions as defs
from runplane.api.common import Dialect

BASELINE = "import boto3; boto3.client('dynamodb')"
PROBE = """
import time
t = time.perf_counter()
{code}
print(time.perf_counter() - t)
"""
ENV = {"AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_METRICS_DISABLED": "true", "PATH": "/usr/bin:/bin"}
API = "runplane.handlers.api"


def probes() -> dict[str, str]:
    """The code to time, by row name: the baseline, each handler's import, the api's with each dialect."""
    found = {"boto3 + dynamodb client (baseline)": BASELINE}
    for function in defs.FUNCTIONS:
        module = function.handler.rpartition(".")[0]
        found[module] = f"import {module}"
    for dialect in Dialect:
        found[f"{API} + {dialect.value} routes"] = (
            f"import {API}; from runplane.api.app import Dialect, include; include({API}.app, Dialect({dialect.value!r}))"
        )
    return found


def seconds(code: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(code=code)], env=ENV, capture_output=True, text=True, check=True
    )
    return float(out.stdout.strip())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=9, help="rounds (fresh interpreters per probe)")
    args = parser.parse_args()
    rows = probes()
    samples: dict[str, list[float]] = {name: [] for name in rows}
    ratios: dict[str, list[float]] = {name: [] for name in rows}
    for _ in range(args.repeat):
        measured = {name: seconds(code) for name, code in rows.items()}
        baseline = measured[next(iter(rows))]
        for name, taken in measured.items():
            samples[name].append(taken)
            ratios[name].append(taken / baseline)
    print(f"{'module':<44} {'median ms':>10} {'x baseline':>11}")
    medians = {}
    for name in rows:
        medians[name] = round(statistics.median(samples[name]) * 1000)
        print(f"{name:<44} {medians[name]:>10} {statistics.median(ratios[name]):>11.2f}")
    print(json.dumps({"rounds": args.repeat, "median_ms": medians}))


if __name__ == "__main__":
    main()
