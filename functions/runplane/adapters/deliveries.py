"""DynamoDB: callback deliveries (the source of truth for every attempt) and accounts' signing secrets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from runplane.adapters.store import (
    TableAdapter,
    due_shard,
    from_item,
    query_due,
    run_pk,
    to_av,
    to_item,
    update_item,
    write_if,
)
from runplane.domain.models import CallbackAttempt, DayUsage, DeliveryRecord, UsageTotals

KEPT_ATTEMPTS = 50  # the newest attempts of a delivery kept on its record
_NAMES = {"#state": "state", "#next": "next_attempt_at", "#lease": "lease_until", "#owner": "lease_owner"}
FINISHED_STATES = ("succeeded", "stopped", "dead")


def dead_day(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).date().isoformat()


def _item(record: DeliveryRecord) -> dict[str, Any]:
    values = record.model_dump(exclude_none=True, exclude={"attempts"})
    values.update(
        pk=run_pk(record.account_id, record.run_id),
        attempts=json.dumps([a.model_dump(mode="json") for a in record.attempts], separators=(",", ":")),
    )
    if record.state == "pending":
        values["pending_shard"] = due_shard(record.id)
    return to_item(values)


def _record(item: dict[str, Any]) -> DeliveryRecord:
    values = from_item(item)
    values["attempts"] = json.loads(values.get("attempts", "[]"))
    return DeliveryRecord.model_validate(values)


class DeliveryStore(TableAdapter):
    def _key(self, account_id: str, run_id: str, delivery_id: str) -> dict[str, Any]:
        return {"pk": {"S": run_pk(account_id, run_id)}, "id": {"S": delivery_id}}

    def create(self, record: DeliveryRecord) -> bool:
        """Store a new delivery; False when it already exists."""
        return write_if(
            self.client,
            "put_item",
            TableName=self.table,
            Item=_item(record),
            ConditionExpression="attribute_not_exists(pk)",
        )

    def get(self, account_id: str, run_id: str, delivery_id: str) -> DeliveryRecord | None:
        item = self.client.get_item(
            TableName=self.table, Key=self._key(account_id, run_id, delivery_id), ConsistentRead=True
        ).get("Item")
        return _record(item) if item else None

    def for_run(self, account_id: str, run_id: str) -> list[DeliveryRecord]:
        page = self.client.query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": run_pk(account_id, run_id)}},
            ConsistentRead=True,
        )
        return [_record(item) for item in page.get("Items", [])]

    def _update(
        self,
        record: DeliveryRecord,
        *,
        set_: dict[str, Any],
        condition: str,
        values: dict[str, Any],
        **kw: Any,
    ) -> DeliveryRecord | None:
        attributes = update_item(
            self.client,
            self.table,
            self._key(record.account_id, record.run_id, record.id),
            set_=set_,
            condition=condition,
            names={k: v for k, v in _NAMES.items() if k in condition},
            values=values,
            **kw,
        )
        return _record(attributes) if attributes is not None else None

    def claim(
        self, record: DeliveryRecord, owner: str, now: float, lease_until: float
    ) -> DeliveryRecord | None:
        """Take a due, pending delivery for one attempt; None when it is not due, finished or held.

        The attempt is counted here, so attempts that never finish (a crash) still use up the schedule.
        """
        return self._update(
            record,
            set_={"lease_owner": owner, "lease_until": lease_until},
            increment=("round_attempts",),
            condition="#state = :pending AND #next <= :now AND (attribute_not_exists(#lease) OR #lease < :now)",
            values={":pending": "pending", ":now": now},
        )

    def record_attempt(
        self,
        record: DeliveryRecord,
        owner: str,
        attempt: CallbackAttempt,
        *,
        state: str,
        next_attempt_at: float | None,
    ) -> DeliveryRecord | None:
        """Append an attempt and move to `state` (pending again with `next_attempt_at`, or finished)."""
        attempts = [*record.attempts, attempt][-KEPT_ATTEMPTS:]
        set_: dict[str, Any] = {
            "attempts": json.dumps([a.model_dump(mode="json") for a in attempts], separators=(",", ":")),
            "state": state,
        }
        remove: tuple[str, ...] = ("lease_owner", "lease_until")
        if next_attempt_at is not None:
            set_["next_attempt_at"] = next_attempt_at
        else:
            now = attempt.started_at.timestamp() + attempt.latency_ms / 1000
            set_["finished_at"] = datetime.fromtimestamp(now, UTC).isoformat()
            remove += ("next_attempt_at", "pending_shard")
            if state == "dead":
                set_.update(dead_day=dead_day(now), dead_at=now)
        return self._update(
            record,
            set_=set_,
            remove=remove,
            condition="#state = :pending AND #owner = :owner",
            values={":pending": "pending", ":owner": owner},
        )

    def reopen(self, record: DeliveryRecord, now: float) -> DeliveryRecord | None:
        """A finished delivery becomes pending and due now, with a fresh schedule; None unless finished."""
        return self._update(
            record,
            set_={
                "state": "pending",
                "next_attempt_at": now,
                "round_attempts": 0,
                "pending_shard": due_shard(record.id),
            },
            remove=("finished_at", "dead_day", "dead_at"),
            condition="#state IN (:succeeded, :stopped, :dead)",
            values={f":{state}": state for state in FINISHED_STATES},
        )

    def overdue(self, shard: str, before: float, limit: int) -> list[tuple[str, str, str, float]]:
        """(account_id, run_id, delivery_id, next_attempt_at) of pending deliveries due by `before`."""
        keys = ("pending_shard", "next_attempt_at")
        found = []
        for item in query_due(self.client, self.table, "overdue", keys, shard, before, limit):
            account_id, run_id = item["pk"]["S"].rsplit("#", 1)
            found.append((account_id, run_id, item["id"]["S"], float(item["next_attempt_at"]["N"])))
        return found

    def touch(self, account_id: str, run_id: str, delivery_id: str, seen_due: float, now: float) -> bool:
        """Make an overdue delivery due `now` (so it is not re-enqueued again at once); False if it moved."""
        attributes = update_item(
            self.client,
            self.table,
            self._key(account_id, run_id, delivery_id),
            set_={"next_attempt_at": now},
            condition="#state = :pending AND #next = :seen",
            names={"#state": "state", "#next": "next_attempt_at"},
            values={":pending": "pending", ":seen": seen_due},
        )
        return attributes is not None

    def dead_between(self, since: datetime, until: datetime) -> Iterator[tuple[str, str, str]]:
        """(account_id, run_id, delivery_id) of deliveries that died in [since, until), by day partition."""
        day = since.astimezone(UTC).date()
        while day <= until.astimezone(UTC).date():
            query: dict[str, Any] = {
                "TableName": self.table,
                "IndexName": "dead",
                "KeyConditionExpression": "dead_day = :day AND dead_at BETWEEN :since AND :until",
                "ExpressionAttributeValues": {
                    ":day": {"S": day.isoformat()},
                    ":since": to_av(since.timestamp()),
                    ":until": to_av(until.timestamp()),
                },
            }
            while True:
                page = self.client.query(**query)
                for item in page.get("Items", []):
                    account_id, run_id = item["pk"]["S"].rsplit("#", 1)
                    yield account_id, run_id, item["id"]["S"]
                if "LastEvaluatedKey" not in page:
                    break
                query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
            day += timedelta(days=1)


def _day_key(account_id: str, day: date) -> str:
    """A day's usage is an item of its own in the accounts table (account ids cannot contain '#')."""
    return f"{account_id}#usage#{day.isoformat()}"


