"""Powertools Logger and Metrics shared by all handlers, and the X-Ray subsegment of a traced run."""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

NAMESPACE = "Runplane"
# The application log level of every function: Lambda's advanced logging controls set it
# (infra/functions.py, AWS_LAMBDA_LOG_LEVEL, which Powertools follows before POWERTOOLS_LOG_LEVEL), and local
# mode sets the same variable. INFO is what an operator acts on; per-run detail is DEBUG.
LOG_LEVEL = "INFO"

# A handler invocation that recorded no metric (a duplicate message, say) is normal, not worth a warning.
warnings.filterwarnings("ignore", "No application metrics to publish", UserWarning)

logger = Logger(service="runplane")
metrics = Metrics(namespace=NAMESPACE, service="runplane")


def _add(name: str, unit: MetricUnit, value: float) -> None:
    # Powertools keeps metrics it may not publish (POWERTOOLS_METRICS_DISABLED, as in local mode and tests)
    # and prints them anyway once a metric has 100 values: record nothing instead.
    if os.environ.get("POWERTOOLS_METRICS_DISABLED", "").lower() not in ("1", "true", "yes", "on"):
        metrics.add_metric(name=name, unit=unit, value=value)


def count_created() -> None:
    _add("RunsCreated", MetricUnit.Count, 1)


def count_finished(status: str, duration_seconds: float | None) -> None:
    """`RunsFinished`, `RunsFailed` for a failed run, and `RunDuration`."""
    _add("RunsFinished", MetricUnit.Count, 1)
    if status == "failed":
        _add("RunsFailed", MetricUnit.Count, 1)
    if duration_seconds is not None:
        _add("RunDuration", MetricUnit.Seconds, duration_seconds)


def count_agent_lost(code: str) -> None:
    """`AgentHeartbeatTimeouts` (an async agent went silent: its run ended or is sent again) and
    `AgentTimeouts` (an async agent's run reached its deadline)."""
    _add("AgentTimeouts" if code == "timeout" else "AgentHeartbeatTimeouts", MetricUnit.Count, 1)


def count_sweep_error() -> None:
    """`SweepErrors`: an item the sweeper could not handle (it is skipped, and tried again later)."""
    _add("SweepErrors", MetricUnit.Count, 1)


def count_callback(state: str) -> None:
    """`CallbackAttempts`, and `Callbacks<State>` (CallbacksSucceeded, CallbacksDead) once a delivery ends."""
    _add("CallbackAttempts", MetricUnit.Count, 1)
    if state != "pending":
        _add(f"Callbacks{state.capitalize()}", MetricUnit.Count, 1)


def _tracing_active() -> bool:
    """X-Ray records this invocation: in Lambda, with active tracing, sampled, and not turned off."""
    return (
        "LAMBDA_TASK_ROOT" in os.environ
        and os.environ.get("POWERTOOLS_TRACE_DISABLED", "").lower() not in ("1", "true")
        and "Sampled=1" in os.environ.get("_X_AMZN_TRACE_ID", "")
    )


@contextlib.contextmanager
def run_span(run_id: str, runnable_id: str, kind: str, traced: bool) -> Iterator[str | None]:
    """Execute a traced run inside an X-Ray subsegment annotated with its ids; yields the subsegment id
    (None when the run is not traced or X-Ray is not recording). The SDK is imported only here."""
    if not (traced and _tracing_active()):
        yield None
        return
    from aws_xray_sdk.core import xray_recorder

    with xray_recorder.in_subsegment("run") as subsegment:
        for name, value in (("run_id", run_id), ("runnable_id", runnable_id), ("kind", kind)):
            subsegment.put_annotation(name, value)
        yield subsegment.id if subsegment.sampled else None
