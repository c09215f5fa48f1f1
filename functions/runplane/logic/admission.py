"""Concurrency limits: how many runs of a runnable (its `max_concurrency`) and of an account (its own
limit, else the deployment's default) execute at once.

A waiting run starts only with a free slot in every scope that limits it; otherwise it stays `waiting` in
the queue of the first scope without room, and each run that ends wakes the oldest waiting ones. A slot is
the run's name on one of its scope's holder shards (adapters/concurrency.py): taking one is a conditional
UpdateItem that adds the run to a shard with room, giving it back one that removes it, both harmless to
repeat, so a run with room costs one write to start and one to end and reads nothing but its limits (read
at most once a minute per process: a changed limit applies within LIMIT_SECONDS). The run records the
shards it holds (`slots`, "scope|shard"). A crash between taking a slot and claiming the run, or between
the run's end and the slot's return, leaves a holder whose run does not hold it: the sweeper's recheck of a
scope that has runs waiting removes such holders (`reclaim`) before it wakes them.

The runnable's limit is checked first. A run with room there but not in its account takes the runnable's
slot and waits in the account's queue holding it: every run in an account's queue can start the moment
the account has room, so none waits behind a run that is held up by its runnable. While runs wait in a
scope's queue its shards are marked, and only a run from the queue takes a free slot there: runs start
oldest first.
"""

from __future__ import annotations

import time
import zlib
from dataclasses import dataclass

from runplane.adapters.concurrency import attempt_token, shard_capacity, shard_count, token_time
from runplane.adapters.run_items import created_key
from runplane.domain.access import Concurrency
from runplane.domain.events import WaitingFor
from runplane.domain.models import RunRecord
from runplane.domain.states import Status
from runplane.logic.services import services
from runplane.observability import logger

RACES = 5  # tries when duplicate dispatches of the run move it meanwhile
WAKE_AT_MOST = 10  # runs one release dispatches; each that starts wakes the next ones if room is left
LIMIT_SECONDS = 60.0  # how long a process uses a scope's limit as it read it
STALE_SECONDS = 60.0  # a holder younger than this may be a claim in flight: `reclaim` leaves it


@dataclass(frozen=True)
class Scope:
    """A limit over runs: an account's, or one of its runnables'."""

    id: str
    limit: int

    @property
    def shards(self) -> int:
        return shard_count(self.limit)

    def room(self) -> int:
        holders, _ = services().concurrency.holders(self.id)
        return self.limit - len(holders)


def account_scope(account_id: str) -> str:
    return account_id


def runnable_scope(account_id: str, runnable_id: str) -> str:
    return f"{account_id}#{runnable_id}"


def account_limit(stored: int | None) -> int | None:
    """The account's own limit, else the deployment's default; None when there is none (0)."""
    return (services().settings.account_max_concurrency if stored is None else stored) or None


def _scope(scope_id: str) -> Scope | None:
    """The scope and its limit; None when nothing limits it."""
    account_id, _, runnable_id = scope_id.partition("#")

    def read() -> int | None:
        if runnable_id:
            runnable = services().runnables.get(account_id, runnable_id, consistent=True)
            return runnable.max_concurrency if runnable is not None else None
        return account_limit(services().concurrency.stored_limit(scope_id))

    limit = services().concurrency.known_limit(scope_id, LIMIT_SECONDS, read)
    return Scope(scope_id, limit) if limit else None


def _held(record: RunRecord, scope: Scope) -> bool:
    return any(slot.rsplit("|", 1)[0] == scope.id for slot in record.slots)


def _take(scope: Scope, record: RunRecord, token: int) -> str | None:
    """A slot of the scope for the run ("scope|shard") held by the attempt `token`, trying its shards from
    one of its own; None when none has room (for it: a run not in the scope's queue does not take room
    runs wait for)."""
    shards = scope.shards
    first = zlib.crc32(record.id.encode()) % shards
    queued = record.queued_on == scope.id
    for shard in ((first + i) % shards for i in range(shards)):
        capacity = shard_capacity(scope.limit, shard)
        if services().concurrency.take(scope.id, shard, capacity, record.id, token, queued=queued):
            return f"{scope.id}|{shard}"
    return None


def _give_back(slots: list[str], run_id: str, token: int) -> None:
    """The attempt `token` leaves the slots: another attempt of the run holding one keeps it."""
    for slot in slots:
        scope_id, shard = slot.rsplit("|", 1)
        services().concurrency.give_back(scope_id, int(shard), run_id, token)


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
            logger.debug("run waits for a concurrency slot", extra={"run_id": record.id, "scope": outcome})
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
    scopes = [
        scope
        for scope in (
            _scope(runnable_scope(record.account_id, record.runnable_id)),
            _scope(account_scope(record.account_id)),
        )
        if scope is not None
    ]
    for _ in range(RACES):
        now = time.time()
        token = attempt_token(now)
        taken: list[str] = []
        blocked = None
        for scope in scopes:
            if _held(record, scope):  # taken while it waited in the account's queue
                continue
            slot = _take(scope, record, token)
            if slot is None:
                blocked = scope
                break
            taken.append(slot)
        slots = record.slots + taken
        writes = []
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
            concurrency.note_waiters(blocked.id, blocked.shards, waiting=True)
        try:
            failed = concurrency.commit_all([run_write, *writes])
        except Exception:  # a transient error: the run as stored tells whether it was applied
            logger.warning("admission write failed; looking whether it was applied", exc_info=True)
            failed = ["Unknown"]
        fresh = None
        if failed:  # refused, or applied with its answer lost (a plain write's retry fails its condition)
            fresh = services().runs.get(record.account_id, record.id, consistent=True)
            # the slots the run does not hold (an ended run's were given back): if another attempt
            # lists one, it joined the holder
            held = [] if fresh is None or fresh.status.terminal else fresh.slots
            _give_back([slot for slot in taken if slot not in held], record.id, token)
            if fresh is not None and _applied(fresh, record, owner, blocked):
                failed = []
        if not failed:
            if left:  # it may have had room for more than this run
                _wake_soon(left)
            return moved if blocked is None else blocked.id
        if fresh is None or fresh.status is not Status.waiting:
            return None
        record = fresh  # nothing applied, or a duplicate dispatch moved the run meanwhile: look again
    services().queues.dispatch(record.account_id, record.id)  # still moving: look again shortly
    return None


