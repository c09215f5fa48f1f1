"""A run's progress as its worker collects it: what the runnable reports (its state, partial outputs and
log lines) waits in memory and is written at most once per FLUSH_SECONDS, by the write that renews the
lease, its events then stored as one batch. A run's log is kept up to `max_log_bytes`, then cut with a
marker line."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from runplane.domain.events import (
    FLUSH_SECONDS,
    GAP_GRACE_SECONDS,
    MAX_BATCH_BYTES,
    MAX_LINE_CHARS,
    LogLine,
    Progress,
    RunEvent,
    compact,
    cut,
)
from runplane.domain.models import RunRecord
from runplane.logic.services import services
from runplane.observability import logger

REPORTS = ("state", "outputs", "log")  # what a runnable's code sends that is progress


class Reporter:
    """The progress of one attempt that its worker has not written yet."""

    def __init__(self, record: RunRecord, max_log_bytes: int):
        self._state: dict[str, Any] | None = None
        self._outputs: dict[str, Any] | None = None
        self._lines: list[tuple[LogLine, int]] = []  # with their sizes
        self._stored_bytes = record.log_bytes  # the log's size as written
        self._accepted_bytes = record.log_bytes  # with the lines waiting here
        self._max_log_bytes = max_log_bytes
        self._cut = record.log_bytes >= max_log_bytes
        self._written = 0.0  # monotonic time of the last write

    def report(self, kind: str, payload: Any) -> None:
        if kind == "state":
            self._state = payload
        elif kind == "outputs":
            self._outputs = payload
        else:
            self._line(payload)

    def _line(self, payload: dict[str, Any]) -> None:
        if self._cut:
            return
        at = datetime.fromtimestamp(payload.get("at") or time.time(), UTC)
        fields = payload.get("fields")
        if fields and len(compact(fields)) > MAX_LINE_CHARS:
            fields = {"cut": f"{len(compact(fields))} characters of fields, more than a line keeps"}
        line = LogLine(at=at, stream=payload["stream"], message=cut(payload["message"]), fields=fields)
        size = _size(line)
        if self._accepted_bytes + size > self._max_log_bytes:
            self._cut = True
            line = LogLine(
                at=at,
                stream="log",
                message=f"[log cut: a run keeps {self._max_log_bytes} bytes of log, later lines are dropped]",
            )
            size = self._max_log_bytes - self._accepted_bytes
        self._lines.append((line, size))
        self._accepted_bytes += size

    @property
    def pending(self) -> bool:
        return self._state is not None or self._outputs is not None or bool(self._lines)

    @property
    def waiting_bytes(self) -> int:
        """The size of the log lines waiting, as they are stored."""
        return sum(size for _, size in self._lines)

    def due(self) -> float | None:
        """When (monotonic) the next write is due; None while nothing waits."""
        return self._written + FLUSH_SECONDS if self.pending else None

    def take(self) -> Progress | None:
        """What waits, for one write (log lines up to MAX_BATCH_BYTES: the rest wait for the next)."""
        if not self.pending:
            return None
        taken, size = 0, 0
        while taken < len(self._lines) and (taken == 0 or size + self._lines[taken][1] <= MAX_BATCH_BYTES):
            size += self._lines[taken][1]
            taken += 1
        progress = Progress(
            at=time.time(),
            state=self._state,
            outputs=self._outputs,
            lines=[line for line, _ in self._lines[:taken]],
            log_bytes=self._stored_bytes + size,
        )
        self._state, self._outputs, self._lines = None, None, self._lines[taken:]
        self._written = time.monotonic()
        return progress

    def written(self, progress: Progress) -> None:
        self._stored_bytes = progress.log_bytes

    def restore(self, progress: Progress) -> None:
        """Put back what a write that failed took (newer state and outputs win)."""
        self._state = self._state if self._state is not None else progress.state
        self._outputs = self._outputs if self._outputs is not None else progress.outputs
        sizes = [_size(line) for line in progress.lines]
        self._lines = [*zip(progress.lines, sizes, strict=True), *self._lines]


def _size(line: LogLine) -> int:
    return len(line.model_dump_json(exclude_none=True).encode())


def store_events(record: RunRecord, progress: Progress, after: int) -> list[RunEvent]:
    """Store the events of progress the run item now counts (seqs after `after`), through a transient
    error: the events stored, or none if that fails too — then readers skip their seqs after
    GAP_GRACE_SECONDS."""
    settings = services().settings
    longest = max(settings.max_run_seconds, settings.max_async_run_seconds)  # an event outlives its run
    expires_at = int(time.time()) + settings.run_retention_days * 86400 + longest + 86400
    events = progress.numbered(after)
    for attempt in range(2):
        try:
            services().events.put(record.account_id, record.id, events, expires_at)
            return events
        except Exception:
            if not attempt:
                time.sleep(0.1)
    logger.exception(
        "progress events not stored; readers skip them",
        extra={"seqs": [e.seq for e in events], "grace": GAP_GRACE_SECONDS},
    )
    return []
