"""Concurrency limits: how many runs of a runnable (its `max_concurrency`) and of an account (its own
limit, else the deployment's default) execute at once.

A waiting run starts only with a free slot in every scope that limits it; otherwise it stays `waiting` in
the queue of the first scope without room, and each run that ends wakes the oldest waiting ones. Slots are
items of which only `limit` can exist, taken in the transaction that claims the run and given back when it
ends (`release`, repeated by the sweeper until done). A run's end is itself guaranteed by its lease (the
sweeper re-dispatches or fails a run whose worker stopped renewing it), so no crash can leave a slot held
by a run that is not running.

The runnable's limit is checked first. A run with room there but not in its account takes the runnable's
slot and waits in the account's queue holding it: every run in an account's queue can start the moment
the account has room, so none waits behind a run that is held up by its runnable. Within a queue, runs
start oldest first: a run takes a free slot only while fewer older runs wait than there are free slots.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

from runplane.adapters.run_items import created_key
from runplane.domain.access import Concurrency
from runplane.domain.events import WaitingFor
from runplane.domain.models import RunRecord
from runplane.domain.states import Status
from runplane.logic.services import services
from runplane.observability import logger

RACES = 5  # looks at the slots when other runs keep taking them first
WAKE_AT_MOST = 10  # runs one release dispatches; each that starts wakes the next ones if room is left


@dataclass(frozen=True)
class Scope:
    """A limit and the slots held under it: an account's, or one of its runnables'."""

    id: str
    limit: int
    holders: dict[int, str]  # slot index -> run id

    @property
    def room(self) -> int:
        return self.limit - len(self.holders)

    def holds(self, run_id: str) -> bool:
        return run_id in self.holders.values()

    def free_index(self) -> int:
        # a random free slot: concurrent takers rarely pick the same one
        return random.choice([i for i in range(self.limit) if i not in self.holders])  # noqa: S311


def account_scope(account_id: str) -> str:
    return account_id


def runnable_scope(account_id: str, runnable_id: str) -> str:
    return f"{account_id}#{runnable_id}"


def account_limit(stored: int | None) -> int | None:
    """The account's own limit, else the deployment's default; None when there is none (0)."""
    return (services().settings.account_max_concurrency if stored is None else stored) or None


def _scope(scope_id: str) -> Scope | None:
    """The scope's limit and held slots; None when nothing limits it."""
    account_id, _, runnable_id = scope_id.partition("#")
    if runnable_id:
        runnable = services().runnables.get(account_id, runnable_id, consistent=True)
        if runnable is None or runnable.max_concurrency is None:
            return None
        _, holders = services().concurrency.state(scope_id)
        return Scope(scope_id, runnable.max_concurrency, holders)
    stored, holders = services().concurrency.state(scope_id)
    limit = account_limit(stored)
    return Scope(scope_id, limit, holders) if limit else None


def _older_waiting(scope: Scope, position: str) -> int:
    """How many runs older than `position` wait for the scope (which has room), up to its room."""
    return sum(1 for queued, _ in services().concurrency.waiting(scope.id, scope.room) if queued < position)


def admit(record: RunRecord, owner: str, lease_seconds: float) -> RunRecord | None:
    """Start a waiting run, or in its stead the oldest run waiting for the same room.

    A run starts when every limit over it has room and no older run waits for that room. Otherwise it
    joins the queue of the first scope without room for it; if that scope has room (older runs wait for
    it), this worker starts the oldest of them instead: a dispatch message is a turn at the scope rather
    than a ticket for one run, so room is used as soon as any worker sees it. Returns the claimed record
    (perhaps another run's); None when nothing could start.
    """
    tried: set[str] = set()
    for _ in range(RACES):
        outcome = _claim_or_queue(record, owner, lease_seconds)
        if not isinstance(outcome, str):
            return outcome
        head = _oldest_with_room(outcome)
        if head is None or head in tried:
            logger.info("run waits for a concurrency slot", extra={"run_id": record.id, "scope": outcome})
            return None
        tried.add(head)
        found = services().runs.get(record.account_id, head, consistent=True)
        if found is None or found.status is not Status.waiting:
            return None  # ended while waiting: its release takes it out of the queue
        record = found
    return None


def _claim_or_queue(record: RunRecord, owner: str, lease_seconds: float) -> RunRecord | str | None:
    """Claim the run with its slots, or queue it where it is held up: the claimed record, the scope it
    now waits for, or None when it is no longer waiting."""
    concurrency = services().concurrency
    position = created_key(record)
    contended: Scope | None = None
    for attempt in range(RACES):
        now = time.time()
        scopes = [
            scope
            for scope in (
                _scope(runnable_scope(record.account_id, record.runnable_id)),
                _scope(account_scope(record.account_id)),
            )
            if scope is not None
        ]
        takes: list[tuple[Scope, int]] = []
        blocked = None
        for scope in scopes:
            if scope.holds(record.id):  # taken while it waited in the account's queue
                continue
            if scope.room <= 0 or _older_waiting(scope, position) >= scope.room:
                blocked = scope
                break
            takes.append((scope, scope.free_index()))
        if blocked is None and takes and attempt == RACES - 1:  # others keep taking the room first:
            blocked, takes = contended or takes[0][0], []  # wait in line, woken when one of them ends
        slots = record.slots + [f"{scope.id}|{index}" for scope, index in takes]
        writes = [concurrency.take_write(scope.id, index, record.id) for scope, index in takes]
        left = record.queued_on if record.queued_on != (blocked.id if blocked else None) else None
        if left:
            writes.append(concurrency.leave_write(left, position))
        if blocked is None:
            run_write, moved = services().runs.admit_write(record, owner, now, now + lease_seconds, slots)
        else:
            waiting_for = WaitingFor(
                scope="runnable" if "#" in blocked.id else "account", limit=blocked.limit
            )
            run_write, moved = services().runs.queue_write(record, blocked.id, slots, waiting_for)
            writes.append(concurrency.join_write(blocked.id, position, record.id))
            recheck_at = now + services().settings.concurrency_recheck_seconds
            concurrency.ensure_recheck(blocked.id, recheck_at)  # before joining: a crash may follow
        try:
            failed = concurrency.commit([run_write, *writes])
        except Exception:  # a transient error: the run as stored tells whether it was applied
            logger.warning("admission write failed; looking whether it was applied", exc_info=True)
            failed = _as_applied(record, owner, blocked)
        if not failed:
            if left:  # it may have had room for more than this run
                _wake_soon(left)
            return moved if blocked is None else blocked.id
        if failed[0] == "ConditionalCheckFailed":  # a duplicate dispatch moved the run meanwhile
            fresh = services().runs.get(record.account_id, record.id, consistent=True)
            if fresh is not None and fresh.lease_owner == owner:  # this claim, its answer lost on the way
                return fresh
            if fresh is None or fresh.status is not Status.waiting:
                return None
            record = fresh
        elif "ConditionalCheckFailed" in failed[1 : 1 + len(takes)]:
            contended = takes[failed.index("ConditionalCheckFailed", 1) - 1][0]
        # another run took a slot first: look again
    services().queues.dispatch(record.account_id, record.id)  # still contended: look again shortly
    return None


