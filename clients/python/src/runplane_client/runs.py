"""`client.runs`: start runs, wait for them, follow their events and logs, list and cancel them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any, TypedDict, Unpack

from runplane_client import endpoints as e
from runplane_client.errors import WaitTimeout
from runplane_client.models import (
    CallbackEvent,
    EventPage,
    LogLine,
    LogPage,
    RunEvent,
    Runnable,
    RunPage,
    RunReference,
    RunResource,
    RunState,
    RunStatus,
    StartRunRequest,
    TelemetryStrategy,
)
from runplane_client.pages import Pager
from runplane_client.runnables import Runnables
from runplane_client.transport import Transport

LONG_POLL = 25.0  # the most the API holds a sync start or an events read (under API Gateway's 29 s)

RunnableRef = str | Runnable  # an id, a name, or the runnable


class RunOptions(TypedDict, total=False):
    """StartRunRequest's fields besides `inputs`."""

    metadata: dict[str, Any]
    resources: list[RunResource | dict[str, Any]]
    timeout_seconds: int | None
    telemetry_strategy: TelemetryStrategy
    callback_url: str
    callback_headers: dict[str, str]
    callback_events: list[CallbackEvent]
    experiment_id: str
    experiment_candidate_id: str


class Runs:
    def __init__(self, transport: Transport, runnables: Runnables):
        self._transport, self._runnables = transport, runnables

    def start(
        self,
        runnable: RunnableRef,
        inputs: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        **options: Unpack[RunOptions],
    ) -> RunReference:
        """Start a run and answer at once with its id. Retries reuse one Idempotency-Key (`idempotency_key`,
        or a new one), so they never start a second run."""
        answer = self._start(runnable, inputs, "async", idempotency_key, None, options)
        return RunReference.model_validate(answer)

    def run(
        self,
        runnable: RunnableRef,
        inputs: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        idempotency_key: str | None = None,
        **options: Unpack[RunOptions],
    ) -> RunState:
        """Start a run and wait for its end: the server's wait first, then `wait`. WaitTimeout once
        `timeout` seconds (None: no limit) have passed without an end."""
        deadline = _deadline(timeout)
        answer = self._start(runnable, inputs, "sync", idempotency_key, _poll(deadline), options)
        state = RunState.model_validate(answer)
        return state if state.done else self.wait(state.id, _left(deadline))

    def _start(
        self,
        runnable: RunnableRef,
        inputs: dict[str, Any] | None,
        mode: str,
        idempotency_key: str | None,
        wait: float | None,
        options: RunOptions,
    ) -> Any:
        body = StartRunRequest(**({"inputs": inputs} if inputs is not None else {}), **options)
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        if wait is not None:
            headers["Prefer"] = f"wait={int(wait)}"
        return self._transport.call(
            e.START_RUN,
            path={"id": self._runnables.id_of(runnable)},
            query={"mode": mode},
            headers=headers,
            body=body,
            wait=wait or 0.0,
        )

    def get(self, run_id: str) -> RunState:
        return RunState.model_validate(self._transport.call(e.GET_RUN, path={"run_id": run_id}))

    def wait(self, run_id: str, timeout: float | None = None) -> RunState:
        """The run's state once it has ended, following its events (a long poll per change). WaitTimeout
        once `timeout` seconds (None: no limit) have passed."""
        deadline, after = _deadline(timeout), 0
        while True:
            page = self._events(run_id, after, _poll(deadline))  # (a wait of 0 when none is left)
            if page.done:
                return self.get(run_id)
            left = _left(deadline)
            if left is not None and left <= 0:
                raise WaitTimeout(f"run {run_id} had not ended after {timeout} s", self.get(run_id))
            after = page.last_seq

    def cancel(self, run_id: str) -> RunState:
        """Cancel the run: a waiting one at once, a running one shortly (its status is still `running`).
        A cancelled run answers as it is; one that ended otherwise is a Conflict (`run_terminal`)."""
        return RunState.model_validate(self._transport.call(e.CANCEL_RUN, path={"run_id": run_id}))

    def list(
        self,
        *,
        status: RunStatus | str | None = None,
        runnable: RunnableRef | None = None,
        parent: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        limit: int = 20,
    ) -> Pager[RunState]:
        """The account's runs, newest first, every filter given applying (`created_after` inclusive,
        `created_before` exclusive; times need a zone). `.pages()` gives each page with its `totals`."""
        query = {
            "status": status,
            "runnable_id": self._runnables.id_of(runnable) if runnable is not None else None,
            "parent_run_id": parent,
            "created_after": created_after,
            "created_before": created_before,
            "limit": limit,
        }
        return Pager(
            lambda cursor: RunPage.model_validate(
                self._transport.call(e.LIST_RUNS, query={**query, "cursor": cursor})
            )
        )

    def events(self, run_id: str, after: int = 0, *, wait: float = LONG_POLL) -> Iterator[RunEvent]:
        """The run's events after seq `after`, oldest first, as they happen (each read waits up to `wait`
        seconds for a new one), until the run has ended."""
        while True:
            page = self._events(run_id, after, wait)
            yield from page.events
            if page.done:
                return
            after = page.last_seq

    def _events(self, run_id: str, after: int, wait: float) -> EventPage:
        wait = min(max(wait, 0.0), LONG_POLL)
        query = {"after": after, "wait": round(wait, 3)}
        answer = self._transport.call(e.RUN_EVENTS, path={"run_id": run_id}, query=query, wait=wait)
        return EventPage.model_validate(answer)

    def logs(self, run_id: str, *, follow: bool = False, poll: float = 1.0) -> Iterator[LogLine]:
        """The run's log lines, oldest first: those written so far, or with `follow` every line until the
        run has ended (asking again every `poll` seconds when nothing is new)."""
        cursor: str | None = None
        while True:
            answer = self._transport.call(e.RUN_LOGS, path={"run_id": run_id}, query={"cursor": cursor})
            page = LogPage.model_validate(answer)
            yield from page.lines
            if page.next_cursor is None or not (page.lines or follow):
                return
            if not page.lines:
                time.sleep(poll)
            cursor = page.next_cursor


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _poll(deadline: float | None) -> float:
    """How long the next long poll may wait."""
    left = _left(deadline)
    return LONG_POLL if left is None else min(LONG_POLL, left)
