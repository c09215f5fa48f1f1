"""DynamoDB: the runs table's writes for asynchronous agents (domain/agents.py) — arming an attempt with
its run token, handing the run to the agent, recording what the agent reports."""

from __future__ import annotations

import json
import time
from typing import Any

from runplane.adapters.dynamo import write_if
from runplane.adapters.run_writes import RunWrites, lease_fields
from runplane.domain.agents import agent_owner
from runplane.domain.events import Progress, Reason, status_event
from runplane.domain.models import RunRecord
from runplane.domain.states import Status

_HELD = "#status = :running AND #owner = :owner"


def _held(record: RunRecord) -> dict[str, Any]:
    return {":running": Status.running.value, ":owner": record.lease_owner}


class AgentWrites(RunWrites):
    def arm(self, record: RunRecord, token_hash: str, deadline_at: float) -> RunRecord | None:
        """Give the worker's attempt its run token (hashed) and deadline, before the agent is called."""
        return self._update(
            record.account_id,
            record.id,
            set_={"token_hash": token_hash, "deadline_at": deadline_at},
            remove=("cancel_notified",),
            condition=_HELD,
            values=_held(record),
        )

    def hand_off(self, record: RunRecord, lease_until: float) -> RunRecord | None:
        """The agent accepted the run: its lease is the agent's from now on, until `lease_until`."""
        return self._update(
            record.account_id,
            record.id,
            event=status_event(record, Reason.handed_off, attempt=record.attempt),
            record=record,
            set_={
                "lease_owner": agent_owner(record.attempt),
                **lease_fields(record, lease_until, time.time()),
            },
            condition=_HELD,
            values=_held(record),
        )

    def record_report(
        self,
        record: RunRecord,
        progress: Progress,
        *,
        lease_until: float | None,
        reported: dict[str, Any] | None,
        digest: str,
    ) -> RunRecord | None:
        """Record an agent's report on the run as read (whoever holds it then, the same attempt): its
        progress (taking the seqs after the run's last), what it adds up to for the end, and with
        `lease_until` the agent's lease extended, and the report's `digest` (a repeat is known by it). None
        when the run changed since it was read: another
        report came first, or the run ended, or another attempt began."""
        set_: dict[str, Any] = {
            **progress.fields(),
            "seq": record.seq + progress.events,
            "last_report": digest,
        }
        if reported is not None:
            set_["reported"] = json.dumps(reported, separators=(",", ":"))
        if lease_until is not None:
            set_.update(lease_fields(record, lease_until, time.time()))
        condition = f"{_HELD} AND token_hash = :token"
        values = {**_held(record), ":token": record.token_hash}
        if record.progress_at is None:
            condition += " AND attribute_not_exists(#progress)"
        else:
            condition += " AND #progress = :progress"
            values[":progress"] = record.progress_at
        if record.seq:
            condition += " AND #seq = :seen"
            values[":seen"] = record.seq
        else:
            condition += " AND attribute_not_exists(#seq)"
        return self._update(record.account_id, record.id, set_=set_, condition=condition, values=values)

    def note_cancel_notified(self, record: RunRecord) -> bool:
        """Note that the agent is being told to cancel; False when it was already (tell it once)."""
        return write_if(
            self.client,
            "update_item",
            TableName=self.table,
            Key=self._key(record.account_id, record.id),
            UpdateExpression="SET cancel_notified = :yes",
            ConditionExpression="attribute_exists(pk) AND attribute_not_exists(cancel_notified)",
            ExpressionAttributeValues={":yes": {"BOOL": True}},
        )
