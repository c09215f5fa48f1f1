"""Accounts: credit budgets and usage (runs counted when accepted, USD as runnables report cost)."""

from __future__ import annotations

from runplane.domain.errors import InvalidRequest
from runplane.domain.models import ACCOUNT_ID_PATTERN, AccountView, Credits
from runplane.logic.services import services


def describe_account(account_id: str) -> AccountView:
    stored = services().accounts.get(account_id) or {}
    credits = Credits(
        limit_usd=stored.get("limit_usd"),
        used_usd=stored.get("used_usd", 0),
        limit_runs=stored.get("limit_runs"),
        used_runs=stored.get("used_runs", 0),
    )
    return AccountView(account_id=account_id, credits=credits)


def set_credits(account_id: str, limit_usd: float | None, limit_runs: int | None) -> AccountView:
    """Set an account's budgets (None removes one); usage so far counts against the new budget."""
    if not ACCOUNT_ID_PATTERN.fullmatch(account_id):
        raise InvalidRequest(f"account must match {ACCOUNT_ID_PATTERN.pattern}", "invalid_account")
    if (limit_usd is not None and limit_usd < 0) or (limit_runs is not None and limit_runs < 0):
        raise InvalidRequest("credit limits cannot be negative", "invalid_credits")
    services().accounts.set_credits(account_id, limit_usd, limit_runs)
    return describe_account(account_id)
