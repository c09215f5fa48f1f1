"""Powertools Logger and Metrics shared by all handlers (service name from POWERTOOLS_SERVICE_NAME)."""

from __future__ import annotations

import warnings

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit, single_metric

NAMESPACE = "Runplane"

# A handler invocation that recorded no metric (a duplicate message, say) is normal, not worth a warning.
warnings.filterwarnings("ignore", "No application metrics to publish", UserWarning)

logger = Logger(service="runplane")
metrics = Metrics(namespace=NAMESPACE, service="runplane")


def record_run_event(event: str, status: str, duration_seconds: float | None = None) -> None:
    """`RunsCreated` / `RunsFinished` by status, and `RunDuration` of finished runs."""
    with single_metric(name=event, unit=MetricUnit.Count, value=1, namespace=NAMESPACE) as metric:
        metric.add_dimension(name="status", value=status)
    if duration_seconds is not None:
        metrics.add_metric(name="RunDuration", unit=MetricUnit.Seconds, value=duration_seconds)
