"""Plays the Lambda SQS event source mapping for one function: receive a batch, invoke the handler,
delete what succeeded and leave on the queue what `batchItemFailures` names.

Local mode runs each poller as its own process (`python -m runplane.local.poller FUNCTION`), as Lambda
runs each execution environment apart: killing one is a worker crash, and so is stopping one (see `main`).
A local worker also echoes its runs' log lines to the stack's terminal and reloads the runnable packages
that changed (`local_worker`).
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from runplane import definitions as defs
from runplane.adapters import aws
from runplane.local.lambda_context import LocalLambdaContext


def sqs_record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """An SQS message as the Lambda event source mapping delivers it."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": {
            name: {
                "stringValue": value.get("StringValue"),
                "binaryValue": value.get("BinaryValue"),
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": value["DataType"],
            }
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody"),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def load_handler(function: defs.Function) -> Callable[[dict, Any], Any]:
    module, _, name = function.handler.rpartition(".")
    return getattr(importlib.import_module(module), name)


class Poller:
    """The event source mapping of one function: its queue, batch size and handler."""

    def __init__(
        self, function: defs.Function, wait_seconds: int = 1, before_batch: Callable[[], None] | None = None
    ):
        self.function = function
        self.wait_seconds = wait_seconds
        self.before_batch = before_batch
        self.sqs = aws.client("sqs")
        self.queue_url = os.environ[defs.queue(function.queue or "").env_var]
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])
        self.queue_arn = attributes["Attributes"]["QueueArn"]
        self.handler = load_handler(function)

    def poll_once(self) -> int:
        """Receive one batch and deliver it; returns how many messages were received."""
        messages = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(self.function.batch_size, 10),
            WaitTimeSeconds=self.wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return 0
        if self.before_batch is not None:
            self.before_batch()
        region = self.sqs.meta.region_name
        event = {"Records": [sqs_record(m, self.queue_arn, region) for m in messages]}
        context = LocalLambdaContext(self.function.name, self.function.timeout_seconds)
        try:
            result = self.handler(event, context) or {}
        except Exception as error:  # as in Lambda: the whole batch returns to the queue
            print(f"[{self.function.name}] invocation failed: {error!r}", file=sys.stderr)
            return len(messages)
        failed = {failure["itemIdentifier"] for failure in result.get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        return len(messages)

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.poll_once()


def local_worker() -> Callable[[], None]:
    """Make this worker echo its runs' log lines; returns what reloads the runnable packages that changed
    (to call before each run)."""
    from runplane.local.reload import Reloader
    from runplane.local.terminal import echo_log_line
    from runplane.runnables import supervise
    from runplane.settings import get_settings

    supervise.echo_log = echo_log_line
    return Reloader(get_settings().runnable_packages)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)  # SIGHUP: the terminal closed


def main(argv: list[str]) -> None:
    """Poll until SIGTERM, SIGINT or SIGHUP, which end the process at once, whatever it is doing.

    They keep their default action. A Python handler runs only between bytecodes of the main thread:
    one that sets a flag is seen once the call in progress returns (the long poll, or a whole batch,
    and a run may take minutes), and an exception raised from one can be swallowed on its way out (an
    at-fork hook or a `__del__` merely prints it). A batch cut short is what a lost execution
    environment leaves behind, which the design already recovers from: its messages become visible
    again after their visibility timeout, an unfinished run's lease runs out, and a forked runnable dies
    with its worker (PR_SET_PDEATHSIG). (In local mode the queues and tables live in the moto server,
    which stops with the stack.)
    """
    function = defs.function(argv[0])
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)  # for SIGINT, rather than Python's KeyboardInterrupt
    # inherited blocked from the stack (runplane.local.stack.stop_signals_to_the_main_thread); one sent
    # meanwhile ends the process here
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    before_batch = local_worker() if function.name == "worker" else None
    Poller(function, before_batch=before_batch).run(threading.Event())  # never set: ends on a signal


if __name__ == "__main__":
    main(sys.argv[1:])
