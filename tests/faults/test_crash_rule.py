"""The documented crash rule: a worker that dies after the runnable ran but before its outcome was recorded
leaves the run to be executed again (attempt 2) or, when the runnable says `retry_on_worker_lost: false`,
to end failed `worker_lost` without a second execution."""

from __future__ import annotations

from pathlib import Path

from tests.faults.harness import READS, Expect, Fault, Stack


def _die_after_the_body(stack: Stack) -> Fault:
    """The worker dies at its first write (other than a renewal) after the body has run."""
    return Fault(
        "crash_before",
        where=lambda point, params: (
            point.component == "worker"
            and point.operation not in READS
            and "renew" not in point.site
            and stack.executions() > 0
        ),
    )


def test_a_worker_lost_after_the_body_ran_is_executed_again_as_attempt_2(tmp_path: Path) -> None:
    with Stack(tmp_path) as stack:
        run_id = stack.start_run()
        stack.injector.faults.append(death := _die_after_the_body(stack))
        stack.drive()
        assert death.times == 0
        assert stack.execution_attempts() == [1, 2]
        assert stack.violations(Expect(accepted=True)) == []
        assert stack.api.get(f"/v1/run/{run_id}").json()["result"]["metadata"]["attempts"] == 2


def test_a_runnable_that_must_not_be_retried_ends_worker_lost_after_one_execution(tmp_path: Path) -> None:
    with Stack(tmp_path, runnable={"retry_on_worker_lost": False}) as stack:
        stack.start_run()
        stack.injector.faults.append(death := _die_after_the_body(stack))
        stack.drive()
        assert death.times == 0
        assert stack.execution_attempts() == [1]
        expect = Expect(status="failed", code="worker_lost", retried_when_lost=False, accepted=True)
        assert stack.violations(expect) == []
