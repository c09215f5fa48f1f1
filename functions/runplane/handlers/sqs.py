"""One shape for every SQS-fed handler: Powertools batch processing with partial batch failures."""

import asyncio
from collections.abc import Callable

from aws_lambda_powertools.utilities.batch import (
    AsyncBatchProcessor,
    BatchProcessor,
    EventType,
    async_process_partial_response,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from runplane.observability import logger, metrics


def batch_handler(
    consume: Callable[[SQSRecord], object], *, concurrent: bool = False
) -> Callable[[dict, object], dict]:
    """A Lambda handler that calls `consume` per record; a record that raises is retried alone.

    `concurrent` runs the records of a batch side by side (in threads), for I/O-bound work.
    """
    if concurrent:
        processor = AsyncBatchProcessor(event_type=EventType.SQS)

        async def consume_in_thread(record: SQSRecord) -> object:
            return await asyncio.to_thread(consume, record)

        def process(event: dict, context: object) -> dict:
            return async_process_partial_response(
                event=event, record_handler=consume_in_thread, processor=processor, context=context
            )
    else:
        processor = BatchProcessor(event_type=EventType.SQS)

        def process(event: dict, context: object) -> dict:
            return process_partial_response(
                event=event, record_handler=consume, processor=processor, context=context
            )

    @logger.inject_lambda_context
    @metrics.log_metrics
    def lambda_handler(event: dict, context: object) -> dict:
        return process(event, context)

    return lambda_handler
