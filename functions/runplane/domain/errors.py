"""Domain errors. Each carries a stable `code`; api/errors.py maps the class to an HTTP status."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Issue:
    """One offending field: `field` is a dotted path such as `body.inputs.name`."""

    field: str
    message: str


@dataclass
class RunplaneError(Exception):
    message: str
    code: str = "error"
    issues: list[Issue] = field(default_factory=list)
    started: list[str] = field(default_factory=list)  # a batch failing part-way: the runs it did start

    def __str__(self) -> str:
        return self.message


class InvalidRequest(RunplaneError):
    def __init__(self, message: str, code: str = "invalid_request", issues: list[Issue] | None = None):
        super().__init__(message, code, issues or [])


class Unauthorized(RunplaneError):
    def __init__(self, message: str = "Missing or invalid API key"):
        super().__init__(message, "unauthorized")


class Forbidden(RunplaneError):
    """The key is valid but lacks permissions; `missing` lists them (served as `missingPerms`)."""

    def __init__(self, missing: list[str]):
        super().__init__(f"This API key lacks the permissions {', '.join(missing)}", "forbidden")
        self.missing = missing


class WrongAccount(RunplaneError):
    """A request names an account (a Roe `organization_id`) other than its key's."""

    def __init__(self) -> None:
        super().__init__("This API key does not belong to that organization", "organization_mismatch")


class NotFound(RunplaneError):
    def __init__(self, what: str, ident: str):
        super().__init__(f"{what} {ident} not found", f"{what.lower()}_not_found")


class Conflict(RunplaneError):
    def __init__(self, message: str, code: str = "conflict"):
        super().__init__(message, code)


class RunNotSucceeded(RunplaneError):
    """The result of a run that ended without completing was asked for."""

    def __init__(self, run_id: str, status: str, reason: str | None):
        super().__init__(f"Run {run_id} ended {status}" + (f": {reason}" if reason else ""), f"run_{status}")


class InsufficientCredits(RunplaneError):
    def __init__(self) -> None:
        super().__init__("Insufficient credits", "insufficient_credits")


class TooManyRequests(RunplaneError):
    def __init__(self, retry_after: int):
        super().__init__(f"Rate limit exceeded for this API key; retry in {retry_after} s", "rate_limited")
        self.retry_after = retry_after


class PayloadTooLarge(RunplaneError):
    def __init__(self, limit: int):
        super().__init__(f"Request body exceeds {limit} bytes", "payload_too_large")


class UnsupportedMediaType(RunplaneError):
    def __init__(self, content_type: str, accepted: tuple[str, ...] = ("application/json",)):
        super().__init__(
            f"Content-Type {content_type!r} is not supported; send {' or '.join(accepted)}",
            "unsupported_media_type",
        )


class RetryLater(Exception):
    """Not a failure: leave this queue message in place (a partial batch failure); it was hidden until due."""
