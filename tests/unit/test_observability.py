from __future__ import annotations

from collections.abc import Iterator

import pytest
from runplane.observability import count_callback, count_created, count_finished, metrics


@pytest.fixture
def recorded() -> Iterator[dict]:
    metrics.clear_metrics()
    yield metrics.metric_set
    metrics.clear_metrics()


def test_runs_and_callbacks_are_counted_by_outcome(recorded: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    count_created()
    count_finished("timeout", 2.5)
    count_finished("failed", 1.0)
    count_callback("pending")
    count_callback("dead")
    assert {name: value["Value"] for name, value in recorded.items()} == {
        "RunsCreated": [1.0],
        "RunsFinished": [1.0, 1.0],
        "RunsFailed": [1.0],  # the other statuses are not metrics of their own (docs/operations.md)
        "RunDuration": [2.5, 1.0],
        "CallbackAttempts": [1.0, 1.0],
        "CallbacksDead": [1.0],
    }


def test_disabled_metrics_are_not_kept(recorded: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    for _ in range(150):
        count_created()
    assert recorded == {}
