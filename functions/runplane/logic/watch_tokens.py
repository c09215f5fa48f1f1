"""Watch tokens: a run's event stream for a browser, whose EventSource cannot send `Authorization`.

A key with `runs:read` asks for a token for one run; the token goes in the events URL (`?token=`). It is
signed with the key's stored secret hash, so it reads that run's events and nothing else, and stops
working when it expires (at most a day) or the key is revoked. It is a credential in a URL: short-lived by
design, and read-only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from dataclasses import replace
from datetime import UTC, datetime

from pydantic import BaseModel

from runplane.domain.errors import NotFound, Unauthorized
from runplane.logic.keys import Principal, principal_of
from runplane.logic.services import services

PREFIX = "rpw_"
MAX_TOKEN_CHARS = 512
DEFAULT_SECONDS = 3600
MAX_SECONDS = 86400
READS: frozenset[str] = frozenset({"runs:read"})


class WatchToken(BaseModel):
    token: str
    expires_at: datetime


def issue(caller: Principal, run_id: str, seconds: int) -> WatchToken:
    """A token for `run_id`'s events, valid `seconds`, for a caller holding runs:read."""
    caller.require("runs:read")
    if services().runs.get(caller.account_id, run_id) is None:
        raise NotFound("Run", run_id)
    stored = services().keys.get(caller.key_id)
    if stored is None:
        raise Unauthorized()
    expires = int(time.time()) + min(seconds, MAX_SECONDS)
    claims = _encode(
        json.dumps({"k": caller.key_id, "r": run_id, "e": expires}, separators=(",", ":")).encode()
    )
    token = f"{PREFIX}{claims}.{_signature(stored['secret_hash'], claims)}"
    return WatchToken(token=token, expires_at=datetime.fromtimestamp(expires, UTC))


def authenticate(token: str, run_id: str) -> Principal:
    """The caller a watch token stands for, allowed only to read `run_id`'s events; else Unauthorized."""
    claims, _, signature = token.removeprefix(PREFIX).partition(".")
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise Unauthorized()
    try:
        values = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
        key_id, run, expires = values["k"], values["r"], values["e"]
    except (ValueError, binascii.Error, KeyError, TypeError, RecursionError):
        raise Unauthorized() from None
    if not token.startswith(PREFIX) or run != run_id or not isinstance(expires, int) or expires < time.time():
        raise Unauthorized()
    stored = services().keys.get(key_id) if isinstance(key_id, str) and key_id.isalnum() else None
    if stored is None or stored.get("revoked_at"):
        raise Unauthorized()
    if not hmac.compare_digest(signature, _signature(stored["secret_hash"], claims)):
        raise Unauthorized()
    caller = principal_of(stored)
    caller.require("runs:read")
    return replace(caller, scopes=READS)


def _signature(secret_hash: str, claims: str) -> str:
    return _encode(hmac.new(f"watch:{secret_hash}".encode(), claims.encode(), hashlib.sha256).digest())


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
