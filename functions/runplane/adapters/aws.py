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


def client(service: str, *, read_timeout: int = 25, max_attempts: int = 4) -> Any:
    """A shared client. `max_attempts=1` for calls that must not be repeated (they may have run)."""
    with _lock:  # boto3 client creation is not thread-safe; use of a created client is
        return _client(service, read_timeout, max_attempts)


@cache
def _client(service: str, read_timeout: int, max_attempts: int) -> Any:
    return own_client(service, read_timeout=read_timeout, max_attempts=max_attempts)


def own_client(service: str, *, read_timeout: int = 25, max_attempts: int = 4) -> Any:
    """A client of the caller's alone, made from the shared session (whose parsed models it reuses): for a
    forked process, which must not use its parent's connections."""
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=3,
        read_timeout=read_timeout,
        max_pool_connections=50,
    )
    return session().client(service, config=config)


def is_permanent(error: Exception) -> bool:
    """An AWS error no retry can cure: the request itself is invalid (an item over 400 KB, say)."""
    code = (getattr(error, "response", None) or {}).get("Error", {}).get("Code")
    return code in {"ValidationException", "SerializationException"}
