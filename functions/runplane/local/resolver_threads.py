"""Give each thread its own current request in powertools' resolvers, as each Lambda execution environment
has its own.

powertools keeps the request being resolved on the BaseRouter class (`BaseRouter.current_event = …`,
and the Lambda context), shared by every resolver of the process. The local gateway resolves requests
in threads, each with its own resolver: a route reading its request (its query parameters, the Host
of the Location it answers) after another request started could read that one's. Here the class keeps
one request per thread.
"""

from __future__ import annotations

import threading
from typing import Any


class _PerThread:
    """A data descriptor whose value is the calling thread's own."""

    def __init__(self) -> None:
        self._values = threading.local()

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        return getattr(self._values, "value", None)

    def __set__(self, instance: object, value: Any) -> None:
        self._values.value = value


def install() -> None:
    from aws_lambda_powertools.event_handler.api_gateway import BaseRouter

    if getattr(type(BaseRouter), "per_thread", False):
        return
    fields = {"current_event": _PerThread(), "lambda_context": _PerThread()}
    for name, field in fields.items():  # what a resolver reads: `self.current_event`
        setattr(BaseRouter, name, field)
    # what `BaseRouter.current_event = …` sets, and `BaseRouter.current_event` reads: its metaclass's
    BaseRouter.__class__ = type("PerThreadRouterType", (type(BaseRouter),), {**fields, "per_thread": True})
