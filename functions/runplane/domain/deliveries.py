"""Callback deliveries: as served, and as stored with their retry bookkeeping."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from runplane.domain.models import CallbackEvent

DeliveryState = Literal["pending", "succeeded", "stopped", "dead"]


class CallbackAttempt(BaseModel):
    number: int = Field(description="1 for the first attempt; counts across redeliveries")
    started_at: datetime
    status_code: int | None = Field(None, description="The receiver's HTTP status; null when none came back")
    latency_ms: int
    error: str | None = None


class CallbackDelivery(BaseModel):
    """One webhook message (`id` is its `webhook-id`) and every attempt to deliver it."""

    id: str
    run_id: str
    url: str
    event: CallbackEvent = Field(
        "completed", description="What the message tells: the run's end, or progress"
    )

    state: DeliveryState
    attempts: list[CallbackAttempt] = Field(default_factory=list)
    next_attempt_at: datetime | None = None
    created_at: datetime
    finished_at: datetime | None = None


class DeadReplay(BaseModel):
    webhook_ids: list[str] = Field(
        description="The deliveries reopened: pending, due now, newest death first"
    )
    more: bool = Field(description="More dead deliveries remain in the window: ask again")


class DeliveryRecord(BaseModel):
    """The stored delivery: the served view plus the retry bookkeeping."""

    account_id: str
    run_id: str
    id: str
    url: str
    event: CallbackEvent = "completed"
    seq: int | None = None  # the run event it tells of (all but `completed`)
    follows_events: bool = False  # `completed` of a run with event callbacks: waits for theirs in flight
    state: DeliveryState
    attempts: list[CallbackAttempt] = Field(default_factory=list)
    # Each (re)opening and each redelivery while pending starts a round; its queue messages carry its number,
    # and a message of an earlier round is stale.
    round: int = 0
    round_attempts: int = 0  # attempts in this round: the position in the schedule
    next_attempt_at: float | None = None
    lease_owner: str | None = None
    lease_until: float | None = None
    created_at: datetime
    finished_at: datetime | None = None
    expires_at: int | None = None

    def public(self) -> CallbackDelivery:
        return CallbackDelivery(
            **self.model_dump(
                include={"id", "run_id", "url", "event", "state", "attempts", "created_at", "finished_at"}
            ),
            next_attempt_at=(
                datetime.fromtimestamp(self.next_attempt_at, UTC)
                if self.state == "pending" and self.next_attempt_at is not None
                else None
            ),
        )


class CallbackSecret(BaseModel):
    secret: str = Field(description="`whsec_…`: verify `webhook-signature` with it (Standard Webhooks)")
    previous_valid_until: datetime | None = Field(
        None, description="After a rotation, deliveries are also signed with the previous secret until then"
    )
