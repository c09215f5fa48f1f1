"""Races between the paths that may end a run: cancel, timeout, the sweeper and a slow worker."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from tests.faults.harness import Expect, Fault, Stack, wait_until

RARELY = 10.0  # seconds between heartbeats: none during the test


def _worker_thread(stack: Stack) -> threading.Thread:
    """A worker taking the dispatched run in the background (the test goes on meanwhile)."""
    thread = threading.Thread(target=stack.deliver, args=("worker",))
    thread.start()
    return thread


def test_a_cancel_answered_202_ends_the_run_cancelled_and_keeps_the_outputs(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    with Stack(tmp_path, heartbeat=RARELY) as stack:
        run_id = stack.start_run(inputs=stack.run_inputs(gate=str(gate)))
        worker = _worker_thread(stack)
        wait_until(lambda: stack.executions() == 1)
        cancel = stack.request("POST", f"/v1/run/{run_id}/cancel")
        assert cancel.status == 202  # running: it will end cancelled
        (gate.parent / "gate.1").touch()  # the body returns before the worker's next heartbeat
        worker.join()
        stack.drive()
        assert stack.violations(Expect(status="cancelled", code="cancelled", accepted=True)) == []
        state = stack.api.get(f"/v1/run/{run_id}").json()
        assert state["result"]["outputs"]["run_id"] == run_id  # what the body computed is kept


@pytest.mark.parametrize("seconds", [0.9, 1.0, 1.1])
def test_a_run_ending_as_its_timeout_expires_ends_one_way_everywhere(tmp_path: Path, seconds: float) -> None:
    with Stack(tmp_path) as stack:
        stack.start_run(inputs=stack.run_inputs(seconds=seconds, pad=0), timeout_seconds=1)
        stack.drive()
        (run,) = stack.runs()
        assert run["status"] in {"completed", "timeout"}
        code = "timeout" if run["status"] == "timeout" else None
        assert stack.violations(Expect(status=run["status"], code=code, accepted=True)) == []


def test_the_sweeper_leaves_a_worker_whose_renewal_is_slow_while_its_lease_is_live(tmp_path: Path) -> None:
    renewal = threading.Event()
    slow = Fault("hold", where=lambda point, params: "renew" in point.site, hold=renewal.wait)
    with Stack(tmp_path) as stack:
        stack.start_run(inputs=stack.run_inputs(seconds=0.3))
        stack.injector.faults.append(slow)
        worker = _worker_thread(stack)
        wait_until(lambda: slow.times == 0)  # the renewal is on its way
        (run,) = stack.runs()
        stack.clock.shift(run["lease_until"] - 0.2 - stack.now())  # the lease has a moment left
        stack.sweep()
        (swept,) = stack.runs()
        assert (swept["lease_owner"], swept.get("dispatches", 0)) == (run["lease_owner"], 0)
        renewal.set()
        worker.join()
        stack.drive()
        assert stack.execution_attempts() == [1]
        assert stack.violations(Expect(accepted=True)) == []


def test_a_worker_that_lost_its_lease_never_overwrites_the_outcome_of_the_one_that_took_over(
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    with Stack(tmp_path, heartbeat=RARELY) as stack:
        run_id = stack.start_run(inputs=stack.run_inputs(gate=str(gate)))
        slow = _worker_thread(stack)  # attempt 1 waits at the gate
        wait_until(lambda: stack.executions() == 1)
        stack.clock.shift(31)  # its lease runs out before its next heartbeat
        (gate.parent / "gate.2").touch()
        stack.sweep()  # re-dispatched: another worker takes it over and completes attempt 2
        stack.deliver_visible()
        assert [run["status"] for run in stack.runs()] == ["completed"]
        (gate.parent / "gate.1").touch()  # now the first worker's body returns
        slow.join()
        stack.drive()
        assert stack.execution_attempts() == [1, 2]
        assert stack.violations(Expect(executions=2, accepted=True)) == []
        callback = json.loads(stack.receiver.received[-1].body)
        assert callback["result"]["outputs"]["attempt"] == 2
        assert stack.api.get(f"/v1/run/{run_id}").json()["result"]["outputs"]["attempt"] == 2
