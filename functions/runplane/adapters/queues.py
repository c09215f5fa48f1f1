"""SQS: the dispatch and callbacks queues, and parking messages in a dead-letter queue with a reason."""

from __future__ import annotations

import json
import math
import time
from typing import Any

from runplane.adapters import aws
from runplane.domain.deliveries import DeliveryRecord

# SQS allows 12 hours counted from when the message was received; stay well clear of it.
MAX_VISIBILITY_SECONDS = 11 * 3600


class Queues:
    def __init__(
        self,
        dispatch_url: str,
        intake_dlq_url: str,
        callbacks_url: str = "",
        callbacks_dlq_url: str = "",
        client: Any = None,
    ):
        self._dispatch_url = dispatch_url
        self._intake_dlq_url = intake_dlq_url
        self._callbacks_url = callbacks_url
        self._callbacks_dlq_url = callbacks_dlq_url
        self._client = client

    @property
    def client(self) -> Any:
        return self._client or aws.client("sqs")

    def dispatch(self, account_id: str, run_id: str, delay_seconds: int = 0) -> None:
        """Ask a worker to execute a run (after `delay_seconds`, at most 900). Safe to repeat: workers
        claim runs with a conditional write."""
        self._send(self._dispatch_url, {"account_id": account_id, "run_id": run_id}, delay_seconds)

    def send_callback(self, delivery: DeliveryRecord) -> None:
        """Ask the callbacks function to attempt a delivery, in its current round (a message of an earlier
        round is stale). Safe to repeat: attempts are claimed."""
        message = {"account_id": delivery.account_id, "run_id": delivery.run_id, "delivery_id": delivery.id}
        self._send(
            self._callbacks_url, {**message, "round": delivery.round, "sent_at": round(time.time(), 3)}
        )

    def hide_callback(self, receipt_handle: str, seconds: float) -> None:
        """Keep a received callback message out of sight for `seconds` (at most 11 hours)."""
        self._hide(self._callbacks_url, receipt_handle, seconds)

    def reject_intake(self, body: str, message_id: str, code: str, reason: str) -> None:
        """Park an intake message that can never succeed in the intake DLQ, with the reason attached."""
        self._park(self._intake_dlq_url, body, message_id, code, reason)

    def bury_callback(self, body: str, message_id: str, reason: str) -> None:
        """Move a delivery that exhausted its schedule to the callbacks DLQ, with its last error."""
        self._park(self._callbacks_dlq_url, body, message_id, "callback_dead", reason)

    def peek_callback_dlq(self, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` messages of the callbacks DLQ, left in place (visible again at once)."""
        messages: list[dict[str, Any]] = []
        while len(messages) < limit:
            batch = self.client.receive_message(
                QueueUrl=self._callbacks_dlq_url,
                MaxNumberOfMessages=min(10, limit - len(messages)),
                VisibilityTimeout=30,
                MessageAttributeNames=["All"],
                AttributeNames=["SentTimestamp"],
                WaitTimeSeconds=0,
            ).get("Messages", [])
            if not batch:
                break
            messages += batch
        for message in messages:
            self._hide(self._callbacks_dlq_url, message["ReceiptHandle"], 0)
        return messages

    def _hide(self, queue_url: str, receipt_handle: str, seconds: float) -> None:
        self.client.change_message_visibility(
            QueueUrl=queue_url,
            ReceiptHandle=receipt_handle,
            # rounded up: a message back before its delivery is due would only be hidden again
            VisibilityTimeout=max(0, min(MAX_VISIBILITY_SECONDS, math.ceil(seconds))),
        )

    def _send(self, queue_url: str, message: dict[str, str | int], delay_seconds: int = 0) -> None:
        body = json.dumps(message, separators=(",", ":"))
        delay = {"DelaySeconds": min(delay_seconds, 900)} if delay_seconds > 0 else {}
        self.client.send_message(QueueUrl=queue_url, MessageBody=body, **delay)

    def _park(self, queue_url: str, body: str, message_id: str, code: str, reason: str) -> None:
        attributes = {
            "runplane-error-code": code,
            "runplane-error": reason[:1024] or "unknown",
            "runplane-source-message-id": message_id,
        }
        self.client.send_message(
            QueueUrl=queue_url,
            MessageBody=body,
            MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
        )
