"""Powertools Logger and Metrics shared by all handlers (service name from POWERTOOLS_SERVICE_NAME)."""

from __future__ import annotations

import warnings

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

NAMESPACE = "Runplane"

# A handler invocation that recorded no metric (a duplicate message, say) is normal, not worth a warning.
warnings.filterwarnings("ignore", "No application metrics to publish", UserWarning)

logger = Logger(service="runplane")
metrics = Metrics(namespace=NAMESPACE, service="runplane")


def count_created() -> None:
    metrics.add_metric(name="RunsCreated", unit=MetricUnit.Count, value=1)


def count_finished(status: str, duration_seconds: float | None) -> None:
    """`RunsFinished`, `Runs<Status>` (RunsCompleted, RunsFailed, ...) and `RunDuration`."""
    metrics.add_metric(name="RunsFinished", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name=f"Runs{status.capitalize()}", unit=MetricUnit.Count, value=1)
    if duration_seconds is not None:
        metrics.add_metric(name="RunDuration", unit=MetricUnit.Seconds, value=duration_seconds)


def count_callback(state: str, latency_ms: int) -> None:
    """`CallbackAttempts`, `CallbackLatency`, and `Callbacks<State>` once a delivery finishes."""
    metrics.add_metric(name="CallbackAttempts", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="CallbackLatency", unit=MetricUnit.Milliseconds, value=latency_ms)
    if state != "pending":
        metrics.add_metric(name=f"Callbacks{state.capitalize()}", unit=MetricUnit.Count, value=1)
