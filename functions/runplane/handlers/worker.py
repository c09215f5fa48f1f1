"""Dispatch queue consumer: executes runs."""

from runplane.handlers.sqs import batch_handler
from runplane.logic.execute import process_dispatch

lambda_handler = batch_handler(lambda record: process_dispatch(record.body))
