"""boto3 session and clients: created once per process, lazily, so handlers import only what they call.

Endpoints come from boto3's own configuration (`AWS_ENDPOINT_URL`), which is how local mode points every
client at the embedded moto server without a separate code path.
"""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

_lock = threading.Lock()


@cache
def session() -> Any:
    import boto3

    return boto3.session.Session()


def client(service: str) -> Any:
    with _lock:  # boto3 client creation is not thread-safe; use of a created client is
        return _client(service)


@cache
def _client(service: str) -> Any:
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": 4},
        connect_timeout=3,
        read_timeout=25,
        max_pool_connections=50,
    )
    return session().client(service, config=config)
