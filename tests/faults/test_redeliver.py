"""Redelivering a pending callback: attempted at once, the old round's message dropped when it comes back,
nothing lost when the new message is not sent, nothing sent again when an attempt wins the race.

(The `api_redeliver` flow of the fault matrix fails each request of the redelivery in turn.)"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from runplane import definitions as defs
from runplane.logic.callbacks import OVERDUE_AFTER_SECONDS

from tests.faults.harness import Expect, Fault, Point, Stack
from tests.receiver import Answer

HOUR = 3600
HOURLY = {"RUNPLANE_CALLBACK_SCHEDULE": f"{HOUR},{HOUR}"}


def _pending(stack: Stack, *answers: Answer) -> str:
    """A run that ended, its callback's first attempt answered `answers[0]`; the run's id."""
    stack.receiver.script = list(answers)
    run_id = stack.start_run()
    stack.deliver_visible()
    assert len(stack.receiver.received) == 1
    return run_id


def _redeliver(stack: Stack, run_id: str) -> tuple[int | None, Any]:
    answer = stack.request("POST", f"/v1/run/{run_id}/callbacks/redeliver")
    return answer.status, answer.body


def _messages(stack: Stack) -> list[float]:
    """When each message on the callbacks queue is (or becomes) receivable, soonest first."""
    return sorted(stack.hidden_until("callbacks"))


def _shift_past(stack: Stack, at: float) -> None:
    stack.clock.shift(at - time.time() + 0.5)


def _statuses(stack: Stack, run_id: str) -> list[int | None]:
    (delivery,) = [d for d in stack.scan(defs.CALLBACKS) if d["run_id"] == run_id]
    return [attempt["status_code"] for attempt in json.loads(delivery["attempts"])]


def test_a_redelivered_pending_callback_is_received_at_once_and_once(tmp_path: Path) -> None:
    with Stack(tmp_path, HOURLY) as stack:
        run_id = _pending(stack, Answer(500), Answer(200))
        [old] = _messages(stack)  # hidden until the retry an hour away
        status, body = _redeliver(stack, run_id)
        assert status == 202
        assert body["state"] == "pending"
        stack.deliver_visible()
        first, second = stack.receiver.received
        assert second.at - first.at < 60
        assert _messages(stack) == [old]
        _shift_past(stack, old)
        stack.deliver_visible()
        assert _messages(stack) == []
        stack.drive()
        assert len(stack.receiver.received) == 2
        assert _statuses(stack, run_id) == [500, 200]
        assert stack.violations(Expect()) == []


def test_the_old_rounds_message_is_dropped_while_the_delivery_is_still_pending(tmp_path: Path) -> None:
    later = Answer(503, headers={"Retry-After": str(2 * HOUR)})
    with Stack(tmp_path, HOURLY) as stack:
        run_id = _pending(stack, Answer(500), later, Answer(200))
        [old] = _messages(stack)
        assert _redeliver(stack, run_id)[0] == 202
        stack.deliver_visible()  # attempted at once: 503, and the next retry asked for in two hours
        assert len(stack.receiver.received) == 2
        [_, new] = _messages(stack)
        _shift_past(stack, old)
        stack.deliver_visible()
        assert _messages(stack) == [new]  # the old message is gone, not hidden again
        stack.drive()
        assert _statuses(stack, run_id) == [500, 503, 200]
        assert len(stack.receiver.received) == 3
        assert stack.violations(Expect()) == []


def test_a_redelivery_whose_message_was_not_sent_is_enqueued_by_the_sweeper(tmp_path: Path) -> None:
    def unsent(point: Point, params: dict) -> bool:
        return point.component == "api" and point.operation == "SendMessage"

    with Stack(tmp_path, HOURLY) as stack:
        run_id = _pending(stack, Answer(500), Answer(200))
        [old] = _messages(stack)
        throttled = Fault("throttled", where=unsent)
        stack.injector.faults.append(throttled)
        assert _redeliver(stack, run_id)[0] == 500  # written (due now, a new round), not enqueued
        assert throttled.times == 0
        stack.drive()
        first, second = stack.receiver.received
        assert OVERDUE_AFTER_SECONDS < second.at - first.at < old - first.at  # before the old schedule
        assert _messages(stack) == []  # the old message was dropped too
        assert stack.violations(Expect()) == []


def test_a_callback_delivered_while_its_redelivery_is_asked_is_not_sent_again(tmp_path: Path) -> None:
    with Stack(tmp_path, {"RUNPLANE_CALLBACK_SCHEDULE": "5"}) as stack:
        run_id = _pending(stack, Answer(500), Answer(200))
        [due] = _messages(stack)
        _shift_past(stack, due)
        race = Fault(  # the retry's attempt is made while the redelivery reads and writes
            "hold",
            where=lambda point, params: "retry_now" in point.site,
            hold=lambda: stack.deliver("callbacks"),
        )
        stack.injector.faults.append(race)
        status, body = _redeliver(stack, run_id)
        assert race.times == 0
        assert (status, body["code"]) == (409, "delivery_in_flight")
        stack.drive()
        assert len(stack.receiver.received) == 2
        assert _statuses(stack, run_id) == [500, 200]
        assert stack.violations(Expect()) == []
