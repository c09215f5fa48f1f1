"""DynamoDB: the accounts table (organization ids, signing secrets, credit budgets and usage, rate limit
overrides)."""

from __future__ import annotations

import time
import uuid
from datetime import date, timedelta
from typing import Any

from runplane.adapters.dynamo import TableAdapter, from_item, to_av, write_if
from runplane.domain.models import DayUsage, UsageTotals


def _day_key(account_id: str, day: date) -> str:
    """A day's usage is an item of its own in the accounts table (account ids cannot contain '#')."""
    return f"{account_id}#usage#{day.isoformat()}"


class AccountStore(TableAdapter):
    """Per-account settings and usage: callback signing secrets, credit budgets and what was spent."""

    def __init__(self, table: str, client: Any = None):
        super().__init__(table, client)
        self._budgets: dict[str, tuple[float, bool]] = {}  # account -> (when read, has a budget)

    def get(self, account_id: str) -> dict[str, Any] | None:
        item = self.client.get_item(
            TableName=self.table, Key={"account_id": {"S": account_id}}, ConsistentRead=True
        ).get("Item")
        return from_item(item) if item else None

    def budgeted(self, account_id: str, fresh_for: float) -> bool:
        """Whether the account has a credit budget, as read at most `fresh_for` seconds ago by this store."""
        now = time.monotonic()
        known = self._budgets.get(account_id)
        if known is None or now - known[0] >= fresh_for:
            stored = self.get(account_id) or {}
            known = self._budgets[account_id] = (now, "limit_runs" in stored or "limit_usd" in stored)
        return known[1]

    def open(self, account_id: str, at: str) -> str:
        """Note that the account exists (its first key was made) and give it a random organization id;
        later calls change neither. Returns the organization id."""
        stored = self.client.update_item(
            TableName=self.table,
            Key={"account_id": {"S": account_id}},
            UpdateExpression="SET opened_at = if_not_exists(opened_at, :at),"
            " organization_id = if_not_exists(organization_id, :organization)",
            ExpressionAttributeValues={":at": {"S": at}, ":organization": {"S": str(uuid.uuid4())}},
            ReturnValues="ALL_NEW",
        )["Attributes"]
        return stored["organization_id"]["S"]

    def create_secret(self, account_id: str, secret: str) -> bool:
        """Set the first signing secret; False when the account already has one."""
        return write_if(
            self.client,
            "update_item",
            TableName=self.table,
            Key={"account_id": {"S": account_id}},
            UpdateExpression="SET callback_secret = :s",
            ConditionExpression="attribute_not_exists(callback_secret)",
            ExpressionAttributeValues={":s": {"S": secret}},
        )

    def rotate_secret(self, account_id: str, current: str, new: str, previous_until: float) -> bool:
        """Replace `current` (kept as the previous secret until `previous_until`); False if it changed."""
        return write_if(
            self.client,
            "update_item",
            TableName=self.table,
            Key={"account_id": {"S": account_id}},
            UpdateExpression="SET callback_secret = :new, previous_secret = :old, previous_until = :until",
            ConditionExpression="callback_secret = :old",
            ExpressionAttributeValues={
                ":new": {"S": new},
                ":old": {"S": current},
                ":until": to_av(previous_until),
            },
        )

    def charge_write(self, account_id: str) -> dict[str, Any]:
        """A transaction write counting one more run, failing when a budget (in runs, or in USD already
        spent) is exhausted: it goes with the run's own creation, so a run is charged once or not at all."""
        # setting a budget starts its usage at zero (set_credits), so a budget always has a usage to compare
        budget = (
            "(attribute_not_exists(limit_runs) OR used_runs < limit_runs)"
            " AND (attribute_not_exists(limit_usd) OR used_usd < limit_usd)"
        )
        return {"Update": {**self._add(account_id, "used_runs", 1), "ConditionExpression": budget}}

    def usage_writes(self, account_id: str, day: date, usage: UsageTotals) -> list[dict[str, Any]]:
        """Transaction writes counting a run's usage toward its day, and its priced cost toward the credit
        budget: they go with the write that ends the run, so its usage is counted once or not at all."""
        writes = []
        if usage.total_token_cost_usd:
            writes.append({"Update": self._add(account_id, "used_usd", usage.total_token_cost_usd)})
        counters = usage.model_dump()
        day_counters = {
            "TableName": self.table,
            "Key": {"account_id": {"S": _day_key(account_id, day)}},
            "UpdateExpression": "ADD " + ", ".join(f"{name} :{name}" for name in counters),
            "ExpressionAttributeValues": {f":{name}": to_av(value) for name, value in counters.items()},
        }
        return [*writes, {"Update": day_counters}]

    def count_resource(self, account_id: str, day: date, size: int, resource_id: str) -> None:
        """Count one more resource of `size` bytes on `day`, once: a transaction whose token is the resource
        id, so the SDK sending it again (a lost answer) adds nothing (DynamoDB keeps tokens for 10 minutes)."""
        update = {
            "TableName": self.table,
            "Key": {"account_id": {"S": _day_key(account_id, day)}},
            "UpdateExpression": "ADD resources_created :one, resource_bytes_created :size",
            "ExpressionAttributeValues": {":one": {"N": "1"}, ":size": to_av(size)},
        }
        self.client.transact_write_items(TransactItems=[{"Update": update}], ClientRequestToken=resource_id)

    def usage_by_day(self, account_id: str, start: date, end: date) -> list[DayUsage]:
        """The days from `start` to `end` (inclusive) that have usage, oldest first."""
        days = [start + timedelta(days=n) for n in range((end - start).days + 1)]
        found: dict[str, DayUsage] = {}
        for first in range(0, len(days), 100):
            keys = [{"account_id": {"S": _day_key(account_id, day)}} for day in days[first : first + 100]]
            pending: dict[str, Any] = {self.table: {"Keys": keys}}
            while pending:
                response = self.client.batch_get_item(RequestItems=pending)
                for item in response["Responses"].get(self.table, []):
                    values = from_item(item)
                    day = values.pop("account_id").rsplit("#", 1)[1]
                    found[day] = DayUsage(date=date.fromisoformat(day), **values)
                pending = response.get("UnprocessedKeys") or {}
        return [found[day.isoformat()] for day in days if day.isoformat() in found]

    def set_credits(self, account_id: str, limit_usd: float | None, limit_runs: int | None) -> None:
        """Set or clear (None) the budgets; what was spent so far is kept (and starts at zero)."""
        self._budgets.pop(account_id, None)
        limits = {"limit_usd": limit_usd, "limit_runs": limit_runs}
        sets = ["used_runs = if_not_exists(used_runs, :zero)", "used_usd = if_not_exists(used_usd, :zero)"]
        values: dict[str, Any] = {":zero": {"N": "0"}}
        for name, value in limits.items():
            if value is not None:
                sets.append(f"{name} = :{name}")
                values[f":{name}"] = to_av(value)
        expression = "SET " + ", ".join(sets)
        if cleared := [name for name, value in limits.items() if value is None]:
            expression += " REMOVE " + ", ".join(cleared)
        self.client.update_item(
            TableName=self.table,
            Key={"account_id": {"S": account_id}},
            UpdateExpression=expression,
            ExpressionAttributeValues=values,
        )

    def set_rate_limit(self, account_id: str, per_second: float | None, burst: int | None) -> None:
        """Override the deployment's rate limit for the account's keys; None for both restores it."""
        if per_second is None or burst is None:
            expression, values = "REMOVE rate_per_second, rate_burst", {}
        else:
            expression = "SET rate_per_second = :rate, rate_burst = :burst"
            values = {":rate": to_av(per_second), ":burst": to_av(burst)}
        self.client.update_item(
            TableName=self.table,
            Key={"account_id": {"S": account_id}},
            UpdateExpression=expression,
            **({"ExpressionAttributeValues": values} if values else {}),
        )

    def _add(self, account_id: str, attribute: str, amount: float) -> dict[str, Any]:
        return {
            "TableName": self.table,
            "Key": {"account_id": {"S": account_id}},
            "UpdateExpression": f"ADD {attribute} :amount",
            "ExpressionAttributeValues": {":amount": to_av(amount)},
        }
