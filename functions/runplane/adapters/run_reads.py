"""DynamoDB: reading the runs table — one run, many at once, listings through its indexes, runs due."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from runplane.adapters.dynamo import (
    BATCH_GET_LIMIT,
    CREATED_KEY,
    UUID,
    TableAdapter,
    decode_cursor,
    encode_cursor,
    invalid_cursor,
    query_due,
)
from runplane.adapters.run_items import created_key_of, run_pk, run_record
from runplane.domain.models import RunQuery, RunRecord


def _index(account_id: str, query: RunQuery) -> tuple[str, tuple[str, str], dict[str, list[str]]]:
    """The narrowest index for `query` (by parent, runnable, status, or all of the account's), its
    partition (attribute, value), and the filters the index's keys do not apply."""
    filters: dict[str, list[str]] = {}
    statuses = sorted(status.value for status in query.statuses)
    if query.parent_run_id:
        index, partition = "by_parent", ("account_parent", run_pk(account_id, query.parent_run_id))
        if query.runnable_id:
            filters["account_runnable"] = [f"{account_id}#{query.runnable_id}"]
    elif query.runnable_id:
        index, partition = "by_runnable", ("account_runnable", f"{account_id}#{query.runnable_id}")
    elif len(statuses) == 1:
        index, partition = "by_status", ("account_status", f"{account_id}#{statuses[0]}")
    else:
        index, partition = "by_account", ("account_id", account_id)
    if statuses and index != "by_status":
        filters["status"] = statuses
    return index, partition, filters


BATCH_GET_ATTEMPTS = 8  # BatchGetItem requests for one batch of keys before giving up (500)


class RunReads(TableAdapter):
    def _key(self, account_id: str, run_id: str) -> dict[str, Any]:
        return {"pk": {"S": run_pk(account_id, run_id)}}

    def get(self, account_id: str, run_id: str, *, consistent: bool = False) -> RunRecord | None:
        item = self.client.get_item(
            TableName=self.table, Key=self._key(account_id, run_id), ConsistentRead=consistent
        ).get("Item")
        return run_record(item) if item else None

    def list(
        self, account_id: str, query: RunQuery, *, limit: int, cursor: str | None
    ) -> tuple[list[RunRecord], str | None]:
        """Newest first, through the narrowest index (by parent, runnable, status, or all of the
        account's), the creation range as a key condition and any other filter as a filter."""
        keys, next_cursor = self._page(account_id, query, limit, cursor)
        return self._batch_get(keys), next_cursor

    def cursor_at(self, account_id: str, query: RunQuery, run_id: str, created_at: datetime) -> str:
        """A cursor of `list` for the page after the run `run_id` (created at `created_at`)."""
        _, partition, _ = _index(account_id, query)
        key = {
            "pk": run_pk(account_id, run_id),
            partition[0]: partition[1],
            "created_key": created_key_of(created_at, run_id),
        }
        return encode_cursor({name: {"S": value} for name, value in key.items()})

    def skip(self, account_id: str, query: RunQuery, *, limit: int, cursor: str | None) -> str | None:
        """The cursor after the page `list` would answer, without reading its runs."""
        return self._page(account_id, query, limit, cursor)[1]

    def _page(
        self, account_id: str, query: RunQuery, limit: int, cursor: str | None
    ) -> tuple[list[str], str | None]:
        """The keys of a page of `list`, and the cursor after it."""
        index, partition, filters = _index(account_id, query)
        names = {"#p": partition[0]}
        values: dict[str, Any] = {":p": {"S": partition[1]}}
        condition = "#p = :p"
        after, before = (
            stamp.astimezone(UTC).isoformat() if stamp else None
            for stamp in (query.created_after, query.created_before)
        )
        if after or before:
            names["#c"] = "created_key"
            values[":after"] = {"S": after or "0"}  # "0" sorts before every created_key, "~" after
            values[":before"] = {"S": before or "~"}
            condition += " AND #c BETWEEN :after AND :before"
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": index,
            "KeyConditionExpression": condition,
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if filters:
            clauses = []
            for i, (name, allowed) in enumerate(filters.items()):
                names[f"#f{i}"] = name
                placeholders = [f":f{i}_{j}" for j in range(len(allowed))]
                values.update({p: {"S": value} for p, value in zip(placeholders, allowed, strict=True)})
                clauses.append(f"#f{i} IN ({', '.join(placeholders)})")
            request["FilterExpression"] = " AND ".join(clauses)
        request["ExpressionAttributeNames"] = names
        request["ExpressionAttributeValues"] = values
        start = decode_cursor(
            cursor,
            {
                "pk": re.compile(rf"{re.escape(account_id)}#{UUID}"),
                partition[0]: partition[1],
                "created_key": re.compile(CREATED_KEY),
            },
        )
        if start:
            if not (after or "0") <= start["created_key"]["S"] <= (before or "~"):
                raise invalid_cursor()  # DynamoDB refuses a start key outside the key condition
            request["ExclusiveStartKey"] = start
        if after and before and after >= before:
            return [], None  # a range holding no instant: nothing to ask DynamoDB
        page = self.client.query(**request)
        return [item["pk"]["S"] for item in page.get("Items", [])], encode_cursor(
            page.get("LastEvaluatedKey")
        )

    def get_many(self, account_id: str, run_ids: list[str], *, consistent: bool = False) -> list[RunRecord]:
        """The runs among `run_ids` the account has, in that order (a repeated id once)."""
        return self._batch_get(
            list(dict.fromkeys(run_pk(account_id, run_id) for run_id in run_ids)), consistent
        )

    def _batch_get(self, pks: list[str], consistent: bool = False) -> list[RunRecord]:
        found: dict[str, RunRecord] = {}
        for first in range(0, len(pks), BATCH_GET_LIMIT):
            keys = [{"pk": {"S": pk}} for pk in pks[first : first + BATCH_GET_LIMIT]]
            pending: dict[str, Any] = {self.table: {"Keys": keys, "ConsistentRead": consistent}}
            pause = 0.05
            for _ in range(BATCH_GET_ATTEMPTS):
                response = self.client.batch_get_item(RequestItems=pending)
                for item in response["Responses"].get(self.table, []):
                    found[item["pk"]["S"]] = run_record(item)
                pending = response.get("UnprocessedKeys") or {}
                if not pending:
                    break
                time.sleep(pause)  # throttled (or over 16 MB): back off before the rest, as AWS advises
                pause = min(pause * 2, 1.0)
            else:
                raise RuntimeError(f"DynamoDB left {len(pending[self.table]['Keys'])} runs unread")
        return [found[pk] for pk in pks if pk in found]

    def due(self, shard: str, now: float, limit: int) -> list[tuple[str, str, float]]:
        """(account_id, run_id, due_at) of the runs whose due time has passed, oldest first."""
        items = query_due(self.client, self.table, "due", ("due_shard", "due_at"), shard, now, limit)
        found = []
        for item in items:
            account_id, run_id = item["pk"]["S"].rsplit("#", 1)
            found.append((account_id, run_id, float(item["due_at"]["N"])))
        return found
