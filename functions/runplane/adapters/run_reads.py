"""DynamoDB: reading the runs table — one run, many at once, listings through its indexes, runs due."""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
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
    to_av,
)
from runplane.adapters.run_items import created_key_of, live_key, live_shard, run_pk, run_record
from runplane.domain.models import RunQuery, RunRecord
from runplane.domain.states import TERMINAL, Status

LIVE = frozenset({Status.waiting, Status.running})
QUERIES_PER_PAGE = 8  # Query requests one page may take to fill; past them it ends early, with a cursor


@dataclass(frozen=True)
class _Plan:
    """How a listing reads the runs table: the index, its partition, its sort key and the range of it
    the listing covers, what the index filters, and the statuses only the runs themselves can tell."""

    index: str
    partition: tuple[str, str]  # (attribute, value)
    sort: str  # the sort key's attribute
    prefix: str  # what every sort key of the listing starts with
    filters: tuple[tuple[str, str, list[str]], ...]  # (attribute, "in" or "missing or in", values)
    exact: frozenset[Status] | None  # statuses to keep, read from the runs: the index cannot tell them apart

    @property
    def listing(self) -> str:
        """What a cursor names its listing by: another listing's cursor (even on the same index) is refused."""
        described = repr((self.index, self.filters, sorted(self.exact or ())))
        return hashlib.sha256(described.encode()).hexdigest()[:16]

    def cursor(self, key: dict[str, Any]) -> str | None:
        return encode_cursor({**key, "listing": {"S": self.listing}})


def _plan(account_id: str, query: RunQuery) -> _Plan:
    """The narrowest index for `query`: a parent's children, the account's runs that have not ended (the
    `live` index), or all of the account's."""
    statuses = query.statuses
    filters: list[tuple[str, str, list[str]]] = []
    if query.runnable_id:
        filters.append(("runnable_id", "in", [query.runnable_id]))
    if statuses and statuses <= LIVE and not query.parent_run_id:
        filters.append(("outcome", "missing or in", []))  # not the ended runs awaiting follow-ups
        return _Plan(
            "live",
            ("live_shard", live_shard(account_id)),
            "live_key",
            live_key(account_id, ""),
            tuple(filters),
            statuses if statuses != LIVE else None,  # waiting or running: the runs tell
        )
    exact = None
    if statuses:
        ended, going = sorted(statuses & TERMINAL), statuses & LIVE
        filters.append(("outcome", "missing or in" if going else "in", ended))
        exact = statuses if going and going != LIVE else None
    if query.parent_run_id:
        partition = ("account_parent", run_pk(account_id, query.parent_run_id))
        return _Plan("by_parent", partition, "created_key", "", tuple(filters), exact)
    return _Plan("by_account", ("account_id", account_id), "created_key", "", tuple(filters), exact)


