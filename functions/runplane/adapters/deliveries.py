"""DynamoDB: callback deliveries (the source of truth for every attempt) and accounts' signing secrets."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

from runplane.adapters.dynamo import (
    TableAdapter,
    decode_cursor,
    due_shard,
    encode_cursor,
    from_item,
    query_due,
    to_av,
    to_item,
    update_item,
    write_if,
)
from runplane.adapters.run_items import run_pk
from runplane.domain.deliveries import CallbackAttempt, DeliveryRecord

KEPT_ATTEMPTS = 50  # the newest attempts of a delivery kept on its record
_NAMES = {
    "#state": "state",
    "#next": "next_attempt_at",
    "#lease": "lease_until",
    "#owner": "lease_owner",
    "#round": "round",
}
FINISHED_STATES = ("succeeded", "stopped", "dead")
# Still in the round `:round` (a delivery stored before rounds existed has none: round 0).
_SAME_ROUND = "(attribute_not_exists(#round) OR #round = :round)"
_NOT_HELD = "(attribute_not_exists(#lease) OR #lease < :now)"


def dead_day(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).date().isoformat()


def _item(record: DeliveryRecord, *, indexed: bool = True) -> dict[str, Any]:
    values = record.model_dump(exclude_none=True, exclude={"attempts"})
    values.update(
        pk=run_pk(record.account_id, record.run_id),
        attempts=json.dumps([a.model_dump(mode="json") for a in record.attempts], separators=(",", ":")),
    )
    if record.state == "pending" and indexed:
        values["pending_shard"] = due_shard(record.id)
    return to_item(values)


def _record(item: dict[str, Any]) -> DeliveryRecord:
    values = from_item(item)
    values["attempts"] = json.loads(values.get("attempts", "[]"))
    return DeliveryRecord.model_validate(values)


class DeliveryStore(TableAdapter):
    def _key(self, account_id: str, run_id: str, delivery_id: str) -> dict[str, Any]:
        return {"pk": {"S": run_pk(account_id, run_id)}, "id": {"S": delivery_id}}

    def create(self, record: DeliveryRecord, *, indexed: bool = True) -> bool:
        """Store a new delivery; False when it already exists. `indexed=False` leaves a pending one out of
        the overdue index until it waits for a retry (its first message is sent before it can be lost)."""
        return write_if(
            self.client,
            "put_item",
            TableName=self.table,
            Item=_item(record, indexed=indexed),
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
        """Take a due, pending delivery for one attempt; None when it is not due, finished, held or in
        another round than `record`'s.

        The attempt is counted here, so attempts that never finish (a crash) still use up the schedule.
        """
        return self._update(
            record,
            set_={"lease_owner": owner, "lease_until": lease_until},
            increment=("round_attempts",),
            condition=f"#state = :pending AND #next <= :now AND {_NOT_HELD} AND {_SAME_ROUND}",
            values={":pending": "pending", ":now": now, ":round": record.round},
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
        if next_attempt_at is not None:  # waiting for a retry: in the overdue index
            set_.update(next_attempt_at=next_attempt_at, pending_shard=due_shard(record.id))
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
        """A finished delivery becomes pending and due now, in a new round; None unless finished."""
        return self._update(
            record,
            set_={
                "state": "pending",
                "next_attempt_at": now,
                "round_attempts": 0,
                "pending_shard": due_shard(record.id),
            },
            increment=("round",),
            remove=("finished_at", "dead_day", "dead_at"),
            condition="#state IN (:succeeded, :stopped, :dead)",
            values={f":{state}": state for state in FINISHED_STATES},
        )

    def retry_now(self, record: DeliveryRecord, now: float) -> DeliveryRecord | None:
        """A pending delivery becomes due now, in a new round (a fresh schedule); None when it finished,
        moved to another round than `record`'s or is held for an attempt."""
        return self._update(
            record,
            set_={"next_attempt_at": now, "round_attempts": 0, "pending_shard": due_shard(record.id)},
            increment=("round",),
            condition=f"#state = :pending AND {_NOT_HELD} AND {_SAME_ROUND}",
            values={":pending": "pending", ":now": now, ":round": record.round},
        )

    def overdue(self, shard: str, before: float, limit: int) -> list[tuple[str, str, str, float]]:
        """(account_id, run_id, delivery_id, next_attempt_at) of pending deliveries due by `before`."""
        keys = ("pending_shard", "next_attempt_at")
        found = []
        for item in query_due(self.client, self.table, "overdue", keys, shard, before, limit):
            account_id, run_id = item["pk"]["S"].rsplit("#", 1)
            found.append((account_id, run_id, item["id"]["S"], float(item["next_attempt_at"]["N"])))
        return found

    def touch(
        self, account_id: str, run_id: str, delivery_id: str, seen_due: float, now: float
    ) -> DeliveryRecord | None:
        """Make an overdue delivery due `now` (so it is not re-enqueued again at once); None if it moved."""
        attributes = update_item(
            self.client,
            self.table,
            self._key(account_id, run_id, delivery_id),
            set_={"next_attempt_at": now},
            condition="#state = :pending AND #next = :seen",
            names={"#state": "state", "#next": "next_attempt_at"},
            values={":pending": "pending", ":seen": seen_due},
        )
        return _record(attributes) if attributes is not None else None

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

    def dead_for_account(
        self, account_id: str, since: datetime, until: datetime, limit: int, cursor: str | None
    ) -> tuple[list[tuple[str, str]], str | None]:
        """(run_id, delivery_id) of the account's deliveries that died in [since, until], newest first, at
        most `limit`, and the cursor of the next page: the `dead` index read day by day backwards, filtered
        on the account's partition keys."""
        start = _dead_start(cursor, account_id)
        if start and not since.timestamp() <= float(start["dead_at"]["N"]) <= until.timestamp():
            # a cursor of another window: DynamoDB refuses a start key outside the key condition
            if float(start["dead_at"]["N"]) < since.timestamp():
                return [], None
            start = None
        day = until.astimezone(UTC).date()
        if start:
            day = min(day, date.fromisoformat(start["dead_day"]["S"]))
        found: list[dict[str, Any]] = []
        while day >= since.astimezone(UTC).date() and len(found) <= limit:
            query: dict[str, Any] = {
                "TableName": self.table,
                "IndexName": "dead",
                "KeyConditionExpression": "dead_day = :day AND dead_at BETWEEN :since AND :until",
                "FilterExpression": "begins_with(pk, :account)",
                "ExpressionAttributeValues": {
                    ":day": {"S": day.isoformat()},
                    ":since": to_av(since.timestamp()),
                    ":until": to_av(until.timestamp()),
                    ":account": {"S": f"{account_id}#"},
                },
                "ScanIndexForward": False,
            }
            if start and start["dead_day"]["S"] == day.isoformat():
                query["ExclusiveStartKey"] = start
            while len(found) <= limit:  # one more than a page: whether another follows
                page = self.client.query(**query, Limit=limit + 1 - len(found))
                found.extend(page.get("Items", []))
                if "LastEvaluatedKey" not in page:
                    break
                query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
            day -= timedelta(days=1)
        keys = [(item["pk"]["S"].rsplit("#", 1)[1], item["id"]["S"]) for item in found[:limit]]
        return keys, _dead_cursor(found[limit - 1]) if len(found) > limit else None


def _dead_cursor(item: dict[str, Any]) -> str | None:
    # dead_at as a string: cursors hold strings only
    return encode_cursor(
        {**{k: item[k] for k in ("pk", "id", "dead_day")}, "dead_at": {"S": item["dead_at"]["N"]}}
    )


def _dead_start(cursor: str | None, account_id: str) -> dict[str, Any] | None:
    key = decode_cursor(
        cursor,
        {
            "pk": re.compile(re.escape(account_id) + r"#[^#]+"),
            "id": re.compile(r"msg_[0-9a-z_]+"),
            "dead_day": re.compile(r"\d{4}-\d\d-\d\d"),
            "dead_at": re.compile(r"\d+(\.\d+)?"),
        },
    )
    if key is not None:
        key["dead_at"] = {"N": key["dead_at"]["S"]}
    return key
