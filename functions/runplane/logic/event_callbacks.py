"""Callbacks for a run's events other than its end (`callback_events`: start, state, output, logs).

Each is a delivery like the end's (signed, retried, recorded, the run's RunState as it is when sent),
with its own webhook-id. The worker sends them while it executes the run, each event type at most once
every RUNPLANE_CALLBACK_EVENT_SECONDS: a burst is coalesced into one delivery of the latest, sent when
the interval has passed. Once the run has ended, one not yet sent is dropped ("superseded"), and the end's
delivery waits for any still being attempted, so the end is always the last message.
"""

from __future__ import annotations

import time

from runplane.domain.events import RunEvent, callback_event
from runplane.domain.models import DeliveryRecord, RunRecord, utcnow
from runplane.logic.callbacks import delivery_id_for
from runplane.logic.services import services
from runplane.observability import logger


class EventCallbacks:
    """The event deliveries of one attempt, throttled per event type."""

    def __init__(self, record: RunRecord, interval: float):
        self.wanted = record.event_callbacks
        self.interval = interval
        self.sent_at: dict[str, float] = {}  # monotonic
        self.waiting: dict[str, int] = {}  # event type -> the latest seq not sent yet

    def due(self) -> float | None:
        """When (monotonic) the next coalesced delivery may be sent; None when none waits."""
        if not self.waiting:
            return None
        return min(self.sent_at.get(kind, 0.0) + self.interval for kind in self.waiting)

    def saw(self, record: RunRecord, events: list[RunEvent]) -> None:
        """Note stored events of `record` and send what is due (a delivery failure never stops the run)."""
        for event in events:
            kind = callback_event(event)
            if kind in self.wanted:
                self.waiting[kind] = event.seq
        now = time.monotonic()
        for kind, seq in list(self.waiting.items()):
            if now >= self.sent_at.get(kind, 0.0) + self.interval:
                try:
                    start_event_delivery(record, kind, seq)
                except Exception:
                    logger.warning("event callback not enqueued", exc_info=True, extra={"event": kind})
                    continue
                self.sent_at[kind] = now
                del self.waiting[kind]


def start_event_delivery(record: RunRecord, event: str, seq: int) -> None:
    """Create and enqueue the delivery of the run's event `seq` (once: its id follows from the seq)."""
    delivery = DeliveryRecord(
        account_id=record.account_id,
        run_id=record.id,
        id=f"{delivery_id_for(record.id)}_{seq}",
        url=record.callback_url or "",
        event=event,
        seq=seq,
        state="pending",
        next_attempt_at=time.time(),
        created_at=utcnow(),
        expires_at=int(time.time()) + services().settings.run_retention_days * 86400 + 86400,
    )
    if services().deliveries.create(delivery):
        services().queues.send_callback(delivery)
