"""Local end to end: submit N async runs concurrently to a fresh local stack and measure them.

    .venv/bin/python bench/throughput.py [--runs 1000] [--clients 32] [--workers 4]

Latency is submit -> terminal as the service recorded it (RunState completed_at - created_at);
throughput is N over the span from the first submission to the last completion.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.local_stack import start_stack


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        stack = start_stack(Path(tmp), workers=args.workers)
        stack.keep_draining_output()
        try:
            info = stack.info
            session = requests.Session()
            session.headers["Authorization"] = f"Bearer {info['api_key']}"
            url = f"{info['api_url']}/v1/runnable/{info['runnables']['echo']}/runs?mode=async"

            def submit(i: int) -> str:
                reply = session.post(url, json={"inputs": {"i": i}}, timeout=60)
                reply.raise_for_status()
                return reply.json()["id"]

            began = time.monotonic()
            with ThreadPoolExecutor(args.clients) as pool:
                ids = list(pool.map(submit, range(args.runs)))
            submitted = time.monotonic() - began

            # Wait on the status index (no per-run polling load), then read every run through the list API.
            def count(status: str) -> int:
                reply = session.get(f"{info['api_url']}/v1/runs", params={"status": status, "limit": 100})
                return len(reply.json()["items"])

            deadline = time.monotonic() + 900
            while (count("waiting") or count("running")) and time.monotonic() < deadline:
                time.sleep(0.5)
            states: dict[str, dict] = {}
            cursor = None
            while True:
                params = {"limit": 100, **({"cursor": cursor} if cursor else {})}
                page = session.get(f"{info['api_url']}/v1/runs", params=params).json()
                states.update(
                    (s["id"], s) for s in page["items"] if s["status"] not in ("waiting", "running")
                )
                if not (cursor := page["next_cursor"]):
                    break
        finally:
            stack.stop()

    def ts(value: str) -> float:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()

    latencies = [ts(s["completed_at"]) - ts(s["created_at"]) for s in states.values()]
    span = max(ts(s["completed_at"]) for s in states.values()) - min(
        ts(s["created_at"]) for s in states.values()
    )
    by_status: dict[str, int] = {}
    for state in states.values():
        by_status[state["status"]] = by_status.get(state["status"], 0) + 1
    print(
        f"runs: {args.runs}, clients: {args.clients}, local workers: {args.workers}, cpus: {os.cpu_count()}"
    )
    print(f"terminal: {len(states)} of {len(ids)}  {by_status}")
    print(f"submit rate: {args.runs / submitted:.0f} runs/s ({submitted:.1f} s to submit)")
    print(f"throughput (first submit -> last completion): {len(states) / span:.0f} runs/s over {span:.1f} s")
    latency_q = statistics.quantiles(latencies, n=100, method="inclusive")  # [49] is p50
    print(
        "submit->terminal latency: "
        f"p50 {latency_q[49] * 1000:.0f} ms, p95 {latency_q[94] * 1000:.0f} ms, "
        f"p99 {latency_q[98] * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms, "
        f"mean {statistics.fmean(latencies) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