def _as_applied(record: RunRecord, owner: str, blocked: Scope | None) -> list[str]:
    """What an admission write whose answer was lost did: [] when it was applied (the claim is this
    worker's, or the run joined `blocked`'s queue), a conditional failure when another worker moved the
    run meanwhile, and "Unknown" (look again) when nothing was applied."""
    fresh = services().runs.get(record.account_id, record.id, consistent=True)
    if fresh is None or fresh.admissions == record.admissions:
        return ["Unknown"]
    claimed = blocked is None and fresh.lease_owner == owner
    queued = (
        blocked is not None and fresh.queued_on == blocked.id and fresh.admissions == record.admissions + 1
    )
    return [] if claimed or queued else ["ConditionalCheckFailed"]


def _oldest_with_room(scope_id: str) -> str | None:
    """The oldest run waiting for the scope, if the scope has room for it."""
    scope = _scope(scope_id)
    if scope is not None and scope.room <= 0:
        return None
    waiting = services().concurrency.waiting(scope_id, 1)
    return waiting[0][1] if waiting else None


def _wake_soon(scope_id: str) -> None:
    """`wake` after this worker claimed a run: a failure must not stop it from executing the run (the
    sweeper's recheck of the scope wakes them instead)."""
    try:
        wake(scope_id)
    except Exception:
        logger.exception("waiting runs not woken; the sweeper will", extra={"scope": scope_id})


def due_rechecks(shard: str, now: float, limit: int) -> list[tuple[str, float]]:
    """The scopes that have had runs waiting for a while: (scope, recheck time seen)."""
    return services().concurrency.due_rechecks(shard, now, limit)


def recheck(scope_id: str, seen: float, now: float) -> None:
    """The sweeper's safety net against a lost wake-up (a crash between a run's end and its wake-up):
    wake the scope's oldest runs if it has room, and look again later while runs wait."""
    concurrency = services().concurrency
    if concurrency.waiting(scope_id, 1):
        wake(scope_id)
        concurrency.postpone_recheck(scope_id, seen, now + services().settings.concurrency_recheck_seconds)
    else:
        concurrency.drop_recheck(scope_id, seen)


def wake(scope_id: str) -> None:
    """Dispatch the oldest runs waiting for the scope, as many as it has room for (a few at a time);
    each once, however many runs end at the same moment."""
    concurrency = services().concurrency
    waiting = concurrency.waiting(scope_id, WAKE_AT_MOST)
    if not waiting:
        return
    scope = _scope(scope_id)
    account_id = scope_id.partition("#")[0]
    now = time.time()
    # a woken run is not dispatched again until the next recheck could (its message is on the way)
    stale_before = now - services().settings.concurrency_recheck_seconds * 2 / 3
    for position, run_id in waiting if scope is None else waiting[: max(scope.room, 0)]:
        if concurrency.mark_woken(scope_id, position, now, stale_before):
            services().queues.dispatch(account_id, run_id)


def release(record: RunRecord) -> None:
    """Give back an ended run's slots and its place in a queue, and wake the runs waiting for that room.

    Safe to repeat: the sweeper does when the path that ended the run was cut short.
    """
    scopes: list[str] = []
    for slot in record.slots:
        scope_id, index = slot.rsplit("|", 1)
        services().concurrency.release(scope_id, int(index), record.id)
        scopes.append(scope_id)
    if record.queued_on:  # ended while waiting (cancelled): later runs may be waiting behind it
        services().concurrency.leave(record.queued_on, created_key(record))
        scopes.append(record.queued_on)
    for scope_id in dict.fromkeys(scopes):
        wake(scope_id)


def account_concurrency(account_id: str) -> Concurrency:
    stored, holders = services().concurrency.state(account_scope(account_id))
    limit = account_limit(stored)
    return Concurrency(max_concurrency=limit, running=len(holders) if limit else None)


def set_account_limit(account_id: str, limit: int | None) -> None:
    """Give an account its own limit (0: none), or None to follow the deployment's default."""
    services().concurrency.set_limit(account_scope(account_id), limit)
    wake(account_scope(account_id))


def runnable_limit_changed(account_id: str, runnable_id: str) -> None:
    wake(runnable_scope(account_id, runnable_id))
