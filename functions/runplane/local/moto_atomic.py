"""Make moto's DynamoDB writes atomic, as DynamoDB's are.

moto checks a ConditionExpression and then applies the write as two steps; with concurrent requests (the
threaded moto server, or threads in tests) two conditional writes on one item can both pass. Runplane's
exactly-once claim rests on that atomicity, so local mode and the tests serialize moto's write operations.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

_lock = threading.RLock()
_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items")


def install() -> None:
    from moto.dynamodb.models import DynamoDBBackend

    for name in _WRITES:
        original = getattr(DynamoDBBackend, name)
        if getattr(original, "_runplane_atomic", False):
            continue

        @functools.wraps(original)
        def atomic(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            with _lock:
                return __original(self, *args, **kwargs)

        atomic._runplane_atomic = True  # type: ignore[attr-defined]
        setattr(DynamoDBBackend, name, atomic)
