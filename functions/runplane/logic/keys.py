"""API keys: `rpk_<key id>_<secret>`. Only a SHA-256 of the secret is stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from runplane.domain.errors import InvalidRequest, NotFound, Unauthorized
from runplane.domain.models import ACCOUNT_ID_PATTERN, utcnow
from runplane.logic.services import services

PREFIX = "rpk"


@dataclass(frozen=True)
class Principal:
    account_id: str
    key_id: str


@dataclass(frozen=True)
class CreatedKey:
    key_id: str
    account_id: str
    token: str  # shown once


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(account_id: str, name: str | None = None) -> CreatedKey:
    if not ACCOUNT_ID_PATTERN.fullmatch(account_id):
        raise InvalidRequest(f"account must match {ACCOUNT_ID_PATTERN.pattern}", "invalid_account")
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    services().keys.put(
        {
            "id": key_id,
            "account_id": account_id,
            "secret_hash": _hash(secret),
            "name": name,
            "created_at": utcnow().isoformat(),
        }
    )
    return CreatedKey(key_id, account_id, f"{PREFIX}_{key_id}_{secret}")


def revoke_key(key_id: str) -> None:
    if not services().keys.revoke(key_id, utcnow().isoformat()):
        raise NotFound("Key", key_id)
    _cache.forget(key_id)


class _PrincipalCache:
    """Verified keys, kept RUNPLANE_KEY_CACHE_SECONDS: a warm API function reads no key per request.

    A revoked key therefore keeps working for at most that long on functions that verified it recently.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, str, Principal]] = {}
        self._lock = threading.Lock()

    def get(self, key_id: str, secret_hash: str) -> Principal | None:
        with self._lock:
            entry = self._entries.get(key_id)
        if entry and entry[0] > time.monotonic() and hmac.compare_digest(entry[1], secret_hash):
            return entry[2]
        return None

    def put(self, key_id: str, secret_hash: str, principal: Principal, ttl: float) -> None:
        with self._lock:
            self._entries[key_id] = (time.monotonic() + ttl, secret_hash, principal)

    def forget(self, key_id: str) -> None:
        with self._lock:
            self._entries.pop(key_id, None)


_cache = _PrincipalCache()


def authenticate(authorization: str | None) -> Principal:
    """Resolve `Authorization: Bearer rpk_...` to its account, or raise Unauthorized."""
    scheme, _, token = (authorization or "").partition(" ")
    prefix, _, rest = token.strip().partition("_")
    key_id, _, secret = rest.partition("_")
    if scheme.lower() != "bearer" or prefix != PREFIX or not key_id or not secret:
        raise Unauthorized()
    secret_hash = _hash(secret)
    cached = _cache.get(key_id, secret_hash)
    if cached:
        return cached
    stored = services().keys.get(key_id)
    if not stored or stored.get("revoked_at") or not hmac.compare_digest(stored["secret_hash"], secret_hash):
        raise Unauthorized()
    principal = Principal(stored["account_id"], key_id)
    _cache.put(key_id, secret_hash, principal, services().settings.key_cache_seconds)
    return principal
