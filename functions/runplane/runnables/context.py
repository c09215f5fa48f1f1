"""What a run's code sees: `RunContext`, and `RunFailed` to end a run with an error of its choosing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from runplane.domain.documents import MAX_DEPTH, too_deep
from runplane.domain.events import MAX_PARTIAL_OUTPUTS_BYTES, MAX_STATE_BYTES, Stream, compact
from runplane.domain.models import ModelUsage
from runplane.domain.states import ErrorCode, Status
from runplane.runnables.resources import ResourceFile


class RunFailed(Exception):
    """Raise from a runnable to fail the run with a message and an error code of your choosing."""

    def __init__(self, message: str, code: str = "runnable_error"):
        super().__init__(message)
        self.message = message
        self.code = code


class Flag(Protocol):
    def is_set(self) -> bool: ...


@dataclass
class RunContext:
    """The run being executed. `deadline` (epoch seconds) is when its time is up."""

    run_id: str
    account_id: str
    runnable_id: str
    attempt: int
    deadline: float
    resources: dict[str, ResourceFile] = field(default_factory=dict)  # by the name the run gave it
    metadata: dict[str, Any] = field(default_factory=dict)
    output_schema: dict[str, Any] | None = None  # the runnable's, when it declares one
    state: dict[str, Any] = field(default_factory=dict)  # as last set (by an earlier attempt too)
    partial_outputs: dict[str, Any] = field(default_factory=dict)
    # set by the executor: where reports go, how to ask the worker for something (start or read a child
    # run), the cancellation flag, the account's webhook signing secrets (read when first needed)
    send: Callable[[str, Any], None] | None = field(default=None, repr=False)
    ask: Callable[[str, dict[str, Any]], dict[str, Any]] | None = field(default=None, repr=False)
    cancel_flag: Flag | None = field(default=None, repr=False)
    signing_secrets: Callable[[], list[str]] | None = field(default=None, repr=False)
    children_started: int = field(default=0, repr=False)

    def record_usage(
        self,
        provider: str,
        model: str,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        cached_tokens: int = 0,
    ) -> None:
        """Count model usage toward the run's totals and cost. `prompt_tokens` includes `cached_tokens`."""
        usage = ModelUsage(
            provider=provider,
            model=model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=cached_tokens,
        )
        self._report("usage", usage.model_dump())

    def add_metadata(self, **fields: Any) -> None:
        """Add JSON values to the run's `result.metadata`."""
        if too_deep(fields):
            raise ValueError(f"metadata nests deeper than {MAX_DEPTH} levels")
        self._report("metadata", fields)

    def set_state(self, values: dict[str, Any], *, replace: bool = False) -> None:
        """Set the run's `state`, served while it runs and after: `values` are merged into it (a key set
        to None is removed), or replace it. Written at most once a second; the latest state wins."""
        self.state = self._publish("state", self.state, values, replace, MAX_STATE_BYTES)

    def set_outputs(self, values: dict[str, Any], *, replace: bool = False) -> None:
        """Publish partial outputs (`result.outputs` while the run goes on), merged as `set_state` does.
        What the runnable returns replaces them when it ends."""
        self.partial_outputs = self._publish(
            "outputs", self.partial_outputs, values, replace, MAX_PARTIAL_OUTPUTS_BYTES
        )

    def log(self, message: str, **fields: Any) -> None:
        """Add a line to the run's log, with JSON `fields` (others are turned into strings)."""
        self.log_line("log", message, fields)

    def log_line(self, stream: Stream, message: str, fields: dict[str, Any] | None = None) -> None:
        """Add a line to the run's log on `stream` (how a kind passes on what a remote runnable logged)."""
        values = json.loads(json.dumps(fields, default=str)) if fields else None
        self._report("log", {"stream": stream, "message": str(message), "fields": values, "at": time.time()})

    def _publish(
        self, kind: str, current: dict[str, Any], values: dict[str, Any], replace: bool, limit: int
    ) -> dict[str, Any]:
        if not isinstance(values, dict):
            raise TypeError(f"{kind} must be a dict, not {type(values).__name__}")
        base = {} if replace else current
        merged = {k: v for k, v in {**base, **values}.items() if v is not None}
        if too_deep(merged):
            raise ValueError(f"{kind} nests deeper than {MAX_DEPTH} levels")
        try:
            size = len(compact(merged).encode())
        except (TypeError, ValueError) as problem:
            raise ValueError(f"{kind} is not JSON: {problem}") from None
        if size > limit:
            raise ValueError(f"{kind} would be {size} bytes of JSON; at most {limit} are kept")
        self._report(kind, merged)
        return merged

    @property
    def cancelled(self) -> bool:
        """True once the run's cancellation was requested: return soon (the run ends `cancelled`)."""
        return self.cancel_flag is not None and self.cancel_flag.is_set()

    def remaining_seconds(self) -> float:
        return max(0.0, self.deadline - time.time())

    def run(
        self,
        runnable_id: str,
        inputs: dict[str, Any] | None = None,
        *,
        wait: bool = True,
        metadata: dict[str, Any] | None = None,
        timeout_seconds: int | None = None,
    ) -> dict[str, Any] | str:
        """Start a child run of another runnable: its RunState (as JSON) once it ends, or with
        `wait=False` its id. A retried parent gets the same children back, so none runs twice."""
        if self.ask is None:
            raise RunFailed(
                "ctx.run works only while a worker executes the run", ErrorCode.child_runs_unavailable
            )
        self.children_started += 1
        request = {
            "sequence": self.children_started,
            "runnable_id": runnable_id,
            "inputs": inputs or {},
            "metadata": metadata or {},
            "timeout_seconds": timeout_seconds,
        }
        run_id = self._answer("start_child", request)["id"]
        if not wait:
            return run_id
        pause = 0.1
        while True:
            state = self._answer("get_run", {"id": run_id})
            if Status(state["status"]).terminal or self.remaining_seconds() <= 0:
                return state
            time.sleep(min(pause, self.remaining_seconds()))
            pause = min(pause * 1.5, 2.0)

    def _answer(self, question: str, payload: dict[str, Any]) -> dict[str, Any]:
        if self.cancelled:
            raise RunFailed("Run was cancelled on request", ErrorCode.cancelled)
        answer = self.ask(question, payload)  # type: ignore[misc]
        if "error" in answer:
            raise RunFailed(answer["error"]["message"], answer["error"]["code"])
        return answer

    def _report(self, kind: str, payload: Any) -> None:
        if self.send is not None:
            self.send(kind, payload)
