"""DynamoDB plumbing every table adapter shares: attribute values, conditional writes, transactions,
sparse due-time indexes and opaque listing cursors."""

from __future__ import annotations

import base64
import binascii
import json
import random
import re
import time
import zlib
from datetime import datetime
from typing import Any

from runplane import definitions as defs
from runplane.adapters import aws
from runplane.domain.errors import InvalidRequest

# --- attribute values ---------------------------------------------------------------------------


def to_av(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, int | float):
        return {"N": repr(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, datetime):
        return {"S": value.isoformat()}
    if isinstance(value, list | tuple):
        return {"L": [to_av(v) for v in value]}
    raise TypeError(f"cannot store {type(value).__name__}")


def from_av(av: dict[str, Any]) -> Any:
    (kind, value), *_ = av.items()
    if kind == "N":
        return int(value) if value.lstrip("-").isdigit() else float(value)
    if kind == "L":
        return [from_av(v) for v in value]
    if kind == "NULL":
        return None
    return value


def to_item(values: dict[str, Any]) -> dict[str, Any]:
    return {k: to_av(v) for k, v in values.items() if v is not None}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: from_av(v) for k, v in item.items()}


def update_request(
    table: str,
    key: dict[str, Any],
    *,
    set_: dict[str, Any],
    condition: str,
    names: dict[str, str],
    values: dict[str, Any],
    remove: tuple[str, ...] = (),
    increment: tuple[str, ...] = (),
    append: dict[str, list[Any]] | None = None,
) -> dict[str, Any]:
    """A conditional UpdateItem request (for `update_item` or a transaction).

    `condition` refers to attributes by the `#names` given and to `:values` (plain Python values).
    `append` adds values at the end of list attributes (creating them).
    """
    names = dict(names)
    attr_values = {k: to_av(v) for k, v in values.items()}
    clauses = []
    for i, (name, value) in enumerate(set_.items()):
        names[f"#s{i}"] = name
        attr_values[f":s{i}"] = to_av(value)
        clauses.append(f"#s{i} = :s{i}")
    for i, name in enumerate(increment):
        names[f"#i{i}"] = name
        clauses.append(f"#i{i} = if_not_exists(#i{i}, :zero) + :one")
    if increment:
        attr_values.update({":zero": {"N": "0"}, ":one": {"N": "1"}})
    for i, (name, items) in enumerate((append or {}).items()):
        names[f"#a{i}"] = name
        attr_values[f":a{i}"] = to_av(items)
        clauses.append(f"#a{i} = list_append(if_not_exists(#a{i}, :nothing), :a{i})")
    if append:
        attr_values[":nothing"] = {"L": []}
    expression = "SET " + ", ".join(clauses) if clauses else ""
    if remove:
        names.update({f"#r{i}": name for i, name in enumerate(remove)})
        expression += " REMOVE " + ", ".join(f"#r{i}" for i in range(len(remove)))
    request: dict[str, Any] = {
        "TableName": table,
        "Key": key,
        "UpdateExpression": expression.strip(),
        "ConditionExpression": condition,
        "ExpressionAttributeNames": names,
    }
    if attr_values:
        request["ExpressionAttributeValues"] = attr_values
    return request


def update_item(client: Any, table: str, key: dict[str, Any], **update: Any) -> dict[str, Any] | None:
    """One conditional UpdateItem (see `update_request`); the new item, or None when the condition failed."""
    try:
        return client.update_item(**update_request(table, key, **update), ReturnValues="ALL_NEW")[
            "Attributes"
        ]
    except client.exceptions.ConditionalCheckFailedException:
        return None


def transact(client: Any, writes: list[dict[str, Any]]) -> list[str]:
    """Apply `writes` (TransactWriteItems entries) all or none. Empty when applied; otherwise why each
    was not, by position: "ConditionalCheckFailed", "TransactionConflict" (a concurrent transaction on
    the item; try again) or "None" (nothing wrong with this one)."""
    try:
        client.transact_write_items(TransactItems=writes)
    except client.exceptions.TransactionCanceledException as cancelled:
        reasons = cancelled.response.get("CancellationReasons") or [{"Code": "Unknown"}]
        return [reason.get("Code", "None") for reason in reasons]
    return []


