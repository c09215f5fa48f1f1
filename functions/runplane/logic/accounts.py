"""Accounts: their organization ids, credit budgets and usage (runs counted when accepted, USD as runs end,
priced from their token usage), usage by day, the rate limit of their keys and how many of their runs may
execute at once."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from runplane.domain.access import Account, AccountView, Credits, RateLimit
from runplane.domain.errors import InvalidRequest, Issue, NotFound
from runplane.domain.models import ACCOUNT_ID_PATTERN, MAX_CONCURRENCY, AccountUsage, DayUsage, utcnow
from runplane.logic import admission
from runplane.logic.services import services


def rate_limit(stored: dict[str, Any]) -> RateLimit:
    """The account's override (`runplane accounts set-rate-limit`), else the deployment's setting."""
    settings = services().settings
    if "rate_burst" in stored:
        return RateLimit(per_second=stored["rate_per_second"], burst=stored["rate_burst"])
    return RateLimit(per_second=settings.rate_limit_per_second, burst=settings.rate_limit_burst)


def set_rate_limit(account_id: str, per_second: float | None, burst: int | None) -> Account:
    _check_account_id(account_id)
    if (
        (per_second is None) != (burst is None)
        or (per_second is not None and per_second <= 0)
        or (burst or 0) < 0
    ):
        raise InvalidRequest(
            "give a positive rate and a burst of 0 or more, or neither", "invalid_rate_limit"
        )
    services().accounts.set_rate_limit(account_id, per_second, burst)
    return describe_account(account_id)


def caller_account(account_id: str, key_id: str) -> AccountView:
    """The account of a request and the key it was made with."""
    from runplane.logic.keys import get_key  # keys import this module (rate limits)

    return AccountView(**describe_account(account_id).model_dump(), key=get_key(key_id))


def describe_account(account_id: str) -> Account:
    _check_account_id(account_id)
    stored = services().accounts.get(account_id) or {}
    # an account opened before organization ids existed gets one now
    organization_id = stored.get("organization_id") or services().accounts.open(
        account_id, utcnow().isoformat()
    )
    credits = Credits(
        limit_usd=stored.get("limit_usd"),
        used_usd=stored.get("used_usd", 0),
        limit_runs=stored.get("limit_runs"),
        used_runs=stored.get("used_runs", 0),
    )
    return Account(
        account_id=account_id,
        organization_id=organization_id,
        credits=credits,
        rate_limit=rate_limit(stored),
        concurrency=admission.account_concurrency(account_id),
    )


MAX_USAGE_DAYS = 366


def account_usage(account_id: str, start: date | None, end: date | None) -> AccountUsage:
    """Token usage and spend from `start` to `end` (UTC days, inclusive; default: this month so far)."""
    today = datetime.now(UTC).date()
    end = end or today
    start = start or end.replace(day=1)
    if start > end:
        raise InvalidRequest(
            "start must not be after end", "invalid_period", [Issue("query.start", "after end")]
        )
    if (end - start).days >= MAX_USAGE_DAYS:
        raise InvalidRequest(
            f"a period may span at most {MAX_USAGE_DAYS} days",
            "invalid_period",
            [Issue("query.start", "too early")],
        )
    days = services().accounts.usage_by_day(account_id, start, end)
    totals = {
        name: sum(getattr(day, name) for day in days) for name in DayUsage.model_fields if name != "date"
    }
    return AccountUsage(account_id=account_id, start=start, end=end, days=days, **totals)


def set_concurrency(account_id: str, limit: int | None) -> Account:
    """Give an account its own concurrency limit (0: none), or None to follow the deployment's default.
    Runs waiting for room start at once if the new limit has it; running runs are never stopped."""
    _check_account_id(account_id)
    if limit is not None and not 0 <= limit <= MAX_CONCURRENCY:
        raise InvalidRequest(f"max_concurrency must be 0 to {MAX_CONCURRENCY}", "invalid_concurrency")
    admission.set_account_limit(account_id, limit)
    return describe_account(account_id)


def known_account(account_id: str) -> None:
    """Refuse an account that has never been opened (its first key opens it; keys made before accounts
    were opened have none opened, but their account is real all the same): reads must not invent one."""
    _check_account_id(account_id)
    if services().accounts.get(account_id) is None and not services().keys.for_account(account_id):
        raise NotFound("Account", account_id)


def _check_account_id(account_id: str) -> None:
    if not ACCOUNT_ID_PATTERN.fullmatch(account_id):
        raise InvalidRequest(f"account must match {ACCOUNT_ID_PATTERN.pattern}", "invalid_account")


def set_credits(account_id: str, limit_usd: float | None, limit_runs: int | None) -> Account:
    """Set an account's budgets (None removes one); usage so far counts against the new budget."""
    _check_account_id(account_id)
    if (limit_usd is not None and limit_usd < 0) or (limit_runs is not None and limit_runs < 0):
        raise InvalidRequest("credit limits cannot be negative", "invalid_credits")
    services().accounts.set_credits(account_id, limit_usd, limit_runs)
    return describe_account(account_id)
