"""DynamoDB: the runnables table."""

from __future__ import annotations

import re
from typing import Any

from runplane.adapters.dynamo import UUID, TableAdapter, decode_cursor, encode_cursor, to_item, write_if
from runplane.domain.models import Runnable

# --- runnables ---------------------------------------------------------------------------------------


class RunnableStore(TableAdapter):
    def put(self, runnable: Runnable, *, new: bool) -> bool:
        """Create (`new`) or replace an existing runnable; False when that precondition fails."""
        item = to_item(
            {"account_id": runnable.account_id, "id": runnable.id, "doc": runnable.model_dump_json()}
        )
        condition = "attribute_not_exists(id)" if new else "attribute_exists(id)"
        return write_if(
            self.client, "put_item", TableName=self.table, Item=item, ConditionExpression=condition
        )

    def get(self, account_id: str, runnable_id: str, *, consistent: bool = False) -> Runnable | None:
        key = {"account_id": {"S": account_id}, "id": {"S": runnable_id}}
        item = self.client.get_item(TableName=self.table, Key=key, ConsistentRead=consistent).get("Item")
        return Runnable.model_validate_json(item["doc"]["S"]) if item else None

    def delete(self, account_id: str, runnable_id: str) -> bool:
        key = {"account_id": {"S": account_id}, "id": {"S": runnable_id}}
        return write_if(
            self.client,
            "delete_item",
            TableName=self.table,
            Key=key,
            ConditionExpression="attribute_exists(id)",
        )

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