def query_due(
    client: Any, table: str, index: str, keys: tuple[str, str], shard: str, before: float, limit: int
) -> list[dict[str, Any]]:
    """Items of a sparse index sharded on `keys[0]` and sorted by time `keys[1]`, due by `before`."""
    page = client.query(
        TableName=table,
        IndexName=index,
        KeyConditionExpression=f"{keys[0]} = :shard AND {keys[1]} <= :before",
        ExpressionAttributeValues={":shard": {"S": shard}, ":before": to_av(before)},
        Limit=limit,
    )
    return page.get("Items", [])


def write_if(client: Any, operation: str, **request: Any) -> bool:
    """One conditional `put_item`, `update_item` or `delete_item`; False when its condition failed."""
    try:
        getattr(client, operation)(**request)
    except client.exceptions.ConditionalCheckFailedException:
        return False
    return True


def due_shard(key: str) -> str:
    """The shard of a sparse due-time index a run (or a concurrency scope) is filed under."""
    return str(zlib.crc32(key.encode()) % defs.DUE_SHARDS)


class TableAdapter:
    """One DynamoDB table; its client is the process's shared one unless given (tests)."""

    def __init__(self, table: str, client: Any = None):
        self.table = table
        self._client = client

    @property
    def client(self) -> Any:
        return self._client or aws.client("dynamodb")

    def commit(self, writes: list[dict[str, Any]]) -> list[str]:
        """`transact` writes built by any of the adapters (they share one client)."""
        return transact(self.client, writes)

    def commit_all(self, writes: list[dict[str, Any]]) -> list[str]:
        """`commit`, but a single write as the plain request it is (half the write units of a transaction)."""
        if len(writes) > 1:
            return self.commit(writes)
        (kind, request), *_ = writes[0].items()
        operation = {"Put": "put_item", "Update": "update_item", "Delete": "delete_item"}[kind]
        return [] if write_if(self.client, operation, **request) else ["ConditionalCheckFailed"]

    def commit_through_conflicts(self, writes: list[dict[str, Any]], tries: int = 6) -> list[str]:
        """`commit`, tried again (with a jittered pause) while a concurrent transaction on one of the items
        is all that stopped it; the reasons of the last try. Each try has its own idempotency token:
        botocore's own retries of one try resend its token, so DynamoDB applies that try at most once."""
        failed = self.commit(writes)
        for attempt in range(tries - 1):
            if "TransactionConflict" not in failed:
                break
            time.sleep(random.uniform(0.01, 0.05) * 2**attempt)  # noqa: S311 - jitter
            failed = self.commit(writes)
        return failed


# --- cursors: an opaque, validated wrapper around LastEvaluatedKey -----------------------------------


def encode_cursor(last_key: dict[str, Any] | None) -> str | None:
    if not last_key:
        return None
    raw = json.dumps(from_item(last_key), separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


BATCH_GET_LIMIT = 100  # keys per BatchGetItem request
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
CREATED_KEY = rf"\d{{4}}-\d\d-\d\dT[0-9:.+-]+#{UUID}"  # adapters.run_items.created_key


def decode_cursor(cursor: str | None, expected: dict[str, str | re.Pattern[str]]) -> dict[str, Any] | None:
    """The start key in `cursor`, which must hold exactly the key attributes named in `expected`, each a
    string equal to its value there or matching its pattern: a cursor made by hand or for another
    listing is a 400, not an error from DynamoDB."""
    if not cursor:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, RecursionError):
        key = None
    valid = (
        isinstance(key, dict)
        and set(key) == set(expected)
        and all(isinstance(value, str) for value in key.values())
        and all(
            key[name] == want if isinstance(want, str) else want.fullmatch(key[name])
            for name, want in expected.items()
        )
    )
    if not valid:
        raise invalid_cursor()
    return to_item(key)


def invalid_cursor() -> InvalidRequest:
    return InvalidRequest("cursor is not valid for this listing", "invalid_cursor")