def _applied(fresh: RunRecord, record: RunRecord, owner: str, blocked: Scope | None) -> bool:
    """Whether the run as stored (`fresh`) is what this worker's admission write of `record` made: the
    claim is this worker's, or the run joined `blocked`'s queue."""
    if fresh.admissions != record.admissions + 1:
        return False
    if blocked is None:
        return fresh.status is Status.running and fresh.lease_owner == owner
    return fresh.queued_on == blocked.id


def _oldest_with_room(scope_id: str) -> str | None:
    """The oldest run waiting for the scope, if the scope has room for it."""
    scope = _scope(scope_id)
    if scope is not None and scope.room() <= 0:
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


def recheck(scope_id: str, seen: float, now: float) -> int:
    """The sweeper's safety net against a lost wake-up or a slot a crash left taken: while runs wait,
    give back the slots of runs that no longer hold them when the scope is full, wake the oldest runs if
    it has room, and look again later. How many slots it gave back."""
    concurrency = services().concurrency
    given_back = 0
    if concurrency.waiting(scope_id, 1):
        scope = _scope(scope_id)
        if scope is not None and scope.room() <= 0:
            given_back = reclaim(scope_id, now)
        wake(scope_id)
        concurrency.postpone_recheck(scope_id, seen, now + services().settings.concurrency_recheck_seconds)
    else:
        concurrency.drop_recheck(scope_id, seen)
    return given_back


def reclaim(scope_id: str, now: float) -> int:
    """Give back the slots whose run no longer holds them (it ended, or never started with them, its
    worker gone), leaving those taken in the last STALE_SECONDS (a claim may be on its way). How many."""
    concurrency = services().concurrency
    holders, _ = concurrency.holders(scope_id)
    older = {
        run_id: held for run_id, held in holders.items() if token_time(max(held[1])) < now - STALE_SECONDS
    }
    account_id = scope_id.partition("#")[0]
    runs = {r.id: r for r in services().runs.get_many(account_id, list(older), consistent=True)}
    given_back = 0
    for run_id, (shard, tokens) in older.items():
        run = runs.get(run_id)
        listed = run is not None and f"{scope_id}|{shard}" in run.slots
        if run is not None and run.status.terminal:
            release(run)  # its slots in other scopes too
        elif listed:
            continue
        if not listed:  # taken by an attempt that crashed before its run listed it
            concurrency.release(scope_id, shard, run_id, seen=tokens)
        given_back += 1
    if given_back:
        logger.warning("concurrency slots given back", extra={"scope": scope_id, "slots": given_back})
    return given_back


def wake(scope_id: str) -> None:
    """Dispatch the oldest runs waiting for the scope, as many as it has room for (a few at a time);
    each once, however many runs end at the same moment. With nobody waiting, the scope's shards are no
    longer marked."""
    concurrency = services().concurrency
    scope = _scope(scope_id)
    waiting = concurrency.waiting(scope_id, WAKE_AT_MOST)
    if not waiting:
        if scope is not None:
            concurrency.note_waiters(scope_id, scope.shards, waiting=False)
        return
    account_id = scope_id.partition("#")[0]
    now = time.time()
    # a woken run is not dispatched again until the next recheck could (its message is on the way)
    stale_before = now - services().settings.concurrency_recheck_seconds * 2 / 3
    for position, run_id in waiting if scope is None else waiting[: max(scope.room(), 0)]:
        if concurrency.mark_woken(scope_id, position, now, stale_before):
            services().queues.dispatch(account_id, run_id)


def release(record: RunRecord) -> None:
    """Give back an ended run's slots and its place in a queue, and wake the runs waiting for that room.

    Safe to repeat: the sweeper does when the path that ended the run was cut short.
    """
    scopes: list[str] = []
    for slot in record.slots:
        scope_id, shard = slot.rsplit("|", 1)
        if services().concurrency.release(scope_id, int(shard), record.id):
            scopes.append(scope_id)  # runs wait for it
    if record.queued_on:  # ended while waiting (cancelled): later runs may be waiting behind it
        services().concurrency.leave(record.queued_on, created_key(record))
        scopes.append(record.queued_on)
    for scope_id in dict.fromkeys(scopes):
        wake(scope_id)


def account_concurrency(account_id: str) -> Concurrency:
    scope_id = account_scope(account_id)
    limit = account_limit(services().concurrency.stored_limit(scope_id))
    holders, _ = services().concurrency.holders(scope_id) if limit else ({}, False)
    return Concurrency(max_concurrency=limit, running=len(holders) if limit else None)


def set_account_limit(account_id: str, limit: int | None) -> None:
    """Give an account its own limit (0: none), or None to follow the deployment's default."""
    services().concurrency.set_limit(account_scope(account_id), limit)
    wake(account_scope(account_id))


def runnable_limit_changed(account_id: str, runnable_id: str) -> None:
    scope_id = runnable_scope(account_id, runnable_id)
    services().concurrency.forget_limit(scope_id)
    wake(scope_id)
