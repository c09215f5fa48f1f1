"""One due run whose handling keeps failing must not keep the sweeper from the others."""

from __future__ import annotations

import json
from pathlib import Path

from tests.faults.harness import Expect, Fault, Stack

RUNS = 6


def test_a_due_run_whose_handling_keeps_failing_does_not_stop_the_sweep(tmp_path: Path) -> None:
    with Stack(tmp_path) as stack:
        ids = [stack.start_run() for _ in range(RUNS)]
        stack.svc.queues.client.purge_queue(QueueUrl=stack.queue_url("dispatch"))  # their messages were lost
        first = min(stack.runs(), key=lambda run: (run["live_shard"], run["due_at"]))  # swept first
        poisoned = Fault(
            "throttled",
            where=lambda point, params: point.component == "sweeper" and first["pk"] in json.dumps(params),
            times=1_000_000,
        )
        stack.injector.faults.append(poisoned)
        stack.clock.shift(stack.svc.settings.redispatch_seconds + 1)
        stack.sweep()
        assert poisoned.times < 1_000_000  # its requests did fail
        dispatched = {run["id"] for run in stack.runs() if run.get("dispatches")}
        assert dispatched == set(ids) - {first["id"]}  # every other due run was re-dispatched
        stack.injector.faults.remove(poisoned)  # the failure clears: that run is swept too
        stack.drive()
        assert stack.violations(Expect(runs=RUNS)) == []
