"""A dependency-free helper for asynchronous agents (http or lambda runnables with `mode: async`): report
on the run you were sent to its `report_url` with its `run_token` (domain/reports.py says what a report
holds). Only the standard library is used, so a Lambda function can vendor this one file.

    from runplane.agent import AgentRun

    def on_run(envelope):                   # your server answered the POST 202 first
        run = AgentRun(envelope)
        run.set_state({"step": "search"})
        run.log("searching 3 sources")
        for source in envelope["inputs"]["sources"]:
            if run.cancel_requested:         # the last answer said so: end soon, the run ends cancelled
                return run.fail("stopped on request", code="cancelled")
            found = read(source)             # long work: run.heartbeat() now and then, before run.report_by
            run.partial({"last": found})     # every report is also a heartbeat
        run.complete({"summary": "..."}, usage=[{"provider": "openai", "model": "gpt-4o", "prompt_tokens": 9}])

A Lambda function in async mode: `lambda_handler = lambda_handler_for(work)`, `work(run)` returning the
outputs (a raised exception fails the run).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

RETRIED = {429, 500, 502, 503, 504}
ENDED = {"completed", "failed", "cancelled", "timeout"}


class ReportError(Exception):
    """A report that was refused (`status` 4xx: 400 bad report, 401 bad or expired token, 404 unknown run,
    409 `run_terminal`), or not delivered after the retries (`status` 429/5xx, None when unreachable)."""

    def __init__(self, status: int | None, body: Any, message: str | None = None):
        self.status, self.body = status, body
        self.code = body.get("code") if isinstance(body, dict) else None
        detail = body.get("error") if isinstance(body, dict) else body
        code = f" {self.code}" if self.code else ""
        super().__init__(message or f"report answered {status}{code}: {detail}")


class AgentRun:
    """One run sent to this agent, built from its envelope (a dict, or the JSON body as str/bytes)."""

    def __init__(
        self,
        envelope: dict[str, Any] | str | bytes,
        *,
        timeout: float = 10.0,
        retries: int = 4,
        backoff: float = 0.5,
    ):
        self.envelope = json.loads(envelope) if isinstance(envelope, (str, bytes)) else envelope
        self.run_id: str = self.envelope["run_id"]
        self.inputs: dict[str, Any] = self.envelope.get("inputs", {})
        self.report_url: str = self.envelope["report_url"]
        self.heartbeat_seconds: int | None = self.envelope.get("heartbeat_seconds")
        if not self.report_url.startswith(("https://", "http://")):
            raise ValueError(f"not an http(s) report_url: {self.report_url!r}")
        self.timeout, self.retries, self.backoff = timeout, retries, backoff
        self._token: str = self.envelope["run_token"]
        self.answer: dict[str, Any] = {}  # the last report's answer: run_id, status, cancel_requested, ...

    @property
    def cancel_requested(self) -> bool:
        return bool(self.answer.get("cancel_requested"))

    @property
    def ended(self) -> bool:
        return self.answer.get("status") in ENDED

    @property
    def report_by(self) -> str | None:
        return self.answer.get("report_by")

    def report(self, **parts: Any) -> dict[str, Any]:
        """POST one report (its parts as keywords; None values left out) and return the answer. A 429, a
        5xx, `409 run_busy` or a connection error is tried again (`retries` times, with backoff and
        Retry-After); a refusal raises ReportError at once."""
        body = json.dumps({k: v for k, v in parts.items() if v is not None}).encode()
        headers = {"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"}
        for attempt in range(self.retries + 1):
            wait = min(self.backoff * 2**attempt, 8.0)
            request = urllib.request.Request(self.report_url, body, headers, method="POST")  # noqa: S310
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as reply:  # noqa: S310
                    self.answer = json.loads(reply.read() or b"{}")
                    return self.answer
            except urllib.error.HTTPError as refused:
                problem = ReportError(refused.code, _parsed(refused.read()))
                if refused.code not in RETRIED and problem.code != "run_busy":
                    raise problem from None
                wait = _seconds(refused.headers.get("Retry-After"), wait)
            except (urllib.error.URLError, OSError) as unreachable:
                problem = ReportError(None, None, f"report not delivered: {unreachable}")
            if attempt < self.retries:
                time.sleep(wait)
        raise problem

    def heartbeat(self) -> dict[str, Any]:
        return self.report()

    def set_state(self, state: dict[str, Any] | None = None, **keys: Any) -> dict[str, Any]:
        """Merge into the run's state (a key set to None is removed)."""
        return self.report(state={**(state or {}), **keys})

    def log(self, *lines: str | dict[str, Any]) -> dict[str, Any]:
        """Log lines: each a string or {"message", "fields"?, "level"?}."""
        return self.report(logs=list(lines))

    def partial(self, outputs: dict[str, Any]) -> dict[str, Any]:
        return self.report(outputs=outputs, partial=True)

    def complete(
        self, outputs: dict[str, Any], usage: list[dict[str, Any]] | None = None, metadata: dict | None = None
    ) -> dict[str, Any]:
        """End the run with its outputs (it completes, or ends cancelled if that was asked)."""
        return self.report(outputs=outputs, usage=usage, metadata=metadata)

    def fail(self, message: str, code: str | None = None) -> dict[str, Any]:
        """End the run failed (`code` defaults to runnable_error)."""
        return self.report(error={"message": message, **({"code": code} if code else {})})


def lambda_handler_for(work: Callable[[AgentRun], dict[str, Any] | None]) -> Callable[..., dict[str, Any]]:
    """A Lambda handler for async mode: the event is the envelope; `work(run)` may report as it goes and
    returns the outputs (unless it ended the run itself); an exception it raises fails the run. Reported
    ends are not raised again, so Lambda does not retry the event."""

    def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
        run = AgentRun(event)
        try:
            try:
                outputs = work(run)
            except ReportError:
                raise
            except Exception as problem:
                if not run.ended:
                    run.fail(f"{type(problem).__name__}: {problem}")
                return run.answer
            if not run.ended:
                run.complete(outputs or {})
        except ReportError as refused:  # the run has ended, or its token is stale: nothing to retry
            if refused.status is None or refused.status >= 500:
                raise
        return run.answer

    return handler


def _parsed(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _seconds(header: str | None, default: float) -> float:
    try:
        return min(max(float(header), 0.0), 60.0) if header else default
    except ValueError:
        return default
