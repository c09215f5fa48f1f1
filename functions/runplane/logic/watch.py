"""Following a run: its events in order (long-polled), and its log a page at a time.

A run's status events are on its own item; what its runnable reported is in the events table. Both take
seqs from the run item's counter, so one read of the item tells which seqs exist, and the events table is
read only when some of them are not on the item. Progress takes its seqs in the write before its events
are stored: a seq not stored yet is waited for (events are served in order, without gaps), and after
GAP_GRACE_SECONDS taken as lost (its worker crashed between the two writes) and skipped.
"""

from __future__ import annotations

import time

from runplane.domain.errors import InvalidRequest, NotFound
from runplane.domain.events import GAP_GRACE_SECONDS, EventPage, EventType, LogPage, RunEvent
from runplane.domain.models import RunRecord
from runplane.logic.services import services

MAX_WAIT_SECONDS = 25.0  # a long poll, under API Gateway's 29 s
BATCHES_PER_PAGE = 100


def read_events(account_id: str, run_id: str, after: int, wait: float = 0.0) -> EventPage:
    """The run's events with seq above `after`; when none is ready, waits for one up to `wait` seconds
    (at most the deployment's sync wait limit)."""
    deadline = time.monotonic() + min(wait, MAX_WAIT_SECONDS, services().settings.sync_wait_seconds)
    pause = 0.05
    while True:
        record = _run(account_id, run_id)
        page = _page(record, after) if record.seq > after else _empty(record, after)
        left = deadline - time.monotonic()
        if page.events or page.done or left <= 0:
            return page
        time.sleep(min(pause, left))
        pause = min(pause * 2, 0.5)


def _run(account_id: str, run_id: str) -> RunRecord:
    record = services().runs.get(account_id, run_id, consistent=True)
    if record is None:
        raise NotFound("Run", run_id)
    return record


def _empty(record: RunRecord, after: int) -> EventPage:
    return EventPage(events=[], last_seq=after, status=record.status, done=_done(record, after))


def _done(record: RunRecord, last: int) -> bool:
    return record.status.terminal and last >= record.seq


def _page(record: RunRecord, after: int) -> EventPage:
    found = {event.seq: event for event in map(RunEvent.model_validate, record.history) if event.seq > after}
    until = record.seq
    if any(seq not in found for seq in range(after + 1, until + 1)):
        progress, more = services().events.after(record.account_id, record.id, after, limit=BATCHES_PER_PAGE)
        if more and progress:  # what the next page holds comes after this one's last batch
            until = progress[-1].seq
        found.update((event.seq, event) for event in progress if event.seq > after)
    numbered = _numbered_by(record, found, after)
    # the worker stores a batch (or gives up on it) before it numbers the next, and before the run's end:
    # a seq missing below a stored batch, or of an ended run, is lost for good
    settled = max([seq for seq, e in found.items() if e.type is not EventType.status], default=0)
    if record.status.terminal:
        settled = record.seq
    now = time.time()
    events: list[RunEvent] = []
    last = after
    for seq in range(after + 1, until + 1):
        if seq in found:
            events.append(found[seq])
        elif seq > settled and now - numbered[seq] <= GAP_GRACE_SECONDS:
            break  # stored in a moment: the events after it wait for it
        last = seq  # served, or lost (its worker crashed or could not store it): skipped
    return EventPage(events=events, last_seq=last, status=record.status, done=_done(record, last))


def _numbered_by(record: RunRecord, found: dict[int, RunEvent], after: int) -> dict[int, float]:
    """For each seq above `after` that is missing, the latest time (epoch seconds) it can have been
    numbered: seqs are taken in order, so no later than any event found after it, nor than the run's
    last progress write (the only writes whose events are stored apart, later). The grace runs from
    there, not from the run's latest progress, which a run that keeps reporting keeps pushing on."""
    bound = record.progress_at or 0.0
    missing: dict[int, float] = {}
    for seq in range(max(record.seq, *found, after), after, -1):
        if seq in found:
            bound = min(bound, found[seq].at.timestamp())
        else:
            missing[seq] = bound
    return missing


def read_logs(account_id: str, run_id: str, cursor: str | None) -> LogPage:
    """The run's log lines after `cursor` (a page of batches); `next_cursor` is None once the run has
    ended and every line was read."""
    after = _log_cursor(cursor)
    record = _run(account_id, run_id)
    # every batch, not just those with log lines: the cursor must move past the batches a
    # page reads even when none holds a line (a filter is billed for what it reads all the same)
    batches, more = services().events.after(record.account_id, record.id, after, limit=BATCHES_PER_PAGE)
    lines = [line for event in batches if event.seq > after for line in event.lines or ()]
    last = max((event.seq for event in batches), default=after)
    finished = record.status.terminal and not more
    return LogPage(
        lines=lines,
        next_cursor=None if finished else str(last),
        truncated=record.log_bytes >= services().settings.max_log_bytes,
    )


def _log_cursor(cursor: str | None) -> int:
    if cursor is None:
        return 0
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 12:  # "²" is a digit to isdigit
        raise InvalidRequest("cursor is not valid for this listing", "invalid_cursor")
    return int(cursor)
