"""DynamoDB: the runnables table.

A runnable's item is keyed (account_id, id); its name is claimed by a second item keyed
("names#" + account_id, name) that holds the runnable's id, written in the same transaction, so names are
unique within an account. Account ids never contain "#": a claim never shares a partition with runnables,
and listings (one account's partition) never see it."""

from __future__ import annotations

import re
from typing import Any

from runplane.adapters.dynamo import UUID, TableAdapter, decode_cursor, encode_cursor, to_item, transact
from runplane.domain.models import Runnable

MINE_OR_FREE = "attribute_not_exists(runnable_id) OR runnable_id = :id"


class RunnableStore(TableAdapter):
    def create(self, runnable: Runnable) -> str | None:
        """Put a new runnable and claim its name. None when applied (also when an earlier attempt of this
        very write was); else the id of the runnable holding the name ("" when the claim stays contended
        by concurrent writes)."""
        write = [
            self._claim_put(runnable, "attribute_not_exists(runnable_id)", with_id=False),
            self._put(runnable),
        ]
        for _ in range(3):
            if not transact(self.client, write):
                return None
            holder = self._holder(runnable.account_id, runnable.name)
            if holder:
                return None if holder == runnable.id else holder
        return ""  # freed and taken again meanwhile, or a concurrent transaction on the claim each time

    def replace(self, runnable: Runnable, previous_name: str) -> str | None:
        """Replace a runnable whose stored name is `previous_name` (or already `runnable.name`: a retried
        write), moving its name claim. None when applied; "gone" when the runnable is not there or was
        renamed meanwhile; else the id of the runnable holding the new name."""
        names = {":old": {"S": previous_name}, ":new": {"S": runnable.name}}
        writes = [
            self._claim_put(runnable, MINE_OR_FREE),
            self._put(
                runnable,
                "attribute_exists(id) AND (#name IN (:old, :new) OR attribute_not_exists(#name))",
                names,
            ),
        ]
        if previous_name != runnable.name:
            writes.append(self._claim_delete(runnable.account_id, previous_name, runnable.id))
        reasons = transact(self.client, writes)
        if not reasons:
            return None
        if reasons[0] == "ConditionalCheckFailed":
            return self._holder(runnable.account_id, runnable.name)
        return "gone"

    def delete(self, runnable: Runnable) -> bool:
        """Delete the runnable as read and free its name; False when it was renamed meanwhile. (One already
        gone is no failure: a retried delete finds its first attempt's work done.)"""
        reasons = transact(
            self.client,
            [
                {
                    "Delete": {
                        "TableName": self.table,
                        "Key": _key(runnable.account_id, runnable.id),
                        "ConditionExpression": "attribute_not_exists(id) OR #name = :name OR attribute_not_exists(#name)",
                        "ExpressionAttributeNames": {"#name": "name"},
                        "ExpressionAttributeValues": {":name": {"S": runnable.name}},
                    }
                },
                self._claim_delete(runnable.account_id, runnable.name, runnable.id),
            ],
        )
        return not reasons

    def get(self, account_id: str, runnable_id: str, *, consistent: bool = False) -> Runnable | None:
        item = self.client.get_item(
            TableName=self.table, Key=_key(account_id, runnable_id), ConsistentRead=consistent
        ).get("Item")
        return Runnable.model_validate_json(item["doc"]["S"]) if item else None

    def find(self, account_id: str, name: str) -> Runnable | None:
        """The runnable named `name` in the account (runnables registered before names were claimed are
        found once replaced)."""
        holder = self._holder(account_id, name)
        runnable = self.get(account_id, holder) if holder else None
        return runnable if runnable and runnable.name == name else None

    def list(self, account_id: str, *, limit: int, cursor: str | None) -> tuple[list[Runnable], str | None]:
        """Newest first: runnable ids are time-ordered (UUIDv7)."""
        query: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "account_id = :a",
            "ExpressionAttributeValues": {":a": {"S": account_id}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        start = decode_cursor(cursor, {"account_id": account_id, "id": re.compile(UUID)})
        if start:
            query["ExclusiveStartKey"] = start
        page = self.client.query(**query)
        items = [Runnable.model_validate_json(item["doc"]["S"]) for item in page.get("Items", [])]
        return items, encode_cursor(page.get("LastEvaluatedKey"))

    def _put(
        self, runnable: Runnable, condition: str = "attribute_not_exists(id)", values: dict | None = None
    ) -> dict:
        item = to_item(
            {
                "account_id": runnable.account_id,
                "id": runnable.id,
                "name": runnable.name,
                "doc": runnable.model_dump_json(),
            }
        )
        put: dict[str, Any] = {"TableName": self.table, "Item": item, "ConditionExpression": condition}
        if values:
            put |= {"ExpressionAttributeNames": {"#name": "name"}, "ExpressionAttributeValues": values}
        return {"Put": put}

    def _claim_put(self, runnable: Runnable, condition: str, *, with_id: bool = True) -> dict:
        put: dict[str, Any] = {
            "TableName": self.table,
            "Item": {**_claim_key(runnable.account_id, runnable.name), "runnable_id": {"S": runnable.id}},
            "ConditionExpression": condition,
        }
        if with_id:
            put["ExpressionAttributeValues"] = {":id": {"S": runnable.id}}
        return {"Put": put}

    def _claim_delete(self, account_id: str, name: str, runnable_id: str) -> dict:
        return {
            "Delete": {
                "TableName": self.table,
                "Key": _claim_key(account_id, name),
                "ConditionExpression": MINE_OR_FREE,
                "ExpressionAttributeValues": {":id": {"S": runnable_id}},
            }
        }

    def _holder(self, account_id: str, name: str) -> str | None:
        item = self.client.get_item(
            TableName=self.table, Key=_claim_key(account_id, name), ConsistentRead=True
        ).get("Item")
        return item["runnable_id"]["S"] if item else None


def _key(account_id: str, runnable_id: str) -> dict[str, Any]:
    return {"account_id": {"S": account_id}, "id": {"S": runnable_id}}


def _claim_key(account_id: str, name: str) -> dict[str, Any]:
    return _key(f"names#{account_id}", name)