class AccountStore(TableAdapter):
    """Per-account settings and usage: callback signing secrets, credit budgets and what was spent."""

    def get(self, account_id: str) -> dict[str, Any] | None:
        item = self.client.get_item(
            TableName=self.table, Key={"account_id": {"S": account_id}}, ConsistentRead=True
        ).get("Item")
        return from_item(item) if item else None

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

    def charge_run(self, account_id: str) -> bool:
        """Count one more run unless a budget (in runs, or in USD already spent) is exhausted."""
        # setting a budget starts its usage at zero (set_credits), so a budget always has a usage to compare
        budget = (
            "(attribute_not_exists(limit_runs) OR used_runs < limit_runs)"
            " AND (attribute_not_exists(limit_usd) OR used_usd < limit_usd)"
        )
        return self._add(account_id, "used_runs", 1, condition=budget)

    def refund_run(self, account_id: str) -> None:
        self._add(account_id, "used_runs", -1)

    def add_usage(self, account_id: str, day: date, usage: UsageTotals) -> None:
        """Count a run's usage toward its day, and its priced cost toward the credit budget."""
        if usage.total_token_cost_usd:
            self._add(account_id, "used_usd", usage.total_token_cost_usd)
        counters = usage.model_dump()
        self.client.update_item(
            TableName=self.table,
            Key={"account_id": {"S": _day_key(account_id, day)}},
            UpdateExpression="ADD " + ", ".join(f"{name} :{name}" for name in counters),
            ExpressionAttributeValues={f":{name}": to_av(value) for name, value in counters.items()},
        )

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

    def _add(self, account_id: str, attribute: str, amount: float, condition: str | None = None) -> bool:
        request: dict[str, Any] = {
            "TableName": self.table,
            "Key": {"account_id": {"S": account_id}},
            "UpdateExpression": f"ADD {attribute} :amount",
            "ExpressionAttributeValues": {":amount": to_av(amount)},
        }
        if condition:
            request["ConditionExpression"] = condition
        return write_if(self.client, "update_item", **request)
