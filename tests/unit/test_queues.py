from __future__ import annotations

from typing import Any

import pytest
from runplane.adapters.queues import Queues


class RecordingSqs:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def change_message_visibility(self, **request: Any) -> None:
        self.calls.append(request)


@pytest.mark.parametrize(
    ("seconds", "hidden"),
    [(0.2, 1), (4.01, 5), (300, 300), (14 * 3600, 11 * 3600), (-3, 0)],
)
def test_callback_messages_are_hidden_for_whole_seconds_within_sqs_limits(
    seconds: float, hidden: int
) -> None:
    sqs = RecordingSqs()
    Queues("dispatch", "intake-dlq", "callbacks", "callbacks-dlq", client=sqs).hide_callback(
        "receipt", seconds
    )
    assert sqs.calls == [{"QueueUrl": "callbacks", "ReceiptHandle": "receipt", "VisibilityTimeout": hidden}]
