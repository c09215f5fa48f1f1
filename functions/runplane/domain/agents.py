"""Asynchronous agents: runs an http or lambda runnable with `mode: async` hands to its agent, which then
reports to `POST /v1/run/{id}/report` with a run token until it reports the end.

The run token is `rpt_<secret>_<account id>`: a secret for one attempt of one run. The run keeps its
SHA-256 only; it opens that run's report endpoint while that attempt is the run's, until the run ends or
its deadline passes. While an agent holds the run, the run's lease is the agent's (`lease_owner` is
`agent:<attempt>`): each report extends it by the runnable's `heartbeat_seconds`, never past the deadline,
and the sweeper ends a run whose agent went silent, or whose deadline passed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from runplane.domain.models import ModelUsage, RunRecord
from runplane.domain.states import Status

PREFIX = "rpt"
AGENT_OWNER = "agent:"
MAX_REPORT_BYTES = 256 * 1024


def new_run_token(account_id: str) -> str:
    return f"{PREFIX}_{secrets.token_hex(32)}_{account_id}"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_account(token: str) -> str | None:
    """The account a well-formed run token names; None when it is not one."""
    prefix, _, rest = token.partition("_")
    secret, _, account_id = rest.partition("_")
    if prefix != PREFIX or len(secret) != 64 or not account_id:
        return None
    return account_id


def opens(record: RunRecord, token: str) -> bool:
    return record.token_hash is not None and hmac.compare_digest(record.token_hash, token_hash(token))


def agent_owner(attempt: int) -> str:
    return f"{AGENT_OWNER}{attempt}"


def agent_holds(record: RunRecord) -> bool:
    """An agent, not a worker, holds the running run (the agent accepted it)."""
    return (record.lease_owner or "").startswith(AGENT_OWNER)


def is_async(runnable: dict[str, Any]) -> bool:
    return runnable.get("kind") in ("http", "lambda") and runnable.get("config", {}).get("mode") == "async"


def heartbeat_seconds(runnable: dict[str, Any], default: int) -> int:
    return runnable.get("config", {}).get("heartbeat_seconds") or default


def timeout_reason(timeout_seconds: int | None, max_async_seconds: int) -> str:
    if timeout_seconds:
        return f"Run exceeded timeout_seconds={timeout_seconds}"
    return f"Run exceeded the deployment's maximum of {max_async_seconds} seconds for async agents"


class Reported(BaseModel):
    """What an agent's reports added up to so far that the run's end counts: usage (summed per model) and
    metadata (merged)."""

    usage: list[ModelUsage] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)

    def plus(self, usage: list[ModelUsage], metadata: dict[str, Any]) -> Reported:
        totals: dict[tuple[str, str], ModelUsage] = {}
        for entry in [*self.usage, *usage]:
            key = (entry.provider, entry.model)
            if key in totals:
                kept = totals[key]
                entry = kept.model_copy(
                    update={
                        name: getattr(kept, name) + getattr(entry, name)
                        for name in ("cached_tokens", "prompt_tokens", "completion_tokens")
                    }
                )
            totals[key] = entry
        return Reported(usage=list(totals.values()), metadata={**self.metadata, **metadata})


class ReportAnswer(BaseModel):
    """What the report endpoint answers an agent."""

    run_id: str
    status: Status
    cancel_requested: bool = Field(description="Stop and report the end soon: the run ends cancelled")
    report_by: datetime | None = Field(
        None, description="Report again (a heartbeat: `{}`) before this, or the run ends heartbeat_timeout"
    )
    deadline: datetime | None = Field(None, description="When the run ends timeout whatever is reported")
