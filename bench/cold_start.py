"""Cold start: import time of each handler module in a fresh interpreter, median of several runs,
next to `import boto3; boto3.client("dynamodb")` measured the same way.

    .venv/bin/python bench/cold_start.py [--repeat 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from runplane import definitions as defs

BASELINE = "import boto3; boto3.client('dynamodb')"
PROBE = """
import time
t = time.perf_counter()
{code}
print(time.perf_counter() - t)
"""
ENV = {"AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_METRICS_DISABLED": "true", "PATH": "/usr/bin:/bin"}


def measure(code: str, repeat: int) -> float:
    samples = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, "-c", PROBE.format(code=code)],
            env=ENV,
            capture_output=True,
            text=True,
            check=True,
        )
        samples.append(float(out.stdout.strip()))
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    baseline = measure(BASELINE, args.repeat)
    print(f"{'module':<36} {'median ms':>10} {'x baseline':>11}")
    print(f"{'boto3 + dynamodb client (baseline)':<36} {baseline * 1000:>10.0f} {1:>11.2f}")
    results = {}
    for function in defs.FUNCTIONS:
        module = function.handler.rpartition(".")[0]
        seconds = measure(f"import {module}", args.repeat)
        results[module] = seconds
        print(f"{module:<36} {seconds * 1000:>10.0f} {seconds / baseline:>11.2f}")
    print(
        json.dumps(
            {"baseline_ms": round(baseline * 1000), **{k: round(v * 1000) for k, v in results.items()}}
        )
    )


if __name__ == "__main__":
    main()
