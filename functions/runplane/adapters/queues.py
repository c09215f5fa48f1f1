"""SQS: the dispatch queue and intake dead letters."""

from __future__ import annotations

import json
from typing import Any

from runplane.adapters import aws


class Queues:
    def __init__(self, dispatch_url: str, intake_dlq_url: str, client: Any = None):
        self._dispatch_url = dispatch_url
        self._intake_dlq_url = intake_dlq_url
        self._client = client

    @property
    def client(self) -> Any:
        return self._client or aws.client("sqs")

    def dispatch(self, account_id: str, run_id: str) -> None:
        """Ask a worker to execute a run. Safe to repeat: workers claim runs with a conditional write."""
        body = json.dumps({"account_id": account_id, "run_id": run_id}, separators=(",", ":"))
        self.client.send_message(QueueUrl=self._dispatch_url, MessageBody=body)

    def reject_intake(self, body: str, message_id: str, code: str, reason: str) -> None:
        """Park an intake message that can never succeed in the intake DLQ, with the reason attached."""
        attributes = {
            "runplane-error-code": code,
            "runplane-error": reason[:1024],
            "runplane-source-message-id": message_id,
        }
        self.client.send_message(
            QueueUrl=self._intake_dlq_url,
            MessageBody=body,
            MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
        )
