"""DynamoDB capacity units of the requests a process makes, computed as DynamoDB bills them on demand.

moto answers `ReturnConsumedCapacity` with a fixed figure (0.5 or 1 whatever the item), so the units are
computed here from the items themselves, read from moto's backend around each write:

- a write costs ceil(KB) of the larger of the item before and after it (1 at least; a failed condition
  costs the existing item's size), twice inside a transaction, where a ConditionCheck costs as a write
  of the item it checks (a cancelled transaction is counted as if each of its items had been written
  unchanged: an assumption, DynamoDB reports no ConsumedCapacity for it);
- each global secondary index whose entry the write puts, changes or removes costs ceil(KB) of that entry
  (its keys and projected attributes), a key change there being a delete and a put; an index whose
  entry is unchanged costs nothing. Index writes are not doubled in a transaction: DynamoDB propagates
  them to the index after the commit, as standard writes;
- a read costs ceil(size / 4 KB), 1 at least (half for an eventually consistent one): a Query sums the
  items it returns, a BatchGetItem rounds each item on its own, a TransactGetItems item costs twice.
  A filtered Query would cost the items read before the filter, which the response does not show (no
  request on a run's path filters).

Item sizes follow DynamoDB's rules (CapacityUnitCalculations): names and values in UTF-8 bytes, a number
1 byte per two significant digits + 1, a list or map 3 bytes + 1 byte per element.
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


def _number_size(text: str) -> int:
    """DynamoDB's size of a number: 1 byte per two significant digits, + 1."""
    digits = text.lower().lstrip("+-").split("e")[0].replace(".", "").strip("0")  # leading, trailing zeros
    return (len(digits) + 1) // 2 + 1


def _av_size(value: dict[str, Any]) -> int:
    (kind, inner), *_ = value.items()
    if kind in ("S", "B"):
        return len(inner.encode() if isinstance(inner, str) else inner)
    if kind == "N":
        return _number_size(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "L":
        return 3 + sum(_av_size(v) + 1 for v in inner)
    if kind == "M":
        return 3 + sum(len(k.encode()) + _av_size(v) + 1 for k, v in inner.items())
    if kind == "NS":
        return sum(_number_size(v) for v in inner)
    return sum(len(v.encode() if isinstance(v, str) else v) for v in inner)  # SS, BS


def item_size(item: dict[str, Any]) -> int:
    """An item in wire format (attribute values), in bytes as DynamoDB counts them."""
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
        """(table, key, transactional) of every item a write touches (or a ConditionCheck reads)."""
        if operation == "TransactWriteItems":
            targets = []
            for entry in params["TransactItems"]:
                (_, request), *_ = entry.items()
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
        if found is None:
            return None
        return {name: value.to_regular_json() for name, value in found.attrs.items()}  # wire format

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
                item, indexes = self._write_units(table, before, self._item(table, key))
                self.wru[label] += item * (2 if transactional else 1) + indexes
            self._pending.writes = []
        elif model.name in READS:
            self.rru[label] += self._read_units(model.name, parsed)

    def _write_units(
        self, table: str, before: dict[str, Any] | None, after: dict[str, Any] | None
    ) -> tuple[int, int]:
        """(units of the item itself, units of its index entries)."""
        largest = max(item_size(before) if before else 0, item_size(after) if after else 0)
        units, index_units = max(1, math.ceil(largest / 1024)), 0
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
            sizes = [math.ceil(item_size(e) / 1024) if e else 0 for e in entries]
            moved = old is not None and new is not None and any(old[k] != new[k] for k in index_keys)
            index_units += sum(sizes) if moved or old is None or new is None else max(sizes)
        return units, index_units

    def _read_units(self, operation: str, parsed: dict[str, Any]) -> float:
        def rounded(size: int) -> int:
            return max(1, math.ceil(size / 4096))

        if operation == "GetItem":
            units = rounded(item_size(parsed.get("Item", {})))
        elif operation in ("Query", "Scan"):
            units = rounded(sum(item_size(item) for item in parsed.get("Items", [])))
        elif operation == "BatchGetItem":  # each item on its own
            found = [i for items in parsed.get("Responses", {}).values() for i in items]
            units = sum(rounded(item_size(item)) for item in found) or 1
        else:  # TransactGetItems: every item twice, a missing one included
            units = 2 * sum(rounded(item_size(r.get("Item", {}))) for r in parsed.get("Responses", []))
        return units if getattr(self._pending, "consistent", False) else units / 2
