"""DynamoDB: the API keys table (keys and their request counters)."""

from __future__ import annotations

from typing import Any

from runplane.adapters.dynamo import TableAdapter, from_item, to_av, to_item, write_if

# --- API keys ----------------------------------------------------------------------------------------


class KeyStore(TableAdapter):
    def put(self, key: dict[str, Any]) -> None:
        self.client.put_item(
            TableName=self.table, Item=to_item(key), ConditionExpression="attribute_not_exists(id)"
        )

    def get(self, key_id: str) -> dict[str, Any] | None:
        item = self.client.get_item(TableName=self.table, Key={"id": {"S": key_id}}).get("Item")
        return from_item(item) if item else None

    def count_requests(self, counter: str, window: int, requests: int, expires_at: int) -> int | None:
        """Add `requests` to the counter's window; the window's count with them, or None when DynamoDB
        could not be asked (throttled, unreachable: the caller limits without it)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            reply = self.client.update_item(
                TableName=self.table,
                Key={"id": {"S": f"{counter}#rate#{window}"}},
                UpdateExpression="ADD hits :n SET expires_at = :expires",
                ExpressionAttributeValues={":n": to_av(requests), ":expires": to_av(expires_at)},
                ReturnValues="UPDATED_NEW",
            )
        except (BotoCoreError, ClientError):
            return None
        return int(reply["Attributes"]["hits"]["N"])

    def for_account(self, account_id: str) -> list[dict[str, Any]]:
        """The account's keys, oldest first (the index holds keys only; each key is then read)."""
        query: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": "by_account",
            "KeyConditionExpression": "account_id = :a",
            "ExpressionAttributeValues": {":a": {"S": account_id}},
        }
        ids: list[str] = []
        while True:
            page = self.client.query(**query)
            ids += [item["id"]["S"] for item in page.get("Items", [])]
            if "LastEvaluatedKey" not in page:
                break
            query["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return [key for key_id in ids if (key := self.get(key_id))]

    def revoke(self, key_id: str, revoked_at: str) -> bool:
        return write_if(
            self.client,
            "update_item",
            TableName=self.table,
            Key={"id": {"S": key_id}},
            UpdateExpression="SET revoked_at = if_not_exists(revoked_at, :t)",
            ConditionExpression="attribute_exists(id)",
            ExpressionAttributeValues={":t": {"S": revoked_at}},
        )