def _filter_expression(plan: _Plan, names: dict[str, str], values: dict[str, Any]) -> str | None:
    clauses = []
    for i, (name, how, allowed) in enumerate(plan.filters):
        names[f"#f{i}"] = name
        placeholders = [f":f{i}_{j}" for j in range(len(allowed))]
        values.update({p: {"S": value} for p, value in zip(placeholders, allowed, strict=True)})
        among = f"#f{i} IN ({', '.join(placeholders)})" if placeholders else None
        if how == "in":
            clauses.append(among)
        else:
            clauses.append(
                f"(attribute_not_exists(#f{i}) OR {among})" if among else f"attribute_not_exists(#f{i})"
            )
    return " AND ".join(clauses) or None


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
        """Newest first, through the narrowest index (a parent's children, the runs that have not ended, or
        all of the account's), the creation range as a key condition and any other filter as a filter."""
        pks, read, next_cursor = self._page(account_id, query, limit, cursor)
        missing = self._batch_get([pk for pk in pks if pk not in read])
        read.update({run_pk(r.account_id, r.id): r for r in missing})
        return [read[pk] for pk in pks if pk in read], next_cursor

    def cursor_at(self, account_id: str, query: RunQuery, run_id: str, created_at: datetime) -> str:
        """A cursor of `list` for the page after the run `run_id` (created at `created_at`)."""
        plan = _plan(account_id, query)
        key = {
            "pk": run_pk(account_id, run_id),
            plan.partition[0]: plan.partition[1],
            plan.sort: plan.prefix + created_key_of(created_at, run_id),
        }
        return plan.cursor({name: {"S": value} for name, value in key.items()})

    def skip(self, account_id: str, query: RunQuery, *, limit: int, cursor: str | None) -> str | None:
        """The cursor after the page `list` would answer, without reading its runs (unless only they tell
        whether they belong to it)."""
        return self._page(account_id, query, limit, cursor)[2]

    def _page(
        self, account_id: str, query: RunQuery, limit: int, cursor: str | None
    ) -> tuple[list[str], dict[str, RunRecord], str | None]:
        """The keys of a page of `list`, the runs read to tell which belong to it, and the cursor after it.

        A filtered listing reads on until the page is full, taking more index entries per request as it
        goes, for QUERIES_PER_PAGE requests at most: then it ends early, with a cursor."""
        plan = _plan(account_id, query)
        names = {"#p": plan.partition[0], "#s": plan.sort}
        after, before = (
            stamp.astimezone(UTC).isoformat() if stamp else None
            for stamp in (query.created_after, query.created_before)
        )
        values: dict[str, Any] = {
            ":p": {"S": plan.partition[1]},
            ":lo": {"S": plan.prefix + (after or "0")},  # "0" sorts before every created_key, "~" after
            ":hi": {"S": plan.prefix + (before or "~")},
        }
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": plan.index,
            "KeyConditionExpression": "#p = :p AND #s BETWEEN :lo AND :hi",
            "ScanIndexForward": False,
        }
        if condition := _filter_expression(plan, names, values):
            request["FilterExpression"] = condition
        request["ExpressionAttributeNames"] = names
        request["ExpressionAttributeValues"] = values
        start = decode_cursor(
            cursor,
            {
                "pk": re.compile(rf"{re.escape(account_id)}#{UUID}"),
                plan.partition[0]: plan.partition[1],
                plan.sort: re.compile(re.escape(plan.prefix) + CREATED_KEY),
                "listing": plan.listing,
            },
        )
        if start:
            del start["listing"]
        if start and not values[":lo"]["S"] <= start[plan.sort]["S"] <= values[":hi"]["S"]:
            raise invalid_cursor()  # DynamoDB refuses a start key outside the key condition
        if after and before and after >= before:
            return [], {}, None  # a range holding no instant: nothing to ask DynamoDB
        pks: list[str] = []
        read: dict[str, RunRecord] = {}
        ask = limit
        for _ in range(QUERIES_PER_PAGE):
            if start:
                request["ExclusiveStartKey"] = start
            page = self.client.query(**request, Limit=ask)
            items = page.get("Items", [])
            if plan.exact is not None and items:
                fetched = self._batch_get([item["pk"]["S"] for item in items])
                read.update({run_pk(r.account_id, r.id): r for r in fetched if r.status in plan.exact})
                items = [item for item in items if item["pk"]["S"] in read]
            for position, item in enumerate(items):
                pks.append(item["pk"]["S"])
                if len(pks) == limit:
                    more = position < len(items) - 1 or "LastEvaluatedKey" in page
                    last = {name: item[name] for name in ("pk", plan.partition[0], plan.sort)}
                    return pks, read, plan.cursor(last) if more else None
            start = page.get("LastEvaluatedKey")
            if not start:
                return pks, read, None
            ask = min(ask * 2, 1000)  # filtered out: the rest is likely sparser still
        return pks, read, plan.cursor(start)

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
        """(account_id, run_id, due_at) of the `limit` runs of the shard whose due time has passed, oldest
        due first. The shard's live runs are read whole (their entries are small; runs that wait for a
        concurrency slot have no due time, and cost their entry's bytes)."""
        request: dict[str, Any] = {
            "TableName": self.table,
            "IndexName": "live",
            "KeyConditionExpression": "live_shard = :shard",
            "FilterExpression": "due_at <= :now",
            "ExpressionAttributeValues": {":shard": {"S": shard}, ":now": to_av(now)},
        }
        found = []
        while True:
            page = self.client.query(**request)
            for item in page.get("Items", []):
                account_id, run_id = item["pk"]["S"].rsplit("#", 1)
                found.append((account_id, run_id, float(item["due_at"]["N"])))
            if "LastEvaluatedKey" not in page:
                return sorted(found, key=lambda due: due[2])[:limit]
            request["ExclusiveStartKey"] = page["LastEvaluatedKey"]
