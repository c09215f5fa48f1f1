"""API keys: `rpk_<key id>_<secret>`, each with scopes. Only a SHA-256 of the secret is stored. Their rate
limit (and the one of an async agent's reports): RateLimiter."""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import threading
import time
from dataclasses import dataclass, field

from runplane.domain.access import DEFAULT_SCOPES, ApiKey, RateLimit, Scope
from runplane.domain.errors import Forbidden, InvalidRequest, NotFound, TooManyRequests, Unauthorized
from runplane.domain.models import ACCOUNT_ID_PATTERN, utcnow
from runplane.logic.accounts import rate_limit
from runplane.logic.services import services
from runplane.observability import logger

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


def _parts(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed `rpk_<key id>_<secret>`, else None."""
    prefix, _, rest = token.strip().partition("_")
    key_id, _, secret = rest.partition("_")
    return (key_id, secret) if prefix == PREFIX and key_id and secret else None


def create_key(
    account_id: str,
    name: str | None = None,
    scopes: tuple[Scope, ...] | list[Scope] = DEFAULT_SCOPES,
    token: str | None = None,
) -> CreatedKey:
    """A new key for the account; `token` chooses it (the local stack's stable dev key), else it is
    random."""
    if not ACCOUNT_ID_PATTERN.fullmatch(account_id):
        raise InvalidRequest(f"account must match {ACCOUNT_ID_PATTERN.pattern}", "invalid_account")
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    if token is not None:
        chosen = _parts(token)
        if chosen is None or not re.fullmatch(r"[0-9a-f]{16}", chosen[0]) or len(chosen[1]) < 32:
            raise InvalidRequest(
                "a chosen key must look like rpk_<16 hex digits>_<a secret of 32 characters or more>",
                "invalid_key",
            )
        key_id, secret = chosen
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
    parts = _parts(token)
    if scheme.lower() != "bearer" or parts is None:
        raise Unauthorized()
    key_id, secret = parts
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
    """Rate limit per key (the account's limit, read with the key and cached as long): RateLimiter's
    bound across every API function instance. Raises TooManyRequests."""
    count_or_refuse(principal.key_id, principal.rate_limit or rate_limit({}), now)


def count_or_refuse(counter: str, limit: RateLimit, now: float | None = None) -> None:
    """Count one request on `counter` (a key, a run) in its window of `limit`; TooManyRequests when the
    window is full."""
    _limiter.admit(counter, limit, time.time() if now is None else now)


SHARES = 8  # an instance counts a window's requests in the shared counter by eighths of its burst


@dataclass
class _Window:
    """One instance's view of one counter's window."""

    number: int
    ends_at: float
    admitted: int = 0  # requests this instance admitted in the window
    counted: int = 0  # of those, the ones added to the shared counter
    total: int = 0  # the shared count as last seen (or, once it could not be written, this instance's)
    alone: bool = False  # the counter could not be written: this instance limits the key by itself
    lock: threading.Lock = field(default_factory=threading.Lock)


class RateLimiter:
    """`burst` requests per window of burst/rate seconds per counter, with a write to the shared count
    (the keys table) only every `share` (burst/SHARES) requests an instance admits, not per request.

    An instance admits up to share - 1 requests before it counts them, and counts them with the request
    that would make a share: one ADD of their number, whose result is the window's count so far. While
    that count stays within the burst the request is admitted; past it, refused, and so is every later
    request of the window on this instance, without a write. So a window admits at most
    `burst + (share - 1)` per instance that served the counter in it (its requests not counted yet), and
    refuses nothing before `burst` were admitted; one instance alone, or a burst of at most SHARES
    (share 1, a write per request), is exact. A botocore retry of a counted batch counts it twice: it
    refuses early, never late.

    A counter that cannot be written (throttled, unreachable) is not an error: the instance then counts
    the window by itself from the count it last saw, admitting at most `burst` of it, and tries the
    shared counter again in the next window. Fail-closed would answer 429 to every caller of a key the
    limit has no reason to refuse; this keeps each instance within the key's burst.
    """

    TRACKED = 4096  # windows kept before those that ended are dropped

    def __init__(self) -> None:
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()

    def admit(self, counter: str, limit: RateLimit, now: float) -> None:
        """Admit one request on `counter` at `now`, or raise TooManyRequests."""
        if limit.burst == 0:
            return
        window = self._window(counter, limit, now)
        with window.lock:
            if not self._take(counter, window, limit.burst):
                raise TooManyRequests(max(1, math.ceil(window.ends_at - now)))

    def _window(self, counter: str, limit: RateLimit, now: float) -> _Window:
        seconds = limit.burst / limit.per_second
        number = int(now // seconds)
        with self._lock:
            window = self._windows.get(counter)
            if window is None or window.number != number:
                if len(self._windows) >= self.TRACKED:
                    self._windows = {c: w for c, w in self._windows.items() if w.ends_at > now}
                window = self._windows[counter] = _Window(number, (number + 1) * seconds)
            return window

    @staticmethod
    def _take(counter: str, window: _Window, burst: int) -> bool:
        if window.total >= burst:
            return False
        batch = window.admitted - window.counted + 1  # with this request
        if batch < min(math.ceil(burst / SHARES), burst - window.total):
            window.admitted += 1
            return True
        shared = None
        if not window.alone:
            expires_at = int(window.ends_at) + 60
            shared = services().keys.count_requests(counter, window.number, batch, expires_at)
            if shared is None:
                logger.warning(
                    "rate limit counter not written; this instance limits it alone until the window ends",
                    extra={"counter": counter, "window": window.number},
                )
                window.alone = True
        window.total = window.total + batch if shared is None else shared
        if window.total > burst:
            return False
        window.admitted += 1
        window.counted = window.admitted
        return True


_limiter = RateLimiter()
