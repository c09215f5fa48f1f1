"""Intake queue consumer: turns producers' run requests into runs."""

from runplane.handlers.sqs import batch_handler
from runplane.logic.intake import accept_intake

lambda_handler = batch_handler(lambda record: accept_intake(record.body, record.message_id))
