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
from runplane.domain.models import RunRecord
from runplane.logic.callbacks import start_event_delivery
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
                self.sent_at[kind] = now  # tried: the next of its kind waits an interval either way
                try:
                    start_event_delivery(record, kind, seq)
                except Exception:
                    logger.warning("event callback not enqueued", exc_info=True, extra={"event": kind})
                    continue
                del self.waiting[kind]
