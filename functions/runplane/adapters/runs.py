"""DynamoDB: the runs table. Every state change of a run is one conditional write."""

from __future__ import annotations

import hashlib
import json
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
    due_shard,
    encode_cursor,
    from_item,
    invalid_cursor,
    query_due,
    to_av,
    to_item,
    update_item,
    update_request,
    write_if,
)
from runplane.domain.models import RunQuery, RunRecord
from runplane.domain.states import Status, check_move

# --- runs ---------------------------------------------------------------------------------------------

_RUN_JSON_FIELDS = ("runnable", "metadata", "callback_headers")
_CONDITION_NAMES = {
    "#pk": "pk",
    "#status": "status",
    "#owner": "lease_owner",
    "#lease": "lease_until",
    "#attempt": "attempt",
    "#cancel": "cancel_requested",
    "#admissions": "admissions",
    "#due": "due_at",
}
# an admission write applies only to the run as read: not started, and its slots and queue unchanged
_AS_READ = (
    "#status = :waiting AND attribute_not_exists(#cancel)"
    " AND (#admissions = :admissions OR attribute_not_exists(#admissions))"
)


def _names(condition: str) -> dict[str, str]:
    return {k: v for k, v in _CONDITION_NAMES.items() if k in condition}


def run_pk(account_id: str, run_id: str) -> str:
    return f"{account_id}#{run_id}"


def created_key(record: RunRecord) -> str:
    """Sorts runs by creation (newest last), unique per account: listings and waiting queues use it."""
    return _created_key(record.created_at, record.id)


def _created_key(created_at: datetime, run_id: str) -> str:
    return f"{created_at.isoformat()}#{run_id}"


def _run_item(record: RunRecord) -> dict[str, Any]:
    values = record.model_dump(exclude_none=True)
    for name in _RUN_JSON_FIELDS:
        if name in values:
            values[name] = json.dumps(values[name], separators=(",", ":"))
    values["status"] = record.status.value
    for flag in ("cancel_requested", "rejected"):
        if not values[flag]:
            values.pop(flag)
    values.update(
        pk=run_pk(record.account_id, record.id),
        created_key=created_key(record),
        account_status=f"{record.account_id}#{record.status.value}",
        account_runnable=f"{record.account_id}#{record.runnable_id}",
    )
    if record.parent_run_id is not None:
        values["account_parent"] = run_pk(record.account_id, record.parent_run_id)
    if record.due_at is not None:
        values["due_shard"] = due_shard(record.id)
    return to_item(values)


def _run_record(item: dict[str, Any]) -> RunRecord:
    values = from_item(item)
    for name in _RUN_JSON_FIELDS:
        if name in values:
            values[name] = json.loads(values[name])
    return RunRecord.model_validate(values)


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


