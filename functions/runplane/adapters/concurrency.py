"""DynamoDB: concurrency slots and the queues of runs waiting for one (see `definitions.CONCURRENCY`)."""

from __future__ import annotations

from typing import Any

from runplane.adapters.dynamo import TableAdapter, due_shard, from_item, query_due, to_av, to_item, write_if

LIMIT = "limit"
SLOT = "slot#"
WAIT = "wait#"
RECHECK = "recheck"


def _slot(index: int) -> str:
    return f"{SLOT}{index:06d}"


class ConcurrencyStore(TableAdapter):
    def state(self, scope: str) -> tuple[int | None, dict[int, str]]:
        """The scope's stored limit (None: none stored) and its held slots (index -> run id)."""
        query: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "#scope = :scope AND #entry < :wait",  # limit, recheck, slot#…
            "ExpressionAttributeNames": {"#scope": "scope", "#entry": "entry"},
            "ExpressionAttributeValues": {":scope": {"S": scope}, ":wait": {"S": WAIT}},
            "ConsistentRead": True,
        }
        limit, holders = None, {}
        while True:
            page = self.client.query(**query)
            for item in map(from_item, page.get("Items", [])):
                if item["entry"] == LIMIT:
                    limit = item["max_concurrency"]
                elif item["entry"].startswith(SLOT):
                    holders[int(item["entry"].removeprefix(SLOT))] = item["holder"]
            if "LastEvaluatedKey" not in page:
                return limit, holders
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def waiting(self, scope: str, count: int) -> list[tuple[str, str]]:
        """The `count` oldest runs in the scope's queue: (queue position, run id)."""
        page = self.client.query(
            TableName=self.table,
            KeyConditionExpression="#scope = :scope AND begins_with(#entry, :wait)",
            ExpressionAttributeNames={"#scope": "scope", "#entry": "entry"},
            ExpressionAttributeValues={":scope": {"S": scope}, ":wait": {"S": WAIT}},
            ConsistentRead=True,
            Limit=count,
        )
        return [
            (item["entry"]["S"].removeprefix(WAIT), item["run_id"]["S"]) for item in page.get("Items", [])
        ]

    def set_limit(self, scope: str, limit: int | None) -> None:
        key = {"scope": {"S": scope}, "entry": {"S": LIMIT}}
        if limit is None:
            self.client.delete_item(TableName=self.table, Key=key)
        else:
            self.client.put_item(TableName=self.table, Item={**key, "max_concurrency": to_av(limit)})

    def release(self, scope: str, index: int, run_id: str) -> None:
        """Free a slot if `run_id` still holds it (so repeating is harmless)."""
        write_if(
            self.client,
            "delete_item",
            TableName=self.table,
            Key={"scope": {"S": scope}, "entry": {"S": _slot(index)}},
            ConditionExpression="holder = :run",
            ExpressionAttributeValues={":run": {"S": run_id}},
        )

    def mark_woken(self, scope: str, position: str, now: float, stale_before: float) -> bool:
        """Note that a waiting run was dispatched; False if it is gone or another waker just did."""
        return write_if(
            self.client,
            "update_item",
            TableName=self.table,
            Key=self._wait_key(scope, position),
            UpdateExpression="SET woken = :now",
            ConditionExpression="attribute_exists(#entry) AND (attribute_not_exists(woken) OR woken < :stale)",
            ExpressionAttributeNames={"#entry": "entry"},
            ExpressionAttributeValues={":now": to_av(now), ":stale": to_av(stale_before)},
        )

    def ensure_recheck(self, scope: str, at: float) -> None:
        """Have the sweeper look at the scope by `at`, unless it already will."""
        item = {
            "scope": scope,
            "entry": RECHECK,
            "recheck_shard": due_shard(scope),
            "recheck_at": at,
        }
        write_if(
            self.client,
            "put_item",
            TableName=self.table,
            Item=to_item(item),
            ConditionExpression="attribute_not_exists(#entry)",
            ExpressionAttributeNames={"#entry": "entry"},
        )

    def due_rechecks(self, shard: str, now: float, limit: int) -> list[tuple[str, float]]:
        """(scope, recheck time) of the scopes due for a recheck, oldest first."""
        items = query_due(
            self.client, self.table, "recheck", ("recheck_shard", "recheck_at"), shard, now, limit
        )
        return [(item["scope"]["S"], float(item["recheck_at"]["N"])) for item in items]

    def postpone_recheck(self, scope: str, seen: float, at: float) -> None:
        """Look again at `at`, unless another sweep already moved the recheck."""
        write_if(
            self.client,
            "update_item",
            TableName=self.table,
            Key=self._recheck_key(scope),
            UpdateExpression="SET recheck_at = :at",
            ConditionExpression="recheck_at = :seen",
            ExpressionAttributeValues={":at": to_av(at), ":seen": to_av(seen)},
        )

    def drop_recheck(self, scope: str, seen: float) -> None:
        """No run waits any more: stop looking, unless a run has just asked for a later recheck."""
        write_if(
            self.client,
            "delete_item",
            TableName=self.table,
            Key=self._recheck_key(scope),
            ConditionExpression="recheck_at = :seen",
            ExpressionAttributeValues={":seen": to_av(seen)},
        )

    def leave(self, scope: str, position: str) -> None:
        self.client.delete_item(TableName=self.table, Key=self._wait_key(scope, position))

    # --- writes for a transaction that also moves the run (RunStore.admit_write / queue_write) ---

    def take_write(self, scope: str, index: int, run_id: str) -> dict[str, Any]:
        """Take a free slot: fails if another run holds it."""
        return {
            "Put": {
                "TableName": self.table,
                "Item": to_item({"scope": scope, "entry": _slot(index), "holder": run_id}),
                "ConditionExpression": "attribute_not_exists(#entry)",
                "ExpressionAttributeNames": {"#entry": "entry"},
            }
        }

    def join_write(self, scope: str, position: str, run_id: str) -> dict[str, Any]:
        """Join the scope's queue, or rejoin it (no longer woken) after a wake-up that found no room."""
        item = {**self._wait_key(scope, position), "run_id": {"S": run_id}}
        return {"Put": {"TableName": self.table, "Item": item}}

    def leave_write(self, scope: str, position: str) -> dict[str, Any]:
        return {"Delete": {"TableName": self.table, "Key": self._wait_key(scope, position)}}

    @staticmethod
    def _recheck_key(scope: str) -> dict[str, Any]:
        return {"scope": {"S": scope}, "entry": {"S": RECHECK}}

    @staticmethod
    def _wait_key(scope: str, position: str) -> dict[str, Any]:
        return {"scope": {"S": scope}, "entry": {"S": f"{WAIT}{position}"}}
