"""API keys and accounts as served: scopes, keys, credits, rate limits, concurrency."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from runplane.domain.models import Strict

Scope = Literal["runs:read", "runs:write", "runnables:read", "runnables:write", "admin"]
# What a key gets when no scopes are named: everything but administering keys and the callback secret.
DEFAULT_SCOPES: tuple[Scope, ...] = ("runs:read", "runs:write", "runnables:read", "runnables:write")


class KeyRequest(Strict):
    name: str | None = Field(None, max_length=200)
    scopes: list[Scope] = Field(
        default_factory=lambda: list(DEFAULT_SCOPES),
        min_length=1,
        description="`admin` holds every permission, including managing keys and the callback secret",
    )


OrganizationId = Annotated[
    str,
    Field(
        description="The account's organization id: a random UUID given when the account is opened, which "
        "never changes (what clients that name an organization by UUID, such as Roe AI's SDK, send)",
        json_schema_extra={"format": "uuid"},
    ),
]


class ApiKey(BaseModel):
    id: str
    account_id: str
    name: str | None = None
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None = None


class CreatedApiKey(ApiKey):
    api_key: str = Field(description="`rpk_…`: shown once, store it now")
    organization_id: OrganizationId


# --- accounts ---


class Credits(BaseModel):
    """The account's budgets (null: none) and what it has used. New runs get 402 once a budget is spent."""

    limit_usd: float | None = None
    used_usd: float = 0.0
    limit_runs: int | None = None
    used_runs: int = 0


class RateLimit(BaseModel):
    """Per API key of the account: sustained requests per second and how many may come at once (0: off)."""

    per_second: float
    burst: int


class Concurrency(BaseModel):
    """How many of the account's runs may execute at once (null: no limit) and how many hold a slot now
    (null without a limit). Runs beyond the limit stay `waiting` and start oldest first as others end."""

    max_concurrency: int | None
    running: int | None


class Account(BaseModel):
    """An account as operators see it (`runplane accounts show`)."""

    account_id: str
    organization_id: OrganizationId
    credits: Credits
    rate_limit: RateLimit
    concurrency: Concurrency


class AccountView(Account):
    """The caller's account, and the key the request was made with."""

    key: ApiKey = Field(description="The caller's key (never its secret): its `scopes` are what it may do")
