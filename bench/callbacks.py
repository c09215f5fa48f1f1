"""Callback delivery figures: attempt latency, run end -> callback received, and an outage.

    .venv/bin/python bench/callbacks.py [--runs 100] [--outage-runs 50] [--outage-seconds 3]

The real worker and callbacks handlers run against moto in this process (as the tests do), delivering to
a real HTTP receiver on loopback. Retries are compressed to 1 s (RUNPLANE_CALLBACK_SCHEDULE).
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime

from inprocess import moto_backed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--outage-runs", type=int, default=50)
    parser.add_argument("--outage-seconds", type=float, default=3.0)
    args = parser.parse_args()

    with moto_backed(RUNPLANE_CALLBACK_SCHEDULE="1,1,1,1,1,1,1,1,1"):
        from runplane.domain.deliveries import DeliveryRecord
        from runplane.logic.keys import create_key
        from runplane.logic.services import services

        from tests.conftest import Api, drain, make_runnable, pollers
        from tests.receiver import Receiver, receiving

        api = Api(create_key("bench").token)
        echo = make_runnable("bench", "echo")
        callbacks = pollers()["callbacks"]

        def start(url: str) -> str:
            return api.post(f"/v1/runnable/{echo}/runs", {"callback_url": url}).json()["id"]

        def delivery(run_id: str) -> DeliveryRecord | None:
            """None until the run has ended."""
            found = services().deliveries.for_run("bench", run_id)
            return found[0] if found else None

        def settle(run_ids: list[str], seconds: float = 120) -> None:
            """Work the queues; look at the records only when the callbacks queue is quiet."""
            deadline = time.monotonic() + seconds
            pending = set(run_ids)
            while pending and time.monotonic() < deadline:
                drain("worker")
                if callbacks.poll_once():
                    continue
                pending = {r for r in pending if (d := delivery(r)) is None or d.state == "pending"}
                time.sleep(0.05)

        # 1. A healthy receiver, one run at a time: the pipeline's own latency, without queueing.
        with receiving() as receiver:
            run_ids = []
            for _ in range(args.runs):
                run_ids.append(start(receiver.url))
                settle(run_ids[-1:])
        attempts = [a.latency_ms for r in run_ids for a in delivery(r).attempts]
        ended = {r: datetime.fromisoformat(api.get(f"/v1/run/{r}").json()["completed_at"]) for r in run_ids}
        arrival = {req.headers["webhook-id"]: req.at for req in receiver.received}
        lag = [arrival[delivery(r).id] - ended[r].timestamp() for r in run_ids]
        attempt_q = statistics.quantiles(attempts, n=100, method="inclusive")  # [49] is p50
        lag_q = statistics.quantiles(lag, n=100, method="inclusive")
        print(f"healthy receiver, {args.runs} runs one after another:")
        print(
            f"  delivered: {len(receiver.unique_ids())} of {args.runs}, requests received: {len(receiver.received)}"
        )
        print(
            f"  attempt latency ms (sign, POST, read): p50 {attempt_q[49]:.0f}, "
            f"p95 {attempt_q[94]:.0f}, max {max(attempts)}"
        )
        print(f"  run end -> callback received ms: p50 {lag_q[49] * 1000:.0f}, p95 {lag_q[94] * 1000:.0f}")

        # 2. An outage: every run has ended, nothing listens for a while, then the receiver comes back.
        holder = Receiver()
        port, url = holder.server.server_address[1], holder.url
        holder.close()
        run_ids = [start(url) for _ in range(args.outage_runs)]
        drain("worker")
        down_until = time.monotonic() + args.outage_seconds
        while time.monotonic() < down_until:
            if not callbacks.poll_once():
                time.sleep(0.05)
        back = time.monotonic()
        with receiving(port=port) as receiver:
            settle(run_ids)
            recovered = time.monotonic() - back
        records = [delivery(r) for r in run_ids]
        counts = [len(d.attempts) for d in records]
        print(
            f"\nreceiver down {args.outage_seconds:g} s, {args.outage_runs} ended runs, retries every ~1 s:"
        )
        print(
            f"  delivered: {sum(d.state == 'succeeded' for d in records)} of {args.outage_runs}; "
            f"unique webhook-ids received: {len(receiver.unique_ids())}; "
            f"requests received: {len(receiver.received)}"
        )
        print(
            f"  attempts per delivery: mean {statistics.fmean(counts):.1f}, max {max(counts)}; "
            f"all delivered {recovered:.1f} s after the receiver came back"
        )


if __name__ == "__main__":
    main()
