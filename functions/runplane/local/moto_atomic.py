"""Make moto's DynamoDB requests atomic, as DynamoDB's are.

moto checks a ConditionExpression and then applies a write as separate steps, on the live item that
concurrent readers serialize: with concurrent requests (the threaded moto server, or threads in tests)
two conditional writes on one item can both pass, and a read can see half an update. Runplane's
exactly-once claim and its reads rest on DynamoDB's per-item atomicity, so local mode and the tests
serve moto's DynamoDB requests one at a time, each from parsing to its serialized response.
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.RLock()


def install() -> None:
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action
    if getattr(original, "_runplane_atomic", False):
        return

    def call_action(self: Any) -> Any:
        with _lock:
            return original(self)

    call_action._runplane_atomic = True  # type: ignore[attr-defined]
    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
