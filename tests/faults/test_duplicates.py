"""At-least-once delivery: the same message delivered ten times at once starts, runs and calls back once."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from runplane.handlers import callbacks, intake, worker
from runplane.local.lambda_context import LocalLambdaContext

from tests.faults.harness import Expect, Stack, acting_as

COPIES = 10


def _deliver_copies(stack: Stack, component: str, handler: Any, record: dict[str, Any]) -> list[dict]:
    """The same record to `handler` in COPIES concurrent invocations; their answers."""
    answers: list[dict] = []

    def invoke() -> None:
        with acting_as(component):
            answers.append(handler({"Records": [record]}, LocalLambdaContext(component)))

    threads = [threading.Thread(target=invoke) for _ in range(COPIES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stack.observe()
    return answers


def test_a_dispatch_message_delivered_ten_times_at_once_executes_the_run_once(tmp_path: Path) -> None:
    with Stack(tmp_path) as stack:
        stack.start_run(inputs=stack.run_inputs(seconds=0.15))
        answers = _deliver_copies(stack, "worker", worker.lambda_handler, stack.receive("dispatch"))
        assert answers == [{"batchItemFailures": []}] * COPIES  # duplicates are acknowledged, not retried
        stack.drive()
        assert stack.execution_attempts() == [1]
        assert stack.violations(Expect(accepted=True)) == []


def test_an_intake_message_delivered_ten_times_at_once_makes_one_run_charged_once(tmp_path: Path) -> None:
    with Stack(tmp_path) as stack:
        stack.send_intake()
        answers = _deliver_copies(stack, "intake", intake.lambda_handler, stack.receive("intake"))
        assert answers == [{"batchItemFailures": []}] * COPIES
        stack.drive()
        assert len(stack.runs()) == 1
        assert stack.violations(Expect()) == []


def test_a_callback_message_delivered_ten_times_at_once_is_posted_once(tmp_path: Path) -> None:
    with Stack(tmp_path) as stack:
        stack.start_run()
        stack.deliver_visible("worker")  # the run ends; its callback message waits in the queue
        record = stack.receive("callbacks")
        _deliver_copies(stack, "callbacks", callbacks.lambda_handler, record)
        stack.drive()
        assert len(stack.receiver.received) == 1
        assert stack.violations(Expect(accepted=True)) == []
