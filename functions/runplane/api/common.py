"""What the dialects' routes share: the request's caller and dialect, parameter types and checks.

`api.app.serve` sets the caller and the dialect before the resolver runs. The dialect is a function of the path alone, so a
request refused before routing (bad key, body too large) is answered in its dialect too.
"""

from __future__ import annotations

from contextvars import ContextVar
from datetime import datetime
from enum import StrEnum
from typing import Annotated

from aws_lambda_powertools.event_handler.openapi.params import Header
from pydantic import BaseModel, model_serializer

from runplane.domain.errors import InvalidRequest, Issue
from runplane.domain.models import Scope
from runplane.logic.keys import Principal


class Dialect(StrEnum):
    """The public APIs served on the same core; the value is the OpenAPI tag of its routes."""

    refactor = "re-factor"
    roe = "Roe AI"
    cotool = "Cotool"


PREFIXES: tuple[tuple[str, Dialect], ...] = (("/v1/agents", Dialect.roe), ("/api/", Dialect.cotool))


class Shape(BaseModel):
    """A dialect's response body: a field that is None is left out (those schemas have no nulls)."""

    @model_serializer(mode="wrap")
    def _without_nones(self, serialize):  # unannotated: the schema stays the fields
        return {key: value for key, value in serialize(self).items() if value is not None}


IdempotencyKey = Annotated[
    str | None,
    Header(
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="Repeat a request safely: the same key and request within 24 h give the same run",
    ),
]

current_principal: ContextVar[Principal | None] = ContextVar("current_principal", default=None)
current_dialect: ContextVar[Dialect] = ContextVar("current_dialect", default=Dialect.refactor)


def dialect_of(path: str) -> Dialect:
    return next((dialect for prefix, dialect in PREFIXES if path.startswith(prefix)), Dialect.refactor)


def principal(*needed: Scope) -> Principal:
    """The caller, holding every scope in `needed` (else 403 naming the missing ones)."""
    caller = current_principal.get()
    if caller is None:  # every non-public route is admitted with a principal; see api.app.serve
        raise RuntimeError("route reached without an authenticated principal")
    caller.require(*needed)
    return caller


def account(*needed: Scope) -> str:
    return principal(*needed).account_id


def created_range(
    after: datetime | None, before: datetime | None, names: tuple[str, str]
) -> tuple[datetime | None, datetime | None]:
    """A creation-time filter from query parameters `names`: zoned instants, `after` earlier than `before`."""
    for stamp, name in ((after, names[0]), (before, names[1])):
        if stamp is not None and stamp.tzinfo is None:
            raise InvalidRequest(
                f"{name} needs a time zone (Z or ±hh:mm)",
                "validation_error",
                [Issue(f"query.{name}", "no time zone")],
            )
    if after and before and after >= before:
        raise InvalidRequest(
            f"{names[0]} must be earlier than {names[1]}",
            "validation_error",
            [Issue(f"query.{names[0]}", f"not earlier than {names[1]}")],
        )
    return after, before
