"""Callbacks queue consumer: one signed attempt per due delivery, the batch's attempts side by side."""

from runplane.handlers.sqs import batch_handler
from runplane.logic.deliver import process_callback

lambda_handler = batch_handler(
    lambda record: process_callback(record.body, record.receipt_handle, record.message_id), concurrent=True
)
