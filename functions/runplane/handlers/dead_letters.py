"""Dispatch DLQ consumer: a run whose dispatch message died is failed, never left waiting."""

from runplane.handlers.sqs import batch_handler
from runplane.logic.execute import fail_dead_lettered

lambda_handler = batch_handler(lambda record: fail_dead_lettered(record.body))
