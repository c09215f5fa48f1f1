"""One shape for every SQS-fed handler: Powertools BatchProcessor with partial batch failures."""

from collections.abc import Callable

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from runplane.observability import logger, metrics


def batch_handler(consume: Callable[[SQSRecord], object]) -> Callable[[dict, object], dict]:
    """A Lambda handler that calls `consume` per record; a record that raises is retried alone."""
    processor = BatchProcessor(event_type=EventType.SQS)

    @logger.inject_lambda_context
    @metrics.log_metrics
    def lambda_handler(event: dict, context: object) -> dict:
        return process_partial_response(
            event=event, record_handler=consume, processor=processor, context=context
        )

    return lambda_handler
