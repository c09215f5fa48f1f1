"""DynamoDB: the events runs report while they go on (see `definitions.RUN_EVENTS`), a batch per item."""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter

from runplane.adapters.dynamo import TableAdapter, to_av
from runplane.adapters.run_items import run_pk
from runplane.domain.events import RunEvent

_EVENTS = TypeAdapter(list[RunEvent])


class RunEventStore(TableAdapter):
    def put(self, account_id: str, run_id: str, events: list[RunEvent], expires_at: int) -> None:
        """Store one batch (consecutive seqs, oldest first) under its last seq; writing it again is
        harmless."""
        item = {
            "pk": {"S": run_pk(account_id, run_id)},
            "seq": to_av(events[-1].seq),
            "events": {"S": _EVENTS.dump_json(events, exclude_none=True).decode()},
            "expires_at": to_av(expires_at),
        }
        self.client.put_item(TableName=self.table, Item=item)

    def after(
        self, account_id: str, run_id: str, seq: int, *, limit: int = 100
    ) -> tuple[list[RunEvent], bool]:
        """The events of the batches whose last seq is above `seq`, oldest first (a batch's earlier
        events may be at or below it), from at most `limit` batches; and whether more batches follow."""
        page = self.client.query(
            TableName=self.table,
            KeyConditionExpression="pk = :pk AND seq > :seq",
            ExpressionAttributeValues={":pk": {"S": run_pk(account_id, run_id)}, ":seq": to_av(seq)},
            ConsistentRead=True,
            Limit=limit,
        )
        events = [event for item in page.get("Items", []) for event in _batch(item)]
        return events, "LastEvaluatedKey" in page


def _batch(item: dict[str, Any]) -> list[RunEvent]:
    return _EVENTS.validate_python(json.loads(item["events"]["S"]))
