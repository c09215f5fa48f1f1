"""The run lifecycle and the served RunState."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from runplane.domain.models import ModelUsage, Outcome, RunError, RunRecord, to_run_state
from runplane.domain.states import MOVES, TERMINAL, IllegalMove, Status, check_move

from tests.contract import assert_run_state


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (Status.waiting, Status.running),
        (Status.waiting, Status.cancelled),
        (Status.waiting, Status.failed),
        (Status.running, Status.completed),
        (Status.running, Status.failed),
        (Status.running, Status.timeout),
        (Status.running, Status.cancelled),
    ],
)
def test_allowed_moves(current: Status, target: Status) -> None:
    check_move(current, target)


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
@pytest.mark.parametrize("target", list(Status))
def test_nothing_leaves_a_terminal_state(terminal: Status, target: Status) -> None:
    with pytest.raises(IllegalMove):
        check_move(terminal, target)


@pytest.mark.parametrize(
    ("current", "target"), [(Status.waiting, Status.completed), (Status.running, Status.waiting)]
)
def test_forbidden_moves(current: Status, target: Status) -> None:
    with pytest.raises(IllegalMove):
        check_move(current, target)


def test_statuses_are_the_seed_enum() -> None:
    assert {s.value for s in Status} == {"running", "completed", "failed", "cancelled", "timeout", "waiting"}
    assert set(MOVES) | TERMINAL == set(Status)


def record(**fields) -> RunRecord:
    base = {
        "account_id": "acme",
        "id": "0b7e3c52-6f0a-4a57-9d1e-1f1b6c0d9a01",
        "runnable_id": "1c8f4d63-7a1b-4b68-8e2f-2a2c7d1e0b12",
        "runnable": {"kind": "python", "config": {"function": "echo"}, "name": "echo"},
        "status": Status.waiting,
        "created_at": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        "callback_headers": {"X-Secret": "hunter2"},
        "callback_url": "https://hooks.example.com/x",
        "payload_json": '{"inputs": {"password": "p"}}',
        "lease_owner": "worker-1",
    }
    return RunRecord(**{**base, **fields})


def test_a_waiting_run_has_no_result_and_null_totals() -> None:
    state = to_run_state(record(), None).model_dump(mode="json")
    assert_run_state(state)
    assert state["result"] is None
    assert state["total_input_tokens"] is None
    assert state["created_at"] == "2026-01-02T03:04:05Z"


def test_the_served_state_never_carries_internal_fields() -> None:
    text = to_run_state(record(), None).model_dump_json()
    for secret in ("hunter2", "hooks.example.com", "password", "worker-1", "lease"):
        assert secret not in text


def test_a_finished_run_totals_its_usage() -> None:
    outcome = Outcome(
        status=Status.completed,
        outputs={"a": 1},
        usage=[
            ModelUsage(provider="p", model="m", prompt_tokens=10, completion_tokens=2, cached_tokens=1),
            ModelUsage(provider="p", model="n", prompt_tokens=5, completion_tokens=3),
        ],
        cost_usd=0.5,
        duration_seconds=1.25,
    )
    state = to_run_state(record(status=Status.completed, attempt=1), outcome).model_dump(mode="json")
    assert_run_state(state)
    assert (state["total_input_tokens"], state["total_output_tokens"], state["total_cached_tokens"]) == (
        15,
        5,
        1,
    )
    assert state["total_token_cost_usd"] == 0.5
    assert state["result"]["metadata"] == {"attempts": 1, "duration_seconds": 1.25}


def test_a_failed_run_serves_its_error() -> None:
    outcome = Outcome(status=Status.failed, error=RunError(message="no", code="E1"))
    state = to_run_state(record(status=Status.failed), outcome).model_dump(mode="json")
    assert_run_state(state)
    assert state["result"]["error"] == {"message": "no", "code": "E1"}
    assert "outputs" not in state["result"]
