"""Tables, queues, the bucket and functions: the single source both the CDK stack and local mode read.

Plain data, no AWS imports, so `infra/` and `runplane.local` can share it without drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Key:
    name: str
    type: str = "S"  # DynamoDB attribute type: S or N


@dataclass(frozen=True)
class Index:
    name: str
    partition_key: Key
    sort_key: Key | None = None
    include: tuple[str, ...] = ()  # projected non-key attributes; empty means KEYS_ONLY


@dataclass(frozen=True)
class Table:
    name: str
    env_var: str
    partition_key: Key
    sort_key: Key | None = None
    indexes: tuple[Index, ...] = ()
    ttl_attribute: str | None = None


@dataclass(frozen=True)
class Queue:
    name: str
    env_var: str
    visibility_timeout_seconds: int
    retention_seconds: int = 4 * 24 * 3600
    max_message_bytes: int = 262_144
    max_receive_count: int | None = None  # None: this is itself a dead-letter queue
    dead_letter_queue: str | None = None


@dataclass(frozen=True)
class Function:
    name: str
    handler: str
    timeout_seconds: int
    memory_mb: int = 512
    queue: str | None = None  # consumes this queue through an event source mapping
    batch_size: int = 10
    max_concurrency: int | None = None
    schedule_minutes: int | None = None
    environment: dict[str, str] = field(default_factory=dict)


RUNS = Table(
    name="runs",
    env_var="RUNPLANE_RUNS_TABLE",
    partition_key=Key("pk"),  # "{account_id}#{run_id}": every read is scoped by account
    # Each index entry is written when the run is created and changed at most once or twice after, in
    # place: the keys of an entry never move (a move is a delete and a put, billed twice).
    indexes=(
        # Every run, newest last. `outcome`, the terminal status, is written once, when the run ends.
        Index("by_account", Key("account_id"), Key("created_key"), include=("runnable_id", "outcome")),
        # Sparse: only child runs carry account_parent ("{account}#{parent run}").
        Index("by_parent", Key("account_parent"), Key("created_key"), include=("runnable_id", "outcome")),
        # Sparse: the runs that have not ended, and ended ones whose follow-ups are not done yet. Filed
        # under a shard of their account ("live_shard"), sorted by "{account}#{created_key}": an account's
        # waiting and running runs are one key range, and the sweeper reads every shard for the runs whose
        # `due_at` (when to look at them: by their lease's end, or a redispatch) has passed. No `status`:
        # a claim then writes no entry (`outcome` tells the ended runs apart).
        Index("live", Key("live_shard"), Key("live_key"), include=("outcome", "runnable_id", "due_at")),
    ),
    ttl_attribute="expires_at",
)
RUNNABLES = Table(
    name="runnables",
    env_var="RUNPLANE_RUNNABLES_TABLE",
    partition_key=Key("account_id"),
    sort_key=Key("id"),
)
API_KEYS = Table(
    name="api_keys",
    env_var="RUNPLANE_KEYS_TABLE",
    partition_key=Key("id"),  # a key's id; "{key id}#rate#{window}" for its request counters
    indexes=(Index("by_account", Key("account_id"), Key("created_at")),),
    ttl_attribute="expires_at",  # request counters only: keys never expire
)
CALLBACKS = Table(
    name="callbacks",
    env_var="RUNPLANE_CALLBACKS_TABLE",
    partition_key=Key("pk"),  # the run's "{account_id}#{run_id}"
    sort_key=Key("id"),  # the delivery's webhook-id
    indexes=(
        # Sparse: only dead deliveries carry dead_day/dead_at, so bulk replay reads just those.
        Index("dead", Key("dead_day"), Key("dead_at", "N")),
        # Sparse: pending deliveries by due time, for the sweeper to re-enqueue any whose message was lost.
        Index("overdue", Key("pending_shard"), Key("next_attempt_at", "N")),
    ),
    ttl_attribute="expires_at",
)
ACCOUNTS = Table(
    name="accounts",
    env_var="RUNPLANE_ACCOUNTS_TABLE",
    partition_key=Key("account_id"),
)
# Concurrency limits: one partition per limited scope ("{account}" or "{account}#{runnable}") holding its
# limit ("limit", account scopes only: a runnable's is in its document), its holders on a few small items
# ("held#0000"…: an attribute per run holding a slot, and `n`, how many), the queue of runs waiting for
# room ("wait#{created}") and, while runs wait, when the sweeper should make sure they were woken ("recheck").
CONCURRENCY = Table(
    name="concurrency",
    env_var="RUNPLANE_CONCURRENCY_TABLE",
    partition_key=Key("scope"),
    sort_key=Key("entry"),
    indexes=(Index("recheck", Key("recheck_shard"), Key("recheck_at", "N")),),  # sparse
)
# What runs report while they go on: one item per batch of events ("{account_id}#{run_id}", the batch's
# last seq), expiring a day after the run would. A run's status events are on its own item instead.
RUN_EVENTS = Table(
    name="run_events",
    env_var="RUNPLANE_EVENTS_TABLE",
    partition_key=Key("pk"),
    sort_key=Key("seq", "N"),
    ttl_attribute="expires_at",
)
# Files runs can use (`POST /v1/resources`): one item per resource, its bytes in the payload bucket. The
# sort key is the resource's UUIDv7, so a listing is newest first without an index; an expiring resource
# carries `expires_at`, a pinned one does not.
RESOURCES = Table(
    name="resources",
    env_var="RUNPLANE_RESOURCES_TABLE",
    partition_key=Key("account_id"),
    sort_key=Key("id"),
    ttl_attribute="expires_at",
)
TABLES = (RUNS, RUNNABLES, API_KEYS, CALLBACKS, ACCOUNTS, CONCURRENCY, RUN_EVENTS, RESOURCES)

DUE_SHARDS = 8  # spreads each sparse index the sweeper reads over several partitions

LAMBDA_PYTHON = "3.14"  # the functions' runtime; the asset is built for it (infra/bundle.py)
WORKER_TIMEOUT_SECONDS = 900
DEAD_LETTER_RETENTION_SECONDS = 14 * 24 * 3600


def _visibility_for(function_timeout: int) -> int:
    # AWS guidance for SQS event sources: visibility timeout at least six times the function timeout.
    return 6 * function_timeout


INTAKE_DLQ = Queue(
    "intake-dlq", "RUNPLANE_INTAKE_DLQ_URL", 30, retention_seconds=DEAD_LETTER_RETENTION_SECONDS
)
DISPATCH_DLQ = Queue(
    "dispatch-dlq", "RUNPLANE_DISPATCH_DLQ_URL", _visibility_for(30), DEAD_LETTER_RETENTION_SECONDS
)
INTAKE = Queue(
    "intake",
    "RUNPLANE_INTAKE_QUEUE_URL",
    _visibility_for(30),
    max_receive_count=5,
    dead_letter_queue=INTAKE_DLQ.name,
)
DISPATCH = Queue(
    "dispatch",
    "RUNPLANE_DISPATCH_QUEUE_URL",
    _visibility_for(WORKER_TIMEOUT_SECONDS),
    max_receive_count=5,
    dead_letter_queue=DISPATCH_DLQ.name,
)
CALLBACK_TIMEOUT_SECONDS = 60
CALLBACKS_DLQ = Queue(
    "callbacks-dlq", "RUNPLANE_CALLBACKS_DLQ_URL", 30, retention_seconds=DEAD_LETTER_RETENTION_SECONDS
)
CALLBACKS_QUEUE = Queue(
    "callbacks",
    "RUNPLANE_CALLBACKS_QUEUE_URL",
    _visibility_for(CALLBACK_TIMEOUT_SECONDS),
    # Retries wait in this queue for up to a day each; the record in DynamoDB is the truth.
    retention_seconds=DEAD_LETTER_RETENTION_SECONDS,
    # Each attempt is one receive, a wait past SQS's 12 h limit one more: far below this.
    # Deliveries that exhaust their schedule are moved to the DLQ explicitly.
    max_receive_count=50,
    dead_letter_queue=CALLBACKS_DLQ.name,
)
QUEUES = (INTAKE_DLQ, DISPATCH_DLQ, INTAKE, DISPATCH, CALLBACKS_DLQ, CALLBACKS_QUEUE)

PAYLOAD_BUCKET_ENV = "RUNPLANE_PAYLOAD_BUCKET"
# The bucket's objects carry the tag EXPIRY_TAG: "run" (payloads and outcomes, kept with their run) or
# "resource" (an expiring resource's bytes); a lifecycle rule per value deletes them. Untagged objects
# (pinned resources) are kept until deleted.
EXPIRY_TAG = "runplane-expiry"

FUNCTIONS = (
    Function("api", "runplane.handlers.api.lambda_handler", timeout_seconds=30),
    Function("intake", "runplane.handlers.intake.lambda_handler", 30, queue=INTAKE.name, batch_size=10),
    # One run per invocation: runs of a batch would otherwise wait for each other.
    Function(
        "worker",
        "runplane.handlers.worker.lambda_handler",
        WORKER_TIMEOUT_SECONDS,
        memory_mb=1024,
        queue=DISPATCH.name,
        batch_size=1,
    ),
    Function("dead_letters", "runplane.handlers.dead_letters.lambda_handler", 30, queue=DISPATCH_DLQ.name),
    Function("sweeper", "runplane.handlers.sweeper.lambda_handler", 60, schedule_minutes=1),
    # Attempts of a batch run concurrently, each bounded by the per-attempt timeout.
    Function(
        "callbacks",
        "runplane.handlers.callbacks.lambda_handler",
        CALLBACK_TIMEOUT_SECONDS,
        queue=CALLBACKS_QUEUE.name,
        batch_size=10,
    ),
)


def queue(name: str) -> Queue:
    return next(q for q in QUEUES if q.name == name)


def function(name: str) -> Function:
    return next(f for f in FUNCTIONS if f.name == name)
