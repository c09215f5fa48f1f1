"""Reading back what the `span` test runnable wrote: when each run's runnable executed."""

from __future__ import annotations

from pathlib import Path


def spans(path: Path) -> dict[str, tuple[float, float]]:
    """run id -> (started, ended), epoch seconds, one line per execution."""
    return {run_id: (float(a), float(b)) for run_id, a, b in map(str.split, path.read_text().splitlines())}


def most_at_once(executions: list[tuple[float, float]]) -> int:
    """The most runnables that were executing at the same moment."""
    events = sorted([(a, 1) for a, _ in executions] + [(b, -1) for _, b in executions])  # ends first
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak
