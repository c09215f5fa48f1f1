"""DynamoDB: what every write of the runs table shares — its condition names, the status event a write
records, the conditional UpdateItem."""

from __future__ import annotations

from typing import Any

from runplane.adapters.dynamo import update_item
from runplane.adapters.run_items import event_json, run_record
from runplane.adapters.run_reads import RunReads
from runplane.domain.events import RunEvent
from runplane.domain.models import RunRecord

_CONDITION_NAMES = {
    "#pk": "pk",
    "#status": "status",
    "#owner": "lease_owner",
    "#lease": "lease_until",
    "#attempt": "attempt",
    "#cancel": "cancel_requested",
    "#admissions": "admissions",
    "#due": "due_at",
    "#seq": "seq",
    "#progress": "progress_at",
}


def lease_fields(record: RunRecord, lease_until: float, now: float) -> dict[str, float]:
    """A new lease, and the run's due time (its end) unless the one the run has comes in the second half
    of the new lease: so a prompt claim leaves the `live` index entry as it is (one write unit, not two),
    renewals move it every other time, and a healthy run is not due while its worker renews it. Where
    this leaves the due time, a claim makes it a condition (`kept_due`): the sweeper may move it."""
    if record.due_at is not None and now + (lease_until - now) / 2 <= record.due_at <= lease_until:
        return {"lease_until": lease_until}
    return {"lease_until": lease_until, "due_at": lease_until}


def kept_due(record: RunRecord, fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The condition (and its values) that the due time a write leaves is still the one it read."""
    if "due_at" in fields:
        return "", {}
    return " AND #due = :due_seen", {":due_seen": record.due_at}


def names_in(condition: str) -> dict[str, str]:
    return {k: v for k, v in _CONDITION_NAMES.items() if k in condition}


def numbered(record: RunRecord, event: RunEvent) -> dict[str, Any]:
    """What a write adds to record the run's next status event: its seq and the event, on condition
    that no other event took that seq since `record` was read (update_request's arguments)."""
    seen = "#seq = :seen" if record.seq else "(attribute_not_exists(#seq) OR #seq = :seen)"
    return {
        "set_": {"seq": event.seq},
        "append": {"history": [event_json(event.model_dump(mode="json", exclude_none=True))]},
        "condition": seen,
        "values": {":seen": record.seq},
    }


def merged(update: dict[str, Any], event_write: dict[str, Any]) -> dict[str, Any]:
    """An update_request's arguments with a status event's added (conditions joined by AND)."""
    return {
        **update,
        "set_": {**update.get("set_", {}), **event_write["set_"]},
        "append": event_write["append"],
        "condition": f"{update['condition']} AND {event_write['condition']}",
        "values": {**update["values"], **event_write["values"]},
    }


class RunWrites(RunReads):
    """The runs table's reads, and the one conditional UpdateItem its writes make."""

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
        event: RunEvent | None = None,
        record: RunRecord | None = None,  # as read: the event's seq follows its own
    ) -> RunRecord | None:
        arguments = {"set_": set_, "condition": condition, "values": values}
        if event is not None and record is not None:
            arguments = merged(arguments, numbered(record, event))
        attributes = update_item(
            self.client,
            self.table,
            self._key(account_id, run_id),
            names=names_in(arguments["condition"]),
            remove=remove,
            increment=increment,
            **arguments,
        )
        return run_record(attributes) if attributes is not None else None
