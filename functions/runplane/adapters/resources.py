"""DynamoDB: the resources table (one item per resource, the record as JSON beside its TTL)."""

from __future__ import annotations

import re
import time
from typing import Any

from runplane.adapters.dynamo import UUID, TableAdapter, decode_cursor, encode_cursor, to_item, write_if
from runplane.domain.resources import ResourceQuery, ResourceRecord

MAX_BATCH = 100  # BatchGetItem's limit: a run names at most 100 resources


class ResourceStore(TableAdapter):
    def put(self, record: ResourceRecord) -> bool:
        """Store a new resource; False when one with its id exists."""
        return write_if(
            self.client,
            "put_item",
            TableName=self.table,
            Item=self._item(record),
            ConditionExpression="attribute_not_exists(id)",
        )

    def replace(self, record: ResourceRecord, *, status: str) -> bool:
        """Store `record` over the resource while its status is `status`; False when it is not."""
        return write_if(
            self.client,
            "put_item",
            TableName=self.table,
            Item=self._item(record),
            ConditionExpression="#status = :status",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":status": {"S": status}},
        )

    def get(self, account_id: str, resource_id: str) -> ResourceRecord | None:
        item = self.client.get_item(
            TableName=self.table, Key=self._key(account_id, resource_id), ConsistentRead=True
        ).get("Item")
        return _record(item) if item else None

    def get_many(self, account_id: str, ids: list[str]) -> dict[str, ResourceRecord]:
        """The account's resources among `ids`, by id (consistent reads; unprocessed keys read again)."""
        found: dict[str, ResourceRecord] = {}
        keys = [self._key(account_id, i) for i in dict.fromkeys(ids)]
        for start in range(0, len(keys), MAX_BATCH):
            request = {self.table: {"Keys": keys[start : start + MAX_BATCH], "ConsistentRead": True}}
            pause = 0.05
            while request:
                answer = self.client.batch_get_item(RequestItems=request)
                for item in answer.get("Responses", {}).get(self.table, []):
                    record = _record(item)
                    found[record.id] = record
                request = answer.get("UnprocessedKeys") or {}
                if request:  # throttled in part: back off before asking for the rest
                    time.sleep(pause)
                    pause = min(pause * 2, 1.0)
        return found

    def delete(self, account_id: str, resource_id: str) -> bool:
        return write_if(
            self.client,
            "delete_item",
            TableName=self.table,
            Key=self._key(account_id, resource_id),
            ConditionExpression="attribute_exists(id)",
        )

    def list(
        self, account_id: str, query: ResourceQuery, *, limit: int, cursor: str | None, now: float
    ) -> tuple[list[ResourceRecord], str | None]:
        """Newest first (ids are UUIDv7). Filters and expiry are applied as DynamoDB reads a page, so a
        page may hold fewer than `limit` resources and still have a next one."""
        filters = ["(attribute_not_exists(expires_at) OR expires_at > :now)"]
        values: dict[str, Any] = {":a": {"S": account_id}, ":now": {"N": repr(now)}}
        if query.directory_path is not None:
            filters.append("directory_path = :directory")
            values[":directory"] = {"S": query.directory_path}
        if query.tag is not None:
            filters.append("contains(tags, :tag)")
            values[":tag"] = {"S": query.tag}
        request: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "account_id = :a",
            "FilterExpression": " AND ".join(filters),
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,
            "Limit": limit,
        }
        start = decode_cursor(cursor, {"account_id": account_id, "id": re.compile(UUID)})
        if start:
            request["ExclusiveStartKey"] = start
        page = self.client.query(**request)
        return [_record(item) for item in page.get("Items", [])], encode_cursor(page.get("LastEvaluatedKey"))

    def _item(self, record: ResourceRecord) -> dict[str, Any]:
        return to_item(
            {
                "account_id": record.account_id,
                "id": record.id,
                "doc": record.model_dump_json(),
                "status": record.status,
                "directory_path": record.directory_path,  # what listings filter by
                "tags": record.tags or None,
                "expires_at": int(record.expires_at.timestamp()) if record.expires_at else None,
            }
        )

    @staticmethod
    def _key(account_id: str, resource_id: str) -> dict[str, Any]:
        return {"account_id": {"S": account_id}, "id": {"S": resource_id}}


def _record(item: dict[str, Any]) -> ResourceRecord:
    return ResourceRecord.model_validate_json(item["doc"]["S"])
