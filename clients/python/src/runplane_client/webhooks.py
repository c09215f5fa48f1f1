"""Verifying Runplane's callbacks: Standard Webhooks (https://www.standardwebhooks.com/) signatures.

A callback carries `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`, a space-
separated list of `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` keyed with the account's secret
(`whsec_<base64>`; `client.callbacks.secret()`). During a rotation a message carries one signature per
secret, so either secret verifies it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

TOLERANCE_SECONDS = 5 * 60  # how far a timestamp may be from now, either way (a replay's is older)
PREFIX = "whsec_"


class WebhookVerificationError(ValueError):
    """The message is not one Runplane signed with this secret just now."""


def verify(
    headers: Mapping[str, str],
    body: bytes | str,
    secret: str | bytes | Iterable[str | bytes],
    *,
    tolerance: float = TOLERANCE_SECONDS,
    now: float | None = None,
) -> Any:
    """The callback's decoded JSON body (a RunState's fields), once its signature and timestamp are
    checked; else WebhookVerificationError. `secret`: the `whsec_…` secret (or its raw bytes), or several
    (the current and the previous one, while a receiver switches)."""
    seen = {name.lower(): value for name, value in headers.items()}
    try:
        message_id, stamp, signatures = (seen[f"webhook-{h}"] for h in ("id", "timestamp", "signature"))
    except KeyError as missing:
        raise WebhookVerificationError(f"missing header {missing.args[0]}") from None
    _check_time(stamp, time.time() if now is None else now, tolerance)
    payload = body.encode() if isinstance(body, str) else body
    signed = b".".join([message_id.encode(), stamp.encode(), payload])
    offered = [part.split(",", 1)[1] for part in signatures.split() if part.startswith("v1,")]
    for key in _keys(secret):
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
        if any(hmac.compare_digest(expected, candidate.encode()) for candidate in offered):  # bytes: any text
            try:
                return json.loads(payload)
            except ValueError:
                raise WebhookVerificationError("the body is not JSON") from None
    raise WebhookVerificationError("no signature matches")


def sign(message_id: str, timestamp: int, body: bytes | str, secret: str | bytes) -> str:
    """The `webhook-signature` value Runplane sends for this message (for tests of a receiver)."""
    payload = body.encode() if isinstance(body, str) else body
    signed = b".".join([message_id.encode(), str(timestamp).encode(), payload])
    (key,) = _keys(secret)
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def _check_time(stamp: str, now: float, tolerance: float) -> None:
    if not stamp.isascii() or not stamp.isdigit():
        raise WebhookVerificationError("webhook-timestamp is not a Unix time")
    if abs(now - int(stamp)) > tolerance:
        raise WebhookVerificationError("webhook-timestamp is too far from now (a replay?)")


def _keys(secret: str | bytes | Iterable[str | bytes]) -> list[bytes]:
    secrets = [secret] if isinstance(secret, str | bytes) else list(secret)
    if not secrets:
        raise ValueError("no secret given")
    return [_key(one) for one in secrets]


def _key(secret: str | bytes) -> bytes:
    if isinstance(secret, bytes):
        return secret
    encoded = secret.removeprefix(PREFIX)
    try:
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)  # padding optional
    except binascii.Error:
        raise ValueError("a secret is `whsec_` and base64") from None
