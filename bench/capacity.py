"""DynamoDB capacity units of the requests a process makes, computed as DynamoDB bills them on demand.

moto answers `ReturnConsumedCapacity` with a fixed figure (0.5 or 1 whatever the item), so the units are
computed here from the items themselves, read from moto's backend around each write:

- a write costs ceil(KB) of the larger of the item before and after it (1 at least, a failed condition
  included), twice inside a transaction;
- each global secondary index whose entry the write puts, changes or removes costs ceil(KB) of that entry
  (its keys and projected attributes), a key change there being a delete and a put; an index whose
  entry is unchanged costs nothing;
- a read costs ceil(size / 4 KB), 1 at least (half for an eventually consistent one), a Query summing
  the items it returns.

Item sizes are moto's (attribute names plus values), close to DynamoDB's own.
"""

from __future__ import annotations

import math
import os
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from runplane import definitions as defs

WRITES = {"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"}
READS = {"GetItem", "Query", "Scan", "BatchGetItem", "TransactGetItems"}


def _tables() -> dict[str, defs.Table]:
    return {os.environ[table.env_var]: table for table in defs.TABLES if table.env_var in os.environ}


def _backend() -> Any:
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import dynamodb_backends

    return dynamodb_backends[DEFAULT_ACCOUNT_ID][os.environ.get("AWS_DEFAULT_REGION", "us-east-1")]


def _size(attrs: dict[str, Any], names: set[str] | None = None) -> int:
    from moto.dynamodb.models.utilities import bytesize

    return sum(bytesize(k) + v.size() for k, v in attrs.items() if names is None or k in names)


def _av_size(value: dict[str, Any]) -> int:
    (kind, inner), *_ = value.items()
    if kind in ("S", "B"):
        return len(inner.encode() if isinstance(inner, str) else inner)
    if kind == "N":
        return len(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(_av_size(v) + 1 for v in inner)
    if kind == "M":
        return 3 + sum(len(k.encode()) + _av_size(v) + 1 for k, v in inner.items())
    return sum(len(str(v)) for v in inner)  # sets


def item_size(item: dict[str, Any]) -> int:
    """An item in wire format (attribute values), in bytes."""
    return sum(len(k.encode()) + _av_size(v) for k, v in item.items())


class Units:
    """Write and read units by label (what `label()` says when the request is made), from botocore's
    before/after events on a session's clients."""

    def __init__(self, label: Callable[[], str]):
        self.label = label
        self.wru: Counter[tuple[str, str]] = Counter()
        self.rru: Counter[tuple[str, str]] = Counter()
        self._pending = threading.local()

    def register(self, events: Any) -> None:
        events.register("before-parameter-build.dynamodb", self._before)
        events.register("after-call.dynamodb", self._after)

    def clear(self) -> None:
        self.wru.clear()
        self.rru.clear()

    # --- the writes' items, before and after ---

    def _targets(self, operation: str, params: dict[str, Any]) -> list[tuple[str, dict[str, Any], bool]]:
        """(table, key, transactional) of every item a write touches."""
        if operation == "TransactWriteItems":
            targets = []
            for entry in params["TransactItems"]:
                (kind, request), *_ = entry.items()
                if kind != "ConditionCheck":
                    targets.append((request["TableName"], self._key(request), True))
            return targets
        if operation == "BatchWriteItem":
            return [
                (table, self._key(next(iter(request.values()))), False)
                for table, requests in params["RequestItems"].items()
                for request in requests
            ]
        return [(params["TableName"], self._key(params), False)]

    def _key(self, request: dict[str, Any]) -> dict[str, Any]:
        return request.get("Key") or request["Item"]

    def _item(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        schema = _tables()[table]
        names = [schema.partition_key.name] + ([schema.sort_key.name] if schema.sort_key else [])
        try:
            found = _backend().get_item(table, {n: key[n] for n in names})
        except Exception:
            return None
        return dict(found.attrs) if found is not None else None

    def _before(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name in WRITES:
            targets = self._targets(model.name, params)
            self._pending.writes = [(t, k, tx, self._item(t, k)) for t, k, tx in targets]
        elif model.name in READS:
            consistent = params.get("ConsistentRead") or any(
                r.get("ConsistentRead") for r in params.get("RequestItems", {}).values()
            )
            self._pending.consistent = bool(consistent) or model.name == "TransactGetItems"

    def _after(self, model: Any, parsed: dict[str, Any], **_: Any) -> None:
        label = (self.label(), model.name)
        if model.name in WRITES:
            for table, key, transactional, before in getattr(self._pending, "writes", []):
                after = self._item(table, key)
                self.wru[label] += self._write_units(table, before, after) * (2 if transactional else 1)
            self._pending.writes = []
        elif model.name in READS:
            self.rru[label] += self._read_units(model.name, parsed)

    def _write_units(self, table: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> float:
        largest = max(_size(before) if before else 0, _size(after) if after else 0)
        units = max(1, math.ceil(largest / 1024))
        schema = _tables()[table]
        keys = {schema.partition_key.name} | ({schema.sort_key.name} if schema.sort_key else set())
        for index in schema.indexes:
            index_keys = {index.partition_key.name} | ({index.sort_key.name} if index.sort_key else set())
            projected = keys | index_keys | set(index.include)
            entries = [
                {k: v for k, v in item.items() if k in projected}
                if item and index_keys <= set(item)
                else None
                for item in (before, after)
            ]
            old, new = entries
            if old == new:
                continue
            sizes = [math.ceil(_size(e) / 1024) if e else 0 for e in entries]
            moved = old is not None and new is not None and any(old[k] != new[k] for k in index_keys)
            units += sum(sizes) if moved or old is None or new is None else max(sizes)
        return units

    def _read_units(self, operation: str, parsed: dict[str, Any]) -> float:
        if operation == "GetItem":
            items = [parsed["Item"]] if "Item" in parsed else []
        elif operation in ("Query", "Scan"):
            items = parsed.get("Items", [])
        elif operation == "BatchGetItem":
            items = [i for found in parsed.get("Responses", {}).values() for i in found]
        else:
            items = [r["Item"] for r in parsed.get("Responses", []) if "Item" in r]
        units = max(1, math.ceil(sum(item_size(item) for item in items) / 4096))
        return units if getattr(self._pending, "consistent", False) else units / 2
