"""What `runplane runs …` and `runplane runnables …` print for people: tables, summaries, event lines.

It takes runplane_client's models but imports nothing of the client: it reads their attributes only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

WIDE_JSON = 100  # a JSON value longer than this on one line is printed indented


def when(moment: datetime) -> str:
    """A time in the local zone, to the second."""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def clock(moment: datetime) -> str:
    return moment.astimezone().strftime("%H:%M:%S")


def duration(start: datetime, end: datetime | None) -> str:
    """From `start` to `end` (or to now, for what has not ended): 4.2s, 3m05s, 2h01m."""
    seconds = ((end or datetime.now(UTC)) - start).total_seconds()
    if seconds < 60:
        return f"{max(seconds, 0):.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def as_json(value: Any) -> str:
    """One line when it is short, else indented."""
    line = compact(value)
    return line if len(line) <= WIDE_JSON else json.dumps(value, ensure_ascii=False, indent=2)


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in (headers, *rows)
    )


def block(fields: Sequence[tuple[str, Any]]) -> str:
    """`label  value` lines, the values aligned (a value's further lines too); None values left out."""
    shown = [(label, str(value)) for label, value in fields if value is not None]
    width = max(len(label) for label, _ in shown) + 2
    return "\n".join(label.ljust(width) + value.replace("\n", "\n" + " " * width) for label, value in shown)


def _error(error: Any) -> str | None:
    return None if error is None else f"{error.message} ({error.code or 'no code'})"


def run_summary(run: Any) -> str:
    """A RunState: what it is, how it went, its outputs."""
    return block(
        [
            ("run", run.id),
            ("runnable", run.runnable_id),
            ("status", run.status.value),
            ("created", when(run.created_at)),
            ("duration", duration(run.created_at, run.completed_at)),
            ("error", _error(run.error)),
            ("state", as_json(run.state) if run.state else None),
            ("outputs", as_json(run.outputs) if run.outputs is not None else None),
        ]
    )


def runs_table(runs: Sequence[Any], names: dict[str, str]) -> str:
    """RunStates, their runnables by name where `names` knows them."""
    rows = [
        (
            run.id,
            names.get(run.runnable_id or "", run.runnable_id or "-"),
            run.status.value,
            when(run.created_at),
            duration(run.created_at, run.completed_at),
        )
        for run in runs
    ]
    return table(("ID", "RUNNABLE", "STATUS", "CREATED", "DURATION"), rows)


def runnable_summary(runnable: Any) -> str:
    timeout = runnable.timeout_seconds
    return block(
        [
            ("runnable", runnable.id),
            ("name", runnable.name),
            ("kind", runnable.kind),
            ("created", when(runnable.created_at)),
            ("config", as_json(runnable.config)),
            ("input schema", as_json(runnable.input_schema) if runnable.input_schema else None),
            ("output schema", as_json(runnable.output_schema) if runnable.output_schema else None),
            ("timeout", None if timeout is None else f"{timeout}s"),
            ("concurrency", runnable.max_concurrency),
            ("tags", ", ".join(runnable.tags) or None),
        ]
    )


def runnables_table(runnables: Sequence[Any]) -> str:
    rows = [(r.id, r.name, r.kind, when(r.created_at)) for r in runnables]
    return table(("ID", "NAME", "KIND", "CREATED"), rows)


def log_line(line: Any) -> str:
    fields = f" {compact(line.fields)}" if line.fields else ""
    return f"{clock(line.at)} {line.stream:<6} {line.message}{fields}"


def event_lines(event: Any) -> Iterator[str]:
    """A RunEvent as it is followed: one line, or a `logs` event's lines."""
    if event.type == "logs":
        yield from map(log_line, event.lines or [])
        return
    if event.type == "state":
        yield f"{clock(event.at)} state  {compact(event.state)}"
        return
    if event.type == "output":
        yield f"{clock(event.at)} output {compact(event.outputs)}"
        return
    line = f"{clock(event.at)} status {event.status.value}"
    if event.reason:
        line += f" ({event.reason})"
    if event.waiting_for:
        line += (
            f", waiting for a free slot (the {event.waiting_for.scope}'s limit: {event.waiting_for.limit})"
        )
    if event.error:
        line += f": {_error(event.error)}"
    yield line
