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
from runplane.domain.events import GAP_GRACE_SECONDS, EventPage, LogPage, RunEvent
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
    lost_if_missing = time.time() - (record.progress_at or 0) > GAP_GRACE_SECONDS
    events: list[RunEvent] = []
    for seq in range(after + 1, until + 1):
        if seq in found:
            events.append(found[seq])
        elif not lost_if_missing:
            break  # stored in a moment: the events after it wait for it
    last = events[-1].seq if events else after
    if lost_if_missing and until == record.seq:
        last = until
    return EventPage(events=events, last_seq=last, status=record.status, done=_done(record, last))


def read_logs(account_id: str, run_id: str, cursor: str | None) -> LogPage:
    """The run's log lines after `cursor` (a page of batches); `next_cursor` is None once the run has
    ended and every line was read."""
    after = _log_cursor(cursor)
    record = _run(account_id, run_id)
    batches, more = services().events.after(
        record.account_id, record.id, after, logs_only=True, limit=BATCHES_PER_PAGE
    )
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
    if not cursor.isdigit() or len(cursor) > 12:
        raise InvalidRequest("cursor is not valid for this listing", "invalid_cursor")
    return int(cursor)
