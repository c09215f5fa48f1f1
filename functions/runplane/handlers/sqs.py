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

from runplane.domain.errors import RetryLater
from runplane.observability import logger, metrics


def batch_handler(
    consume: Callable[[SQSRecord], object], *, concurrent: bool = False
) -> Callable[[dict, object], dict]:
    """A Lambda handler that calls `consume` per record; a record that raises is retried alone.

    Failures are always reported as `batchItemFailures`, even when the whole batch fails: a scheduled
    retry (RetryLater) is routine, and an invocation error would only make the service retry the batch.
    `concurrent` runs the records of a batch side by side (in threads), for I/O-bound work.
    """

    def consume_logged(record: SQSRecord) -> object:
        try:
            return consume(record)
        except RetryLater:
            raise
        except Exception:
            logger.exception("message failed; SQS delivers it again", extra={"message_id": record.message_id})
            raise

    if concurrent:
        processor = AsyncBatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

        async def consume_in_thread(record: SQSRecord) -> object:
            return await asyncio.to_thread(consume_logged, record)

        def process(event: dict, context: object) -> dict:
            return async_process_partial_response(
                event=event, record_handler=consume_in_thread, processor=processor, context=context
            )
    else:
        processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

        def process(event: dict, context: object) -> dict:
            return process_partial_response(
                event=event, record_handler=consume_logged, processor=processor, context=context
            )

    @logger.inject_lambda_context
    @metrics.log_metrics
    def lambda_handler(event: dict, context: object) -> dict:
        return process(event, context)

    return lambda_handler
