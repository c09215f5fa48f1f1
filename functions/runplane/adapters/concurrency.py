"""DynamoDB: concurrency slots and the queues of runs waiting for one (see `definitions.CONCURRENCY`)."""

from __future__ import annotations

import base64
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from runplane.adapters.dynamo import TableAdapter, due_shard, from_item, query_due, to_av, to_item, write_if

LIMIT = "limit"
HELD = "held#"  # a scope's holders, on a few small items: "held#0000", "held#0001", …
WAIT = "wait#"
RECHECK = "recheck"
# A holder is an attribute of its shard, "h_{the run id, 22 characters}", whose value is the set of the
# tokens of the attempts to start the run that hold the slot (usually one; duplicate dispatches may join).
HOLDER = "h_"
# Holders per shard (about 30 bytes each), so that each shard stays under 1 KB: a write of one costs one
# write unit whatever the limit. A limit of N has ceil(N / SHARD_HOLDERS) shards sharing it.
SHARD_HOLDERS = 25


def shard_count(limit: int) -> int:
    return max(1, -(-limit // SHARD_HOLDERS))


def shard_capacity(limit: int, shard: int) -> int:
    count = shard_count(limit)
    return limit // count + (1 if shard < limit % count else 0)


TOKEN_RANDOM = 10**9  # the random part of a token: two attempts of a run in one millisecond differ


def attempt_token(now: float) -> int:
    """A token for one attempt to take slots: when it started, in milliseconds, and a random part."""
    return int(now * 1000) * TOKEN_RANDOM + random.randrange(TOKEN_RANDOM)  # noqa: S311 - not a secret


def token_time(token: int) -> float:
    return token // TOKEN_RANDOM / 1000


def _tokens(*tokens: int) -> dict[str, Any]:
    return {"NS": [str(token) for token in tokens]}


def holder_name(run_id: str) -> str:
    try:
        raw = uuid.UUID(run_id).bytes
    except ValueError:
        return HOLDER + run_id
    return HOLDER + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def holder_run(name: str) -> str:
    key = name.removeprefix(HOLDER)
    if len(key) != 22:
        return key
    return str(uuid.UUID(bytes=base64.urlsafe_b64decode(key + "==")))


class ConcurrencyStore(TableAdapter):
    def __init__(self, table: str, client: Any = None):
        super().__init__(table, client)
        self._limits: dict[str, tuple[float, int | None]] = {}  # scope -> (when read, limit)

    def known_limit(self, scope: str, fresh_for: float, read: Callable[[], int | None]) -> int | None:
        """The scope's limit as `read` gave it at most `fresh_for` seconds ago in this store."""
        now = time.monotonic()
        known = self._limits.get(scope)
        if known is None or now - known[0] >= fresh_for:
            known = self._limits[scope] = (now, read())
        return known[1]

    def forget_limit(self, scope: str) -> None:
        self._limits.pop(scope, None)

    def stored_limit(self, scope: str) -> int | None:
        """The limit stored for the scope (`set_limit`), None when none is."""
        item = self.client.get_item(
            TableName=self.table, Key={"scope": {"S": scope}, "entry": {"S": LIMIT}}, ConsistentRead=True
        ).get("Item")
        return from_item(item)["max_concurrency"] if item else None

    def holders(self, scope: str) -> tuple[dict[str, tuple[int, frozenset[int]]], bool]:
        """The scope's holders (run id -> (shard, the tokens of the attempts holding it for the run)), and
        whether runs wait for room."""
        query: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "#scope = :scope AND begins_with(#entry, :held)",
            "ExpressionAttributeNames": {"#scope": "scope", "#entry": "entry"},
            "ExpressionAttributeValues": {":scope": {"S": scope}, ":held": {"S": HELD}},
            "ConsistentRead": True,
        }
        holders, waiters = {}, False
        while True:
            page = self.client.query(**query)
            for item in page.get("Items", []):
                shard = int(item["entry"]["S"].removeprefix(HELD))
                waiters = waiters or "waiters" in item
                for name, value in item.items():
                    if name.startswith(HOLDER):
                        holders[holder_run(name)] = (shard, frozenset(map(int, value["NS"])))
            if "LastEvaluatedKey" not in page:
                return holders, waiters
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def take(self, scope: str, shard: int, capacity: int, run_id: str, token: int, *, queued: bool) -> bool:
        """Hold a slot of the shard for `run_id` on behalf of the attempt `token`, if it has room (and,
        unless the run is `queued` for the scope, no run waits for room), or join the attempts of the run
        that hold one already. Repeating it is harmless."""
        room = "(attribute_not_exists(#n) OR #n < :capacity)"
        if not queued:
            room += " AND attribute_not_exists(waiters)"
        key, names = self._held_key(scope, shard), {"#h": holder_name(run_id)}
        for _ in range(2):  # the holder it would join may be given back meanwhile: then take it anew
            try:
                self.client.update_item(
                    TableName=self.table,
                    Key=key,
                    UpdateExpression="SET #h = :token ADD #n :one",
                    ConditionExpression=f"attribute_not_exists(#h) AND {room}",
                    ExpressionAttributeNames={**names, "#n": "n"},
                    ExpressionAttributeValues={
                        ":token": _tokens(token),
                        ":one": to_av(1),
                        ":capacity": to_av(capacity),
                    },
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
                return True
            except self.client.exceptions.ConditionalCheckFailedException as refused:
                if names["#h"] not in refused.response.get("Item", {}):
                    return False  # no room
            # another attempt of the run holds it (or this one, a retried request): join it
            if write_if(
                self.client,
                "update_item",
                TableName=self.table,
                Key=key,
                UpdateExpression="ADD #h :token",
                ConditionExpression="attribute_exists(#h)",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={":token": _tokens(token)},
            ):
                return True
        return False

    def give_back(self, scope: str, shard: int, run_id: str, token: int) -> None:
        """Leave the attempts holding the run's slot of the shard; the slot is given back with the last
        of them. Harmless to repeat, and to other attempts of the run."""
        names = {"#h": holder_name(run_id)}
        key = self._held_key(scope, shard)
        for _ in range(3):  # each try fails only if another attempt joined or left meanwhile
            try:
                self.client.update_item(
                    TableName=self.table,
                    Key=key,
                    UpdateExpression="REMOVE #h ADD #n :less",
                    ConditionExpression="#h = :token",
                    ExpressionAttributeNames={**names, "#n": "n"},
                    ExpressionAttributeValues={":token": _tokens(token), ":less": to_av(-1)},
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
                return
            except self.client.exceptions.ConditionalCheckFailedException as failed:
                held = failed.response.get("Item", {}).get(names["#h"], {}).get("NS", [])
                if str(token) not in held:
                    return  # not one of them (any more)
            if write_if(
                self.client,
                "update_item",
                TableName=self.table,
                Key=key,
                UpdateExpression="DELETE #h :token",
                ConditionExpression="contains(#h, :one_token) AND size(#h) > :one",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={
                    ":token": _tokens(token),
                    ":one_token": to_av(token),
                    ":one": to_av(1),
                },
            ):
                return

    def release(self, scope: str, shard: int, run_id: str, seen: frozenset[int] | None = None) -> bool:
        """Give back `run_id`'s slot of the shard, whichever attempts hold it (if it still holds it:
        repeating is harmless; with `seen`, only if no other attempt joined or left since). Returns
        whether runs wait for room in the scope."""
        condition = "attribute_exists(#h)" + (" AND #h = :seen" if seen is not None else "")
        request: dict[str, Any] = {
            "TableName": self.table,
            "Key": self._held_key(scope, shard),
            "UpdateExpression": "REMOVE #h ADD #n :less",
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {"#n": "n", "#h": holder_name(run_id)},
            "ExpressionAttributeValues": {
                ":less": to_av(-1),
                **({":seen": _tokens(*seen)} if seen is not None else {}),
            },
            "ReturnValues": "ALL_NEW",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        try:
            return "waiters" in self.client.update_item(**request)["Attributes"]
        except self.client.exceptions.ConditionalCheckFailedException as failed:  # given back already
            return "waiters" in failed.response.get("Item", {})

    def note_waiters(self, scope: str, shards: int, waiting: bool) -> None:
        """Mark (or unmark) every shard of the scope as having runs waiting: while marked, only a run
        from the queue takes a free slot."""
        for shard in range(shards):
            self.client.update_item(
                TableName=self.table,
                Key=self._held_key(scope, shard),
                UpdateExpression="SET waiters = :yes" if waiting else "REMOVE waiters",
                **({"ExpressionAttributeValues": {":yes": to_av(True)}} if waiting else {}),
            )

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
        self.forget_limit(scope)
        key = {"scope": {"S": scope}, "entry": {"S": LIMIT}}
        if limit is None:
            self.client.delete_item(TableName=self.table, Key=key)
        else:
            self.client.put_item(TableName=self.table, Item={**key, "max_concurrency": to_av(limit)})

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

    def join_write(self, scope: str, position: str, run_id: str) -> dict[str, Any]:
        """Join the scope's queue, or rejoin it (no longer woken) after a wake-up that found no room."""
        item = {**self._wait_key(scope, position), "run_id": {"S": run_id}}
        return {"Put": {"TableName": self.table, "Item": item}}

    def leave_write(self, scope: str, position: str) -> dict[str, Any]:
        return {"Delete": {"TableName": self.table, "Key": self._wait_key(scope, position)}}

    @staticmethod
    def _held_key(scope: str, shard: int) -> dict[str, Any]:
        return {"scope": {"S": scope}, "entry": {"S": f"{HELD}{shard:04d}"}}

    @staticmethod
    def _recheck_key(scope: str) -> dict[str, Any]:
        return {"scope": {"S": scope}, "entry": {"S": RECHECK}}

    @staticmethod
    def _wait_key(scope: str, position: str) -> dict[str, Any]:
        return {"scope": {"S": scope}, "entry": {"S": f"{WAIT}{position}"}}
