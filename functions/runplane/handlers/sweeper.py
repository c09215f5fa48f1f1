"""Scheduled (EventBridge) entry point: re-dispatch or end runs whose worker vanished."""

from runplane.logic.sweep import sweep
from runplane.observability import logger, metrics


@logger.inject_lambda_context
@metrics.log_metrics
def lambda_handler(event: dict, context: object) -> dict:
    return {"actions": dict(sweep())}
