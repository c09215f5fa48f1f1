"""What the dialects' routes share: the request's caller and dialect, parameter types and checks.

`api.app.serve` sets the caller and the dialect before the resolver runs. The dialect is a function of the
path alone, so a request refused before routing (bad key, body too large) is answered in its dialect too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, TypeVar
from uuid import UUID

from aws_lambda_powertools.event_handler.openapi.params import Header
from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent
from pydantic import AfterValidator, BaseModel, BeforeValidator, ValidationError

from runplane.domain.access import Scope
from runplane.domain.errors import InvalidRequest, Issue
from runplane.domain.files import FilePart
from runplane.domain.models import Runnable, StartRunRequest
from runplane.logic import runs
from runplane.logic.keys import Principal


class Dialect(StrEnum):
    """The public APIs served on the same core; the value is the OpenAPI tag of its routes."""

    refactor = "re-factor"
    roe = "Roe AI"
    cotool = "Cotool"


PREFIXES: tuple[tuple[str, Dialect], ...] = (("/v1/agents/", Dialect.roe), ("/api/", Dialect.cotool))

current_principal: ContextVar[Principal | None] = ContextVar("current_principal", default=None)
current_dialect: ContextVar[Dialect] = ContextVar("current_dialect", default=Dialect.refactor)
# the Lambda request id, which the logs carry: a 500 names it so the error can be found
current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)


def dialect_of(path: str) -> Dialect:
    return next((dialect for prefix, dialect in PREFIXES if f"{path}/".startswith(prefix)), Dialect.refactor)


_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2})")
_DATE_TIME_ANY_ZONE = re.compile(_DATE_TIME.pattern + "?")
_FULL_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _matching(pattern: re.Pattern[str], example: str):
    def check(value: object) -> object:
        if not (isinstance(value, str) and pattern.fullmatch(value)):
            raise ValueError(f"must be RFC 3339, like {example}")
        return value

    return check


def _in_utc(stamp: datetime) -> datetime:
    """`stamp` in UTC; without a zone, it is UTC already."""
    try:
        return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of range once in UTC") from None


# Query parameters in RFC 3339 only (pydantic alone would read a number as a Unix time, a date as midnight)
Instant = Annotated[
    datetime, BeforeValidator(_matching(_DATE_TIME, "2026-01-31T12:00:00Z")), AfterValidator(_in_utc)
]
# Roe AI's SDK sends Python's `isoformat()`: with no zone when the datetime has none (UTC, then)
ZonelessInstant = Annotated[
    datetime, BeforeValidator(_matching(_DATE_TIME_ANY_ZONE, "2026-01-31T12:00:00")), AfterValidator(_in_utc)
]
Day = Annotated[date, BeforeValidator(_matching(_FULL_DATE, "2026-01-31"))]

Model = TypeVar("Model", bound=BaseModel)
Handler = TypeVar("Handler", bound=Callable[..., object])


def parsed(model: type[Model], **fields: object) -> Model:
    """`model(**fields)` for a body a dialect mapped by hand: invalid fields are a 400 naming them."""
    try:
        return model(**fields)
    except ValidationError as error:
        issues = [Issue(".".join(["body", *map(str, e["loc"])]), e["msg"]) for e in error.errors()]
        raise InvalidRequest("Request validation failed", "validation_error", issues) from None


IdempotencyKey = Annotated[
    str | None,
    Header(
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Repeat a request safely: the same key and request within 24 h give the same run",
    ),
]


def absolute_url(event: BaseProxyEvent, path: str) -> str:
    """This API's URL for `path` as the caller sees it. Whatever API Gateway put before the routed path
    (a REST API's stage on its own host, a custom domain's base path) is kept. Without a Host header,
    `path`."""
    host = event.headers.get("host")
    if not host:
        return path
    # as sent: an HTTP API's rawPath, a REST API's requestContext.path
    seen = event.get("rawPath") or (event.get("requestContext") or {}).get("path") or event.path
    routed = event.path
    prefix = seen[: -len(routed)] if routed and seen.endswith(routed) else ""
    return f"{event.headers.get('x-forwarded-proto') or 'http'}://{host}{prefix}{path}"


REFUSALS: set[Callable[..., object]] = set()


def refusal(handler: Handler) -> Handler:
    """Mark a route's handler as one that only refuses (405 with its own `Allow`): its method is not one
    the path serves, so the `Allow` of the path's other answers leaves it out."""
    REFUSALS.add(handler)
    return handler


def principal(*needed: Scope) -> Principal:
    """The caller, holding every scope in `needed` (else 403 naming the missing ones)."""
    caller = current_principal.get()
    if caller is None:  # every non-public route is admitted with a principal; see api.app.serve
        raise RuntimeError("route reached without an authenticated principal")
    caller.require(*needed)
    return caller


def account(*needed: Scope) -> str:
    return principal(*needed).account_id


def start_run_as(
    caller: Principal,
    runnable_id: UUID,
    request: StartRunRequest,
    idempotency_key: str | None,
    *,
    files: Sequence[FilePart] = (),
    runnable: Runnable | None = None,
) -> runs.Accepted:
    """A run started by `caller` (its key is recorded as `created_by`), with the `files` of its request
    body as resources. A `runnable` the route already fetched is not read again."""
    return runs.start_run(
        caller.account_id,
        str(runnable_id),
        request,
        created_by=caller.key_id,
        idempotency_key=idempotency_key,
        files=files,
        runnable=runnable,
    )