class RunStore(TableAdapter):
    def _key(self, account_id: str, run_id: str) -> dict[str, Any]:
        return {"pk": {"S": run_pk(account_id, run_id)}}

    def create_write(self, record: RunRecord) -> dict[str, Any]:
        """A transaction write storing a new run; it fails when a run with this id already exists, unless
        that is only a rejected intake message's placeholder."""
        return {
            "Put": {
                "TableName": self.table,
                "Item": _run_item(record),
                "ConditionExpression": "attribute_not_exists(pk) OR rejected = :yes",
                "ExpressionAttributeValues": {":yes": {"BOOL": True}},
            }
        }

    def put_rejected(self, record: RunRecord) -> bool:
        """Store the placeholder of a rejected intake message (`rejected`); False if a run has the id."""
        return write_if(
            self.client,
            "put_item",
            TableName=self.table,
            Item=_run_item(record),
            ConditionExpression="attribute_not_exists(pk)",
        )

    def remember_idempotency(
        self, account_id: str, key: str, run_id: str, fingerprint: str, now: float, until: float
    ) -> tuple[str, str, bool]:
        """Bind an idempotency key to `run_id` and a request fingerprint unless a live binding exists.

        Returns the binding in force — (run id, fingerprint, whether this call made it). The item shares
        the runs table under its own key (no index attributes, so no index sees it) and expires by TTL.
        """
        digest = hashlib.sha256(key.encode()).hexdigest()
        item_key = {"pk": {"S": f"{account_id}#idempotency#{digest}"}}
        bound = write_if(
            self.client,
            "put_item",
            TableName=self.table,
            Item={
                **item_key,
                **to_item({"run_id": run_id, "fingerprint": fingerprint, "expires_at": int(until)}),
            },
            ConditionExpression="attribute_not_exists(pk) OR expires_at < :now",
            ExpressionAttributeValues={":now": to_av(int(now))},
        )
        if bound:
            return run_id, fingerprint, True
        item = self.client.get_item(TableName=self.table, Key=item_key, ConsistentRead=True)["Item"]
        stored = from_item(item)
        return stored["run_id"], stored["fingerprint"], False

    def get(self, account_id: str, run_id: str, *, consistent: bool = False) -> RunRecord | None:
        item = self.client.get_item(
            TableName=self.table, Key=self._key(account_id, run_id), ConsistentRead=consistent
        ).get("Item")
        return _run_record(item) if item else None

    def claim(
        self, account_id: str, run_id: str, owner: str, now: float, lease_until: float, max_attempts: int
    ) -> RunRecord | None:
        """waiting -> running (or re-claim of a running run whose lease expired) under a new lease."""
        return self._update(
            account_id,
            run_id,
            set_={
                "status": Status.running.value,
                "account_status": f"{account_id}#{Status.running.value}",
                "lease_owner": owner,
                "lease_until": lease_until,
                "due_at": lease_until,
                "due_shard": due_shard(run_id),
                "started_at": datetime.fromtimestamp(now, UTC).isoformat(),
            },
            increment=("attempt",),
            condition="attribute_exists(#pk) AND attribute_not_exists(#cancel) AND #attempt < :max"
            " AND (#status = :waiting OR (#status = :running AND #lease < :now))",
            values={
                ":max": max_attempts,
                ":waiting": Status.waiting.value,
                ":running": Status.running.value,
                ":now": now,
            },
        )

    def admit_write(
        self, record: RunRecord, owner: str, now: float, lease_until: float, slots: list[str]
    ) -> tuple[dict[str, Any], RunRecord]:
        """A transaction write claiming a waiting run (as `claim` does) that now holds the concurrency
        `slots` the same transaction takes, and the record it makes."""
        claimed = record.model_copy(
            update={
                "status": Status.running,
                "lease_owner": owner,
                "lease_until": lease_until,
                "due_at": lease_until,
                "started_at": datetime.fromtimestamp(now, UTC),
                "attempt": record.attempt + 1,
                "slots": slots,
                "queued_on": None,
                "admissions": record.admissions + 1,
            }
        )
        write = self._write(
            record,
            set_={
                "status": claimed.status.value,
                "account_status": f"{record.account_id}#{claimed.status.value}",
                "due_shard": due_shard(record.id),
                **claimed.model_dump(
                    include={"lease_owner", "lease_until", "due_at", "attempt", "slots", "admissions"},
                    mode="json",
                ),
                "started_at": claimed.started_at.isoformat(),
            },
            remove=("queued_on",),
        )
        return write, claimed

    def queue_write(
        self, record: RunRecord, scope: str, slots: list[str]
    ) -> tuple[dict[str, Any], RunRecord]:
        """A transaction write noting that a waiting run waits in `scope`'s queue holding `slots`, and the
        record it makes. The run leaves the sweeper's index: its scope is rechecked instead."""
        update = {"queued_on": scope, "slots": slots, "admissions": record.admissions + 1}
        write = self._write(record, set_=update, remove=("due_at", "due_shard"))
        return write, record.model_copy(update={**update, "due_at": None})

    def _write(self, record: RunRecord, **update: Any) -> dict[str, Any]:
        key = self._key(record.account_id, record.id)
        values = {":waiting": Status.waiting.value, ":admissions": record.admissions}
        request = update_request(
            self.table, key, condition=_AS_READ, names=_names(_AS_READ), values=values, **update
        )
        return {"Update": request}

    def renew(self, account_id: str, run_id: str, owner: str, lease_until: float) -> RunRecord | None:
        """Extend the lease; None when this worker no longer holds it."""
        return self._update(
            account_id,
            run_id,
            set_={"lease_until": lease_until, "due_at": lease_until},
            condition="#status = :running AND #owner = :owner",
            values={":running": Status.running.value, ":owner": owner},
        )

    def finish_write(
        self,
        record: RunRecord,
        fields: dict[str, Any],
        *,
        owner: str | None = None,
        lease_seen: float | None = None,
        due_at: float | None = None,
    ) -> dict[str, Any]:
        """An UpdateItem request (for `finish` or a transaction) moving `record` from the status it was read
        with to the terminal status in `fields`.

        `owner` requires the caller to hold the lease; `lease_seen` requires the lease to be unchanged
        since the caller read it (the sweeper acting on an expired lease). An outcome other than
        `cancelled` requires that no cancellation was asked for meanwhile. `due_at` keeps the run in the
        sweeper's index until what follows its end is done (`clear_due`), so a crash cannot lose it.
        """
        status = Status(fields["status"])
        check_move(record.status, status)
        condition, values = "#status = :expected", {":expected": record.status.value}
        if owner is not None:
            condition += " AND #owner = :owner"
            values[":owner"] = owner
        if lease_seen is not None:
            condition += " AND #lease = :lease"
            values[":lease"] = lease_seen
        if status is not Status.cancelled:
            condition += " AND attribute_not_exists(#cancel)"
        set_ = {**fields, "account_status": f"{record.account_id}#{status.value}"}
        remove: tuple[str, ...] = ("lease_owner", "lease_until")
        if due_at is None:
            remove += ("due_at", "due_shard")
        else:
            set_.update(due_at=due_at, due_shard=due_shard(record.id))
        return update_request(
            self.table,
            self._key(record.account_id, record.id),
            set_=set_,
            remove=remove,
            condition=condition,
            names=_names(condition),
            values=values,
        )

    def finish(self, request: dict[str, Any]) -> RunRecord | None:
        """Apply a `finish_write`; the ended run, or None when the run was not as expected."""
        try:
            attributes = self.client.update_item(**request, ReturnValues="ALL_NEW")["Attributes"]
        except self.client.exceptions.ConditionalCheckFailedException:
            return None
        return _run_record(attributes)

    def postpone(self, account_id: str, run_id: str, seen_due: float, due_at: float) -> None:
        """Look at a run again at `due_at` (the sweeper could not handle it), unless it moved meanwhile."""
        self._update(
            account_id,
            run_id,
            set_={"due_at": due_at},
            condition="#due = :seen",
            values={":seen": seen_due},
        )

    def clear_due(self, account_id: str, run_id: str) -> None:
        """Take a terminal run out of the sweeper's index (its slots are released, its callback enqueued)."""
        self._update(
            account_id,
            run_id,
            set_={},
            remove=("due_at", "due_shard"),
            condition="attribute_exists(#pk)",
            values={},
        )

    def request_cancel(self, account_id: str, run_id: str) -> RunRecord | None:
        return self._update(
            account_id,
            run_id,
            set_={"cancel_requested": True},
            condition="#status = :running",
            values={":running": Status.running.value},
        )

    def reschedule(
        self, account_id: str, run_id: str, expected: Status, due_at: float, lease_seen: float | None
    ) -> RunRecord | None:
        """Record a re-dispatch by the sweeper and when to look at the run again."""
        condition, values = "#status = :expected", {":expected": expected.value}
        if lease_seen is not None:
            condition += " AND #lease = :lease"
            values[":lease"] = lease_seen
        return self._update(
            account_id,
            run_id,
            set_={"due_at": due_at},
            increment=("dispatches",),
            condition=condition,
            values=values,
        )

    def _update(
        self,
        account_id: str,
        run_id: str,
        *,
        set_: dict[str, Any],
        condition: str,
        values: dict[str, Any],
        remove: tuple[str, ...] = (),
        increment: tuple[str, ...] = (),
    ) -> RunRecord | None:
        attributes = update_item(
            self.client,
            self.table,
            self._key(account_id, run_id),
            set_=set_,
            condition=condition,
            names=_names(condition),
            values=values,
            remove=remove,
            increment=increment,
        )
        return _run_record(attributes) if attributes is not None else None

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
            "created_key": _created_key(created_at, run_id),
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

    def mark_parent(self, account_id: str, run_id: str, children: int) -> None:
        """Note that a run has started (at least) `children` child runs: cancelling it cancels them."""
        write_if(
            self.client,
            "update_item",
            TableName=self.table,
            Key=self._key(account_id, run_id),
            UpdateExpression="SET child_runs = :n",
            ConditionExpression="attribute_exists(pk) AND (attribute_not_exists(child_runs) OR child_runs < :n)",
            ExpressionAttributeValues={":n": {"N": str(children)}},
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
            while pending:
                response = self.client.batch_get_item(RequestItems=pending)
                for item in response["Responses"].get(self.table, []):
                    found[item["pk"]["S"]] = _run_record(item)
                pending = response.get("UnprocessedKeys") or {}
                if pending:  # throttled: back off before asking for the rest, as AWS advises
                    time.sleep(pause)
                    pause = min(pause * 2, 1.0)
        return [found[pk] for pk in pks if pk in found]

    def due(self, shard: str, now: float, limit: int) -> list[tuple[str, str, float]]:
        """(account_id, run_id, due_at) of the runs whose due time has passed, oldest first."""
        items = query_due(self.client, self.table, "due", ("due_shard", "due_at"), shard, now, limit)
        found = []
        for item in items:
            account_id, run_id = item["pk"]["S"].rsplit("#", 1)
            found.append((account_id, run_id, float(item["due_at"]["N"])))
        return found
