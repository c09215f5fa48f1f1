"""DynamoDB: writing the runs table. Every state change of a run is one conditional write."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime
from typing import Any

from runplane.adapters.dynamo import from_item, to_av, to_item, update_request, write_if
from runplane.adapters.run_agents import AgentWrites
from runplane.adapters.run_items import LIVE_ATTRIBUTES, run_item, run_record
from runplane.adapters.run_writes import kept_due, lease_fields, merged, names_in, numbered
from runplane.domain.events import Progress, Reason, RunEvent, WaitingFor, cut, recorded, status_event
from runplane.domain.models import RunError, RunRecord
from runplane.domain.states import Status, check_move

# an admission write applies only to the run as read: not started, and its slots and queue unchanged
_AS_READ = (
    "#status = :waiting AND attribute_not_exists(#cancel)"
    " AND (#admissions = :admissions OR attribute_not_exists(#admissions))"
)


class RunStore(AgentWrites):
    """The runs table: its reads (RunReads) and its writes (the agents' in AgentWrites)."""

    def create_write(self, record: RunRecord) -> dict[str, Any]:
        """A transaction write storing a new run; it fails when a run with this id already exists, unless
        that is only a rejected intake message's placeholder."""
        return {
            "Put": {
                "TableName": self.table,
                "Item": run_item(record),
                "ConditionExpression": "attribute_not_exists(pk) OR rejected = :yes",
                "ExpressionAttributeValues": {":yes": {"BOOL": True}},
            }
        }

    def create(self, record: RunRecord) -> bool:
        """Store a new run on its own (`create_write` as one PutItem); False when a run has the id."""
        write = self.create_write(record)["Put"]
        return write_if(self.client, "put_item", **write)

    def put_rejected(self, record: RunRecord) -> bool:
        """Store the placeholder of a rejected intake message (`rejected`); False if a run has the id."""
        return write_if(
            self.client,
            "put_item",
            TableName=self.table,
            Item=run_item(record),
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

    def claim(
        self, record: RunRecord, owner: str, now: float, lease_until: float, max_attempts: int
    ) -> RunRecord | None:
        """waiting -> running (or re-claim of a running run whose lease expired) under a new lease."""
        account_id, run_id = record.account_id, record.id
        reason = Reason.retried if record.status is Status.running else Reason.claimed
        event = status_event(record, reason, Status.running, attempt=record.attempt + 1)
        lease = lease_fields(record, lease_until, now)
        due_condition, due_values = kept_due(record, lease)
        return self._update(
            account_id,
            run_id,
            event=event,
            record=record,
            set_={
                "status": Status.running.value,
                "lease_owner": owner,
                **lease,
                "started_at": datetime.fromtimestamp(now, UTC).isoformat(),
            },
            increment=("attempt",),
            remove=("token_hash",),  # an earlier attempt's agent's token opens nothing from now on
            condition="attribute_exists(#pk) AND attribute_not_exists(#cancel) AND #attempt < :max"
            " AND (#status = :waiting OR (#status = :running AND #lease < :now))" + due_condition,
            values={
                ":max": max_attempts,
                ":waiting": Status.waiting.value,
                ":running": Status.running.value,
                ":now": now,
                **due_values,
            },
        )

    def admit_write(
        self, record: RunRecord, owner: str, now: float, lease_until: float, slots: list[str]
    ) -> tuple[dict[str, Any], RunRecord]:
        """A transaction write claiming a waiting run (as `claim` does) that now holds the concurrency
        `slots` the same transaction takes, and the record it makes."""
        lease = lease_fields(record, lease_until, now)
        claimed = record.model_copy(
            update={
                "status": Status.running,
                "lease_owner": owner,
                **lease,
                "started_at": datetime.fromtimestamp(now, UTC),
                "attempt": record.attempt + 1,
                "slots": slots,
                "queued_on": None,
                "admissions": record.admissions + 1,
                "waiting_for": None,
            }
        )
        event = status_event(record, Reason.claimed, Status.running, attempt=claimed.attempt)
        claimed = claimed.model_copy(update=recorded(claimed, event))
        write = self._write(
            record,
            event,
            set_={
                "status": claimed.status.value,
                **claimed.model_dump(
                    include={"lease_owner", *lease, "attempt", "slots", "admissions"},
                    mode="json",
                ),
                "started_at": claimed.started_at.isoformat(),
            },
            remove=("queued_on", "waiting_for"),
            also=kept_due(record, lease),
        )
        return write, claimed

    def queue_write(
        self, record: RunRecord, scope: str, slots: list[str], waiting_for: WaitingFor
    ) -> tuple[dict[str, Any], RunRecord]:
        """A transaction write noting that a waiting run waits in `scope`'s queue holding `slots` (for the
        limit `waiting_for` describes), and the record it makes. The run leaves the sweeper's index: its
        scope is rechecked instead (it stays in the `live` index, without a due time). Joining another queue than before is a status event."""
        update = {
            "queued_on": scope,
            "slots": slots,
            "admissions": record.admissions + 1,
            "waiting_for": waiting_for.model_dump(),
        }
        event = None
        if record.queued_on != scope:
            event = status_event(record, Reason.queued, waiting_for=waiting_for)
        json_update = {**update, "waiting_for": json.dumps(update["waiting_for"], separators=(",", ":"))}
        write = self._write(record, event, set_=json_update, remove=("due_at",))
        moved = record.model_copy(update={**update, "due_at": None})
        return write, moved.model_copy(update=recorded(moved, event)) if event else moved

    def _write(
        self,
        record: RunRecord,
        event: RunEvent | None,
        also: tuple[str, dict[str, Any]] = ("", {}),
        **update: Any,
    ) -> dict[str, Any]:
        """An admission's write of the run as read; `also`: a condition (and its values) of its own."""
        key = self._key(record.account_id, record.id)
        values = {":waiting": Status.waiting.value, ":admissions": record.admissions, **also[1]}
        arguments = {"condition": _AS_READ + also[0], "values": values, **update}
        if event is not None:
            arguments = merged(arguments, numbered(record, event))
        condition = arguments["condition"]
        request = update_request(self.table, key, names=names_in(condition), **arguments)
        return {"Update": request}

    def renew(
        self, record: RunRecord, owner: str, lease_until: float | None, progress: Progress | None = None
    ) -> RunRecord | None:
        """Extend the lease (unless `lease_until` is None: progress alone), recording `progress` (what the runnable reported: it takes the seqs after the
        run's last as read) in the same write; None when this worker no longer holds the lease or, with
        progress, when another event took those seqs first."""
        set_: dict[str, Any] = {} if lease_until is None else lease_fields(record, lease_until, time.time())
        condition = "#status = :running AND #owner = :owner"
        values: dict[str, Any] = {":running": Status.running.value, ":owner": owner}
        if progress is not None:
            set_.update(progress.fields(), seq=record.seq + progress.events)
            condition += " AND #seq = :seen" if record.seq else " AND attribute_not_exists(#seq)"
            if record.seq:
                values[":seen"] = record.seq
        return self._update(record.account_id, record.id, set_=set_, condition=condition, values=values)

    def finish_write(
        self,
        record: RunRecord,
        fields: dict[str, Any],
        *,
        owner: str | None = None,
        lease_seen: float | None = None,
        due_at: float | None = None,
        error: RunError | None = None,
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
        set_ = {**fields, "outcome": status.value}
        remove: tuple[str, ...] = ("lease_owner", "lease_until", "waiting_for")
        if due_at is None:
            remove += LIVE_ATTRIBUTES
        else:
            set_["due_at"] = due_at
        brief = error.model_copy(update={"message": cut(error.message)}) if error else None
        event = status_event(record, Reason.ended, status, attempt=record.attempt or None, error=brief)
        arguments = merged({"set_": set_, "condition": condition, "values": values}, numbered(record, event))
        return update_request(
            self.table,
            self._key(record.account_id, record.id),
            remove=remove,
            names=names_in(arguments["condition"]),
            **arguments,
        )

    def finish(self, request: dict[str, Any]) -> RunRecord | None:
        """Apply a `finish_write`; the ended run, or None when the run was not as expected."""
        try:
            attributes = self.client.update_item(**request, ReturnValues="ALL_NEW")["Attributes"]
        except self.client.exceptions.ConditionalCheckFailedException:
            return None
        return run_record(attributes)

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
        """Take a terminal run out of the sweeper's index (what follows its end is done)."""
        self._update(
            account_id,
            run_id,
            set_={},
            remove=LIVE_ATTRIBUTES,
            condition="attribute_exists(#pk)",
            values={},
        )

    def request_cancel(self, record: RunRecord, lease_until: float | None = None) -> RunRecord | None:
        """Ask a running run (as read) to end cancelled; None if it changed since it was read. With
        `lease_until`, its lease (an agent's) ends then, so the sweeper ends the run."""
        set_: dict[str, Any] = {"cancel_requested": True}
        condition, values = "#status = :running AND attribute_not_exists(#cancel)", {":running": "running"}
        if lease_until is not None:
            set_.update(lease_until=lease_until, due_at=lease_until)
            condition += " AND #owner = :owner"
            values[":owner"] = record.lease_owner
        return self._update(
            record.account_id,
            record.id,
            event=status_event(record, Reason.cancel_requested, attempt=record.attempt),
            record=record,
            set_=set_,
            condition=condition,
            values=values,
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
