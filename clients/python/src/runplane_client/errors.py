"""Typed errors: one class per kind of API refusal, chosen by the answer's `code`, else its status.

Every API error has the shape `{"error": message, "code": code, "issues": [...], "missingPerms"?: [...]}`;
`details` keeps the whole body.
"""

from __future__ import annotations

from typing import Any


class RunplaneError(Exception):
    """An API refusal, or a failure to get an answer at all (`status` None)."""

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        attempts: int = 1,
        retry_after: float | None = None,
    ):
        super().__init__(f"{status or 'no answer'} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.details = details or {}
        self.attempts = attempts  # requests made, retries included
        self.retry_after = retry_after  # what `Retry-After` asked for, in seconds

    @property
    def issues(self) -> list[dict[str, str]]:
        """The offending fields of a 400: `[{"field", "message"}]`."""
        return list(self.details.get("issues") or [])


class InvalidRequest(RunplaneError):
    """400: a malformed body or parameter, inputs the runnable refuses, a bad cursor."""


class Unauthorized(RunplaneError):
    """401: no API key, or one that is unknown or revoked."""


class InsufficientCredits(RunplaneError):
    """402: a credit budget of the account is spent."""


class Forbidden(RunplaneError):
    """403: the key lacks a scope (`missing_perms`)."""

    @property
    def missing_perms(self) -> list[str]:
        return list(self.details.get("missingPerms") or [])


class NotFound(RunplaneError):
    """404: no such runnable, run, resource or route in the caller's account."""


class MethodNotAllowed(RunplaneError):
    """405: the path does not serve this method."""


class Conflict(RunplaneError):
    """409: a runnable's name already taken, a run already ended, an Idempotency-Key reused, ..."""


class PayloadTooLarge(RunplaneError):
    """413: the body is larger than the deployment accepts."""


class UnsupportedMediaType(RunplaneError):
    """415: a body that is not JSON."""


class RateLimited(RunplaneError):
    """429: the key's rate limit; `retry_after` says when to try again."""


class ServerError(RunplaneError):
    """500 and other 5xx: the service failed; a request without side effects can be sent again."""


class ServiceUnavailable(ServerError):
    """502, 503, 504: the gateway or the function behind it could not answer."""


class ApiConnectionError(RunplaneError):
    """No HTTP answer: the connection failed or timed out (`status` None)."""


class WaitTimeout(RunplaneError):
    """The caller's timeout passed before the run ended; `run` is its state when last read."""

    def __init__(self, message: str, run: Any):
        super().__init__(None, "wait_timeout", message)
        self.run = run


BY_CODE: dict[str, type[RunplaneError]] = {
    "rate_limited": RateLimited,
    "insufficient_credits": InsufficientCredits,
    "unauthorized": Unauthorized,
    "forbidden": Forbidden,
    "organization_mismatch": Forbidden,
    "method_not_allowed": MethodNotAllowed,
    "payload_too_large": PayloadTooLarge,
    "unsupported_media_type": UnsupportedMediaType,
    "internal_error": ServerError,
}
BY_STATUS: dict[int, type[RunplaneError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    402: InsufficientCredits,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    429: RateLimited,
    502: ServiceUnavailable,
    503: ServiceUnavailable,
    504: ServiceUnavailable,
}


def error_class(status: int, code: str) -> type[RunplaneError]:
    if code in BY_CODE:
        return BY_CODE[code]
    if code.endswith("_not_found"):
        return NotFound
    if status in BY_STATUS:
        return BY_STATUS[status]
    return ServerError if status >= 500 else RunplaneError


def from_answer(
    status: int, body: Any, *, attempts: int = 1, retry_after: float | None = None
) -> RunplaneError:
    """The error an answer with `status` and a decoded JSON `body` (or its text) stands for."""
    details = body if isinstance(body, dict) else {}
    code = str(details.get("code") or f"http_{status}")
    message = str(details.get("error") or (body if isinstance(body, str) and body else f"HTTP {status}"))
    return error_class(status, code)(
        status, code, message, details, attempts=attempts, retry_after=retry_after
    )
