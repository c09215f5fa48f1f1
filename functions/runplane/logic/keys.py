"""API keys: `rpk_<key id>_<secret>`, each with scopes. Only a SHA-256 of the secret is stored."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import threading
import time
from dataclasses import dataclass

from runplane.domain.access import DEFAULT_SCOPES, ApiKey, RateLimit, Scope
from runplane.domain.errors import Forbidden, InvalidRequest, NotFound, TooManyRequests, Unauthorized
from runplane.domain.models import ACCOUNT_ID_PATTERN, utcnow
from runplane.logic.accounts import rate_limit
from runplane.logic.services import services

PREFIX = "rpk"
ADMIN: Scope = "admin"


@dataclass(frozen=True)
class Principal:
    account_id: str
    organization_id: str  # the account's UUID (lowercase), for clients that need one
    key_id: str
    scopes: frozenset[str] = frozenset({ADMIN})
    rate_limit: RateLimit | None = None  # None: the deployment's setting

    def require(self, *needed: Scope) -> None:
        """Raise Forbidden naming what is missing; `admin` holds every permission."""
        if ADMIN in self.scopes:
            return
        missing = [scope for scope in needed if scope not in self.scopes]
        if missing:
            raise Forbidden(missing)


@dataclass(frozen=True)
class CreatedKey:
    key_id: str
    account_id: str
    organization_id: str
    token: str  # shown once


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(
    account_id: str, name: str | None = None, scopes: tuple[Scope, ...] | list[Scope] = DEFAULT_SCOPES
) -> CreatedKey:
    if not ACCOUNT_ID_PATTERN.fullmatch(account_id):
        raise InvalidRequest(f"account must match {ACCOUNT_ID_PATTERN.pattern}", "invalid_account")
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    created_at = utcnow().isoformat()
    # before the key: an account with a key exists, and has its organization id
    organization_id = services().accounts.open(account_id, created_at)
    services().keys.put(
        {
            "id": key_id,
            "account_id": account_id,
            "secret_hash": _hash(secret),
            "name": name,
            "scopes": sorted(set(scopes)),
            "created_at": created_at,
        }
    )
    return CreatedKey(key_id, account_id, organization_id, f"{PREFIX}_{key_id}_{secret}")


def get_key(key_id: str) -> ApiKey:
    stored = services().keys.get(key_id)
    if not stored:
        raise NotFound("Key", key_id)
    return _public(stored)


def list_keys(account_id: str) -> list[ApiKey]:
    return [_public(stored) for stored in services().keys.for_account(account_id)]


def revoke_key(key_id: str, account_id: str | None = None) -> None:
    """Revoke a key; with `account_id`, only one of that account's keys (others are not found)."""
    stored = services().keys.get(key_id)
    if not stored or (account_id is not None and stored["account_id"] != account_id):
        raise NotFound("Key", key_id)
    services().keys.revoke(key_id, utcnow().isoformat())
    _cache.forget(key_id)


def _scopes(stored: dict) -> frozenset[str]:
    # keys made before scopes existed hold every permission, as they did then
    return frozenset(stored.get("scopes") or [ADMIN])


def _public(stored: dict) -> ApiKey:
    return ApiKey(
        id=stored["id"],
        account_id=stored["account_id"],
        name=stored.get("name"),
        scopes=sorted(_scopes(stored)),
        created_at=stored["created_at"],
        revoked_at=stored.get("revoked_at"),
    )


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
    principal = principal_of(stored)
    _cache.put(key_id, secret_hash, principal, services().settings.key_cache_seconds)
    return principal


def principal_of(stored: dict) -> Principal:
    """Who a stored key is."""
    account = services().accounts.get(stored["account_id"]) or {}
    # an account opened before organization ids existed (or before accounts were opened) gets one now
    organization_id = account.get("organization_id") or services().accounts.open(
        stored["account_id"], stored["created_at"]
    )
    return Principal(
        stored["account_id"], organization_id, stored["id"], _scopes(stored), rate_limit(account)
    )


def admit_request(principal: Principal, now: float | None = None) -> None:
    """Rate limit per key: `burst` requests per window of burst/rate seconds (the account's limit, read
    with the key and cached as long), counted in DynamoDB so every API function instance shares the
    count. Raises TooManyRequests."""
    count_or_refuse(principal.key_id, principal.rate_limit or rate_limit({}), now)


def count_or_refuse(counter: str, limit: RateLimit, now: float | None = None) -> None:
    """Count one request on `counter` (a key, a run) in its window of `limit`; TooManyRequests when the
    window is full."""
    if limit.burst == 0:
        return
    now = time.time() if now is None else now
    window_seconds = limit.burst / limit.per_second
    window = int(now // window_seconds)
    window_end = (window + 1) * window_seconds
    if not services().keys.count_request(counter, window, limit.burst, int(window_end) + 60):
        raise TooManyRequests(max(1, math.ceil(window_end - now)))
