"""How a run is an item of the runs table, and the keys its indexes sort it by."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from runplane.adapters.dynamo import due_shard, from_item, to_item
from runplane.domain.models import RunRecord

_RUN_JSON_FIELDS = (
    "runnable",
    "metadata",
    "callback_headers",
    "waiting_for",
    "state",
    "partial_outputs",
    "reported",
)


def run_pk(account_id: str, run_id: str) -> str:
    return f"{account_id}#{run_id}"


def created_key(record: RunRecord) -> str:
    """Sorts runs by creation (newest last), unique per account: listings and waiting queues use it."""
    return created_key_of(record.created_at, record.id)


def created_key_of(created_at: datetime, run_id: str) -> str:
    return f"{created_at.isoformat()}#{run_id}"


def live_shard(account_id: str) -> str:
    """The partition of the `live` index an account's runs are filed under."""
    return due_shard(account_id)


def live_key(account_id: str, created: str) -> str:
    """The `live` index's sort key of the run whose created_key is `created`."""
    return f"{account_id}#{created}"


# What takes a run out of the `live` index (its follow-ups done): the run leaves the sweeper's sight too.
LIVE_ATTRIBUTES = ("due_at", "live_shard", "live_key")


def run_item(record: RunRecord) -> dict[str, Any]:
    """The run's item. What its keys hold is not repeated (the id is in `pk`, the creation time in
    `created_key`), nor an empty `metadata`: a no-op run's item stays under 1 KB, one write unit."""
    values = record.model_dump(exclude_none=True, exclude={"id", "created_at"})
    if not values["metadata"]:
        values.pop("metadata")
    for name in _RUN_JSON_FIELDS:
        if name in values:
            values[name] = json.dumps(values[name], separators=(",", ":"))
    values["history"] = [event_json(event) for event in values["history"]]
    values["status"] = record.status.value
    for flag in ("cancel_requested", "rejected", "cancel_notified", "callback_unsent"):
        if not values[flag]:
            values.pop(flag)
    values.update(pk=run_pk(record.account_id, record.id), created_key=created_key(record))
    if record.status.terminal:
        values["outcome"] = record.status.value
    if not record.status.terminal or record.due_at is not None:
        values.update(
            live_shard=live_shard(record.account_id),
            live_key=live_key(record.account_id, values["created_key"]),
        )
    if record.parent_run_id is not None:
        values["account_parent"] = run_pk(record.account_id, record.parent_run_id)
    return to_item(values)


def event_json(event: dict[str, Any]) -> str:
    """A status event as the run item's `history` holds it (every event there is one: no `type`)."""
    stored = {name: value for name, value in event.items() if name != "type"}
    return json.dumps(stored, separators=(",", ":"), default=str)


def run_record(item: dict[str, Any]) -> RunRecord:
    values = from_item(item)
    values["id"] = values["pk"].rpartition("#")[2]
    values["created_at"] = values["created_key"].partition("#")[0]
    for name in _RUN_JSON_FIELDS:
        if name in values:
            values[name] = json.loads(values[name])
    values["history"] = [{"type": "status", **json.loads(event)} for event in values.get("history", [])]
    return RunRecord.model_validate(values)
