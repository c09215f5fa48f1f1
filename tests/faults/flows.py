"""The paths the fault matrix covers, and running one scenario of a path.

A flow is what a scenario starts from (`prepare`: not recorded, may crash a worker on purpose to leave
the run where the recorded components take over), what starts it (`start`), whose requests are its
injection points (`components`), how it must end (`expect`) and what else it must have done (`check`).
The API → dispatch → worker → callback path is `api_run` (`api_run_progress` with a runnable that
reports progress, its worker's requests); the intake path `intake_run`; the sweeper's
three ways to act and the dead-letter handler each have a flow that leaves them something to do;
`api_redeliver` asks for a pending callback to be attempted now. `api_run_async` is a run of an async
http runnable: its worker sends it to the agent and hands it over, the agent's reports end it
(tests/faults/agent.py); `sweeper_agent_silent` ends a run whose agent never reports. Resources:
`api_run_resources` is a run naming a resource by id and creating one inline, whose python code reads both
(its forked process's S3 reads are the worker's points); `api_run_resources_refused` the same run refused by
its budget once its inline resource is made (what create_run discards); `api_create_resource` a
`POST /v1/resources`; `api_finish_upload` the read that finds an upload's object and makes it ready.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import astuple, dataclass, field
from functools import cache
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import requests
from runplane import definitions as defs
from runplane.adapters.blobs import expiry_tagging
from runplane.domain.models import RunnableFields
from runplane.logic.callbacks import OVERDUE_AFTER_SECONDS
from runplane.logic.resources import resource_key, run_resource_id
from runplane.logic.runnables import create_runnable

from tests.faults.agent import ScriptedAgent, agent_of
from tests.faults.harness import READS, Expect, Fault, Point, Report, Stack, acting_as
from tests.receiver import Answer


@dataclass(frozen=True)
class Flow:
    name: str
    components: frozenset[str]
    expect: Expect
    start: Callable[[Stack], object]
    prepare: Callable[[Stack], object] = lambda stack: None
    settings: dict[str, str] = field(default_factory=dict)
    check: Callable[[Stack], list[str]] = lambda stack: []
    # whether the worker renews the lease in every run of the flow (the agent answers slower than the
    # heartbeat); elsewhere a renewal depends on the machine's speed, so it is no point of the flow
    renews: bool = False

    def __str__(self) -> str:
        return self.name


def _accepted(stack: Stack, **inputs: object) -> None:
    """A run accepted over the API and not executed yet."""
    stack.start_run(inputs=stack.run_inputs(**inputs))


def _worker_lost(
    where: Callable[[Stack, Point], bool], *, callbacks_down: bool = False
) -> Callable[[Stack], None]:
    """A run accepted, then its worker died right after the first request `where` accepts; with
    `callbacks_down`, the worker could not send to the callbacks queue meanwhile (its end keeps the run
    in the sweeper's index, to send the callback)."""

    def prepare(stack: Stack) -> None:
        _accepted(stack)
        faults = [Fault("crash_after", where=lambda point, params: where(stack, point))]
        if callbacks_down:
            faults.append(Fault("throttled", where=_callbacks_send, times=1000))
        stack.injector.faults.extend(faults)
        stack.deliver_visible()
        if faults[0].times:
            stack.errors.append("the flow's prelude crash never happened")
        for fault in faults:
            stack.injector.faults.remove(fault)

    return prepare


def _callbacks_send(point: Point, params: dict[str, object]) -> bool:
    return point.operation == "SendMessage" and "callbacks" in str(params.get("QueueUrl", ""))


def _dead_lettered(stack: Stack) -> None:
    """A run accepted whose dispatch message was received maxReceiveCount times and never deleted."""
    _accepted(stack)
    queue, client = stack.queue_url("dispatch"), stack.svc.queues.client
    with acting_as(None):
        for _ in range(6):  # the sixth receive finds it over the limit and moves it to the DLQ
            client.receive_message(QueueUrl=queue, VisibilityTimeout=0, WaitTimeSeconds=0)


def _asked(action: str) -> Callable[[Stack], None]:
    """`POST /v1/run/{id}/{action}` of the flow's run, tried again as a client does until answered 2xx."""

    def start(stack: Stack) -> None:
        run_id = stack.runs()[0]["id"]
        for _ in range(4):
            answer = stack.request("POST", f"/v1/run/{run_id}/{action}")
            if answer.status is not None and answer.status < 300:
                return

    return start


RETRY_SECONDS = 3600  # api_redeliver's schedule: one retry, an hour after the first attempt


def _retry_pending(stack: Stack) -> None:
    """A run that ended, whose callback's first attempt failed: its retry is an hour away."""
    _accepted(stack)
    stack.receiver.script = [Answer(500), Answer(200)]
    stack.deliver_visible()


def _attempted_at_once(stack: Stack) -> list[str]:
    """The receiver got the failed attempt and then one more, made at once: before the sweeper could have
    had to enqueue it, let alone the old schedule (the old round's message is dropped later)."""
    received = stack.receiver.received
    if len(received) != 2:
        return [f"the receiver got {len(received)} requests, expected the failed attempt and one more"]
    if (late := received[1].at - received[0].at) >= OVERDUE_AFTER_SECONDS:
        return [f"the redelivery was attempted {late:.0f} s after the failed attempt"]
    return []


def _at_payload_read(stack: Stack, point: Point) -> bool:  # after the claim, before the body starts
    return point.component == "worker" and point.operation == "GetObject"


def _at_end(stack: Stack, point: Point) -> bool:
    """The worker's write that ends the run (after its callback's delivery was stored and enqueued)."""
    return (
        point.component == "worker"
        and point.service == "dynamodb"
        and point.operation not in READS
        and point.site.startswith("_end>")
        and stack.executions() > 0
    )


# --- asynchronous agents ---

PUBLIC_URL = "https://runplane.example"  # the report URL's origin: the agent posts to its path
AGENT_SETTINGS = {"RUNPLANE_PUBLIC_URL": PUBLIC_URL}
AGENT_HEARTBEAT = 60  # virtual seconds: the scripted agent reports at once, well within it
SILENT_HEARTBEAT = 5
PROGRESS_USAGE = {"provider": "openai", "model": "gpt-4o", "prompt_tokens": 100, "completion_tokens": 20}
FINAL_USAGE = {"provider": "anthropic", "model": "claude", "prompt_tokens": 50, "completion_tokens": 10}
PROGRESS = {"state": {"step": 1}, "logs": ["reading the sources"], "usage": [PROGRESS_USAGE]}


def _final(envelope: dict[str, object]) -> dict[str, object]:
    """The agent's final report on the run it was sent (its outputs name the attempt, as tally's do)."""
    outputs = {"answer": 42, "attempt": envelope["attempt"]}
    return {"outputs": outputs, "usage": [FINAL_USAGE], "metadata": {"pages": 3}}


def _async_runnable(stack: Stack, heartbeat: int, **fields: object) -> None:
    """The flow's runnable: an http one in async mode whose agent is the harness's agent receiver."""
    config = {"url": stack.agent.url, "mode": "async", "heartbeat_seconds": heartbeat}
    spec = RunnableFields(name="agent", kind="http", config=config, **fields)
    with acting_as(None):
        stack.runnable_id = create_runnable(stack.account_id, spec).id


def _sent_to_a_reporting_agent(stack: Stack) -> None:
    """A run of an async runnable accepted over the API; the agent it is sent to reports progress (state,
    a log line, usage) and then its end (outputs, more usage, metadata), at once.

    What "nothing runs twice" means here: the agent is sent the run exactly once. The crash rule allows
    one more execution for each worker lost after the body ran, because such a worker leaves a run that
    nobody else would finish. Not so for an async run: a worker lost once the envelope went out had either
    handed the run to the agent already (the agent holds its lease) or still holds the lease itself (30 s),
    and reports are recorded whoever holds the run, so the scripted agent, reporting at once, ends the run
    well within that lease. A second envelope is then the run executed twice (Expect retried_when_lost=
    False). An agent slower than a lost worker's lease would be sent the run again, legitimately (attempt
    2, a new token, the old one refused: the agent drops that run): not this flow."""
    _async_runnable(stack, AGENT_HEARTBEAT)
    stack.actors.append(ScriptedAgent(stack, lambda envelope: [PROGRESS, _final(envelope)]))
    _accepted(stack)


def _agent_ended_it(stack: Stack) -> list[str]:
    """What the agent reported is the run's, each report counted once: the outputs of the attempt that
    ended it, its state, the usage of each progress report answered 200 once and of the final report once, its log
    line once per progress report answered 200, its metadata; and no report was refused or answered 5xx
    unless the scenario's fault hit that very request (agent.ScriptedAgent)."""
    agent = agent_of(stack)
    problems = list(agent.problems)
    run = stack.only_run()
    if run is None or not agent.jobs:
        return [*problems, "no run, or its agent was never sent it"]
    progressed = len(agent.reported(0))
    with acting_as(None):
        state = stack.api.get(f"/v1/run/{run['id']}").json()
        lines = stack.api.get(f"/v1/run/{run['id']}/logs").json()["lines"]
    ending = [job for job in agent.jobs if job.envelope["attempt"] == run.get("attempt")]
    wanted = _final(ending[-1].envelope)["outputs"] if ending else None
    if (state.get("result") or {}).get("outputs") != wanted:
        problems.append(f"outputs {(state.get('result') or {}).get('outputs')}, the agent reported {wanted}")
    if state.get("state") != PROGRESS["state"]:
        problems.append(f"the run's state is {state.get('state')}, the agent reported {PROGRESS['state']}")
    if ((state.get("result") or {}).get("metadata") or {}).get("pages") != 3:
        problems.append(f"metadata {(state.get('result') or {}).get('metadata')} lacks the agent's")
    document = stack.outcome_document(run)
    usage = json.loads(document).get("usage", []) if document else []
    tokens = {entry["model"]: entry.get("prompt_tokens", 0) for entry in usage}
    expected = {
        "gpt-4o": progressed * PROGRESS_USAGE["prompt_tokens"],
        "claude": FINAL_USAGE["prompt_tokens"],
    }
    if {model: count for model, count in tokens.items() if count} != {m: n for m, n in expected.items() if n}:
        problems.append(
            f"the outcome's usage is {tokens} prompt tokens, the agent reported {expected}"
            f" ({progressed} progress report(s) answered 200)"
        )
    logged = [line["message"] for line in lines]
    if logged != PROGRESS["logs"] * progressed:
        problems.append(f"the run's log is {logged}, the agent sent it {progressed} time(s)")
    return problems


def _handed_to_a_silent_agent(stack: Stack) -> None:
    """A run of an async runnable that is not sent again, handed to an agent that never reports."""
    _async_runnable(stack, SILENT_HEARTBEAT, retry_on_worker_lost=False)
    _accepted(stack)
    stack.deliver_visible("worker")
    run = stack.only_run() or {}
    if not str(run.get("lease_owner", "")).startswith("agent:"):
        stack.errors.append(
            f"the run was not handed to its agent: {run.get('status')} {run.get('lease_owner')}"
        )


def _given_up(stack: Stack) -> list[str]:
    run = stack.only_run()
    document = stack.outcome_document(run) if run else None
    message = ((json.loads(document) if document else {}).get("error") or {}).get("message", "")
    if f"heartbeat_seconds={SILENT_HEARTBEAT}" not in message:
        return [f"the error does not say the agent was silent: {message!r}"]
    return []


# --- resources ---

REFERENCED = b"a resource the run names by id\n"
INLINE = b"a resource created with the run\n"
CREATED = b"a resource created on its own\n"
UPLOADED = b"a resource uploaded to S3\n"
RESOURCE_EXPIRY = expiry_tagging("resource")  # the tag whose lifecycle rule removes a leftover's bytes


def _data_uri(data: bytes) -> str:
    return f"data:text/plain;base64,{base64.b64encode(data).decode()}"


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _resource_body(name: str, data: bytes) -> dict[str, object]:
    return {"name": name, "directory_path": "in", "content": _data_uri(data)}


def _made_by_hand(stack: Stack, method: str, path: str, body: dict[str, object]) -> dict[str, Any]:
    """A request of the prelude (not recorded, never faulted); its answer, 201 or noted as an error."""
    with acting_as(None):
        reply = stack.api.call(method, path, body)
    if reply.status != 201:
        stack.errors.append(f"the prelude's {method} {path} was answered {reply.status}: {reply.text}")
        return {}
    return reply.json()


def _resource_records(stack: Stack) -> list[dict[str, Any]]:
    """The resources table's items, each its record as stored (the item's `doc`)."""
    return [json.loads(item["doc"]) for item in stack.scan(defs.RESOURCES)]


def _named(stack: Stack, name: str) -> dict[str, Any]:
    return next((r for r in _resource_records(stack) if r["name"] == name), {})


def _objects(stack: Stack) -> dict[str, bytes]:
    """The bytes of every object under the account's resources prefix, by key."""
    client, bucket = stack.svc.blobs.client, stack.svc.blobs.bucket
    with acting_as(None):
        listed = client.list_objects_v2(Bucket=bucket, Prefix=f"{stack.account_id}/resources/")
        keys = [item["Key"] for item in listed.get("Contents", [])]
        return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}


def _expiring(stack: Stack, key: str) -> bool:
    """Whether the object carries the tag its lifecycle rule deletes it by."""
    client, bucket = stack.svc.blobs.client, stack.svc.blobs.bucket
    with acting_as(None):
        tags = client.get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    return "&".join(f"{t['Key']}={t['Value']}" for t in tags) == RESOURCE_EXPIRY


def _listed_ids(stack: Stack) -> set[str]:
    """The ids `GET /v1/resources` lists, every page."""
    ids: set[str] = set()
    cursor = ""
    with acting_as(None):
        while True:
            page = stack.api.get(f"/v1/resources?limit=100{cursor}").json()
            ids |= {item["id"] for item in page["items"]}
            if not page.get("next_cursor"):
                return ids
            cursor = f"&cursor={page['next_cursor']}"


def _resource_usage(stack: Stack) -> tuple[int, int]:
    with acting_as(None):
        usage = stack.api.get("/v1/account/usage").json()
    return usage.get("resources_created", 0), usage.get("resource_bytes_created", 0)


def _stored_resources(stack: Stack) -> list[str]:
    """Every resource the listing shows is a record whose object holds its bytes (size and sha256), every
    record is listed, and an object no record names is a known leftover: bytes written by a creation
    whose record never was (its PutObject applied, then the request failed or died before the PutItem, or
    a refused run's discard failed part-way). It must carry the expiry tag (the bucket's lifecycle rule
    removes it)."""
    problems = []
    records, objects = _resource_records(stack), _objects(stack)
    listed = _listed_ids(stack)
    if listed != {r["id"] for r in records}:
        problems.append(
            f"the listing shows {sorted(listed)}, the table holds {sorted(r['id'] for r in records)}"
        )
    for record in records:
        data = objects.get(record["key"])
        if data is None:
            problems.append(f"resource {record['id']} ({record['name']}) has no object {record['key']}")
        elif record.get("sha256") and (_digest(data), len(data)) != (record["sha256"], record.get("size")):
            problems.append(f"resource {record['id']}'s object is not the bytes its record describes")
    for key in set(objects) - {r["key"] for r in records}:
        if not _expiring(stack, key):
            problems.append(f"the object {key} belongs to no resource and is not tagged to expire")
    return problems


def _counted_at_most_once(stack: Stack, records: list[dict[str, Any]]) -> list[str]:
    """The day's usage counts each resource at most once (a failure between storing and counting may lose
    a count, by design: never a resource)."""
    created, size = _resource_usage(stack)
    most = (len(records), sum(r.get("size") or 0 for r in records))
    if created > most[0] or size > most[1]:
        return [f"usage counts {created} resources of {size} bytes; {most[0]} exist, of {most[1]} bytes"]
    return []


def _resource_runnable(stack: Stack) -> None:
    """The flow's runnable: `tally_resources`, `tally` that also reads each resource's bytes."""
    spec = RunnableFields(name="tally_resources", kind="python", config={"function": "tally_resources"})
    with acting_as(None):
        stack.runnable_id = create_runnable(stack.account_id, spec).id


def _with_a_resource(stack: Stack) -> None:
    """The resource-reading runnable, and a resource of the account for the run to name."""
    _resource_runnable(stack)
    _made_by_hand(stack, "POST", "/v1/resources", _resource_body("referenced.txt", REFERENCED))


def _run_with_resources(stack: Stack) -> None:
    """A run naming the prelude's resource by id and creating one inline, asked for as a client does."""
    entries = [
        {"name": "referenced", "resource": {"id": _named(stack, "referenced.txt").get("id")}},
        {"name": "inline", "resource": _resource_body("inline.txt", INLINE)},
    ]
    stack.start_run(inputs=stack.run_inputs(), resources=entries)


def _read_its_resources(stack: Stack) -> list[str]:
    """The run read both resources' bytes; the resources are exactly the referenced one and the run's
    inline one (its id derived from the run: a retried request makes it once; a refused attempt's are
    deleted), each with its bytes; the inline one counted at most once."""
    run = stack.only_run()
    if run is None:
        return ["no run to check the resources of"]
    problems = []
    document = stack.outcome_document(run)
    read = ((json.loads(document) if document else {}).get("outputs") or {}).get("sha256")
    if read != {"referenced": _digest(REFERENCED), "inline": _digest(INLINE)}:
        problems.append(f"the run read {read}")
    records = _resource_records(stack)
    expected = {_named(stack, "referenced.txt").get("id"), run_resource_id(run["id"], "inline")}
    if sorted(r["id"] for r in records) != sorted(expected):
        problems.append(
            f"resources {sorted((r['id'], r['name']) for r in records)}, expected {sorted(expected)}"
        )
    return problems + _stored_resources(stack) + _counted_at_most_once(stack, records)


def _with_a_resource_and_no_credits(stack: Stack) -> None:
    """`_with_a_resource`, the account's run budget spent: a run is refused after its resources are made."""
    _with_a_resource(stack)
    with acting_as(None):
        stack.svc.accounts.set_credits(stack.account_id, None, 0)


def _with_a_budget(stack: Stack) -> None:
    """The account has a run budget: each run is counted in the transaction that stores it."""
    with acting_as(None):
        stack.svc.accounts.set_credits(stack.account_id, None, 1000)


def _refused_run_with_resources(stack: Stack) -> None:
    """`_run_with_resources`' request with an Idempotency-Key, tried again until answered below 500 (a
    client takes 402 for an answer)."""
    path = f"/v1/runnable/{stack.runnable_id}/runs"
    entries = [
        {"name": "referenced", "resource": {"id": _named(stack, "referenced.txt").get("id")}},
        {"name": "inline", "resource": _resource_body("inline.txt", INLINE)},
    ]
    body = {"inputs": stack.run_inputs(), "resources": entries}
    headers = {"Idempotency-Key": "fault-refused"}
    for _ in range(4):
        answer = stack.request("POST", path, body, headers)
        if answer.status is not None and answer.status < 500:
            return


def _discarded(stack: Stack) -> list[str]:
    """Refused (402, insufficient_credits): what the run made is deleted, the referenced resource is the
    only one left, and nothing was counted for the refused run."""
    problems = []
    last = stack.answers[-1] if stack.answers else None
    if last is None or last.status != 402:
        problems.append(f"the run was answered {last and last.status}, expected 402")
    records = _resource_records(stack)
    if [r["name"] for r in records] != ["referenced.txt"]:
        problems.append(
            f"resources {sorted((r['id'], r['name']) for r in records)}, expected the referenced one"
        )
    created, _ = _resource_usage(stack)
    if created > 1:
        problems.append(f"usage counts {created} resources: the refused run's were counted")
    return problems + _stored_resources(stack)


def _create_resource(stack: Stack) -> None:
    """`POST /v1/resources` from content, tried again as a client does until answered 2xx."""
    for _ in range(4):
        answer = stack.request("POST", "/v1/resources", _resource_body("created.txt", CREATED))
        if answer.status is not None and answer.status < 300:
            return


def _created_and_readable(stack: Stack) -> list[str]:
    """A retry after a lost answer makes a second resource (documented: no Idempotency-Key): so each
    resource a 2xx answered is readable with its bytes, no attempt made more than one, and every resource
    there is whole (`_stored_resources`), counted at most once."""
    problems = []
    answered = [a.body["id"] for a in stack.answers if a.status == 201 and isinstance(a.body, dict)]
    if not answered:
        problems.append(f"no 201 in {[a.status for a in stack.answers]}")
    records = _resource_records(stack)
    if len(records) > len(stack.answers):
        problems.append(f"{len(records)} resources from {len(stack.answers)} requests")
    for resource_id in answered:
        with acting_as(None):
            got = stack.api.get(f"/v1/resources/{resource_id}")
        body = got.json() if got.status == 200 else {}
        if got.status != 200 or body.get("status") != "ready" or body.get("sha256") != _digest(CREATED):
            problems.append(f"the answered resource {resource_id}: GET {got.status} {body}")
        elif _objects(stack).get(resource_key(stack.account_id, resource_id)) != CREATED:
            problems.append(f"the answered resource {resource_id} does not hold the bytes sent")
    return problems + _stored_resources(stack) + _counted_at_most_once(stack, records)


def _uploaded(stack: Stack) -> None:
    """An upload started and its bytes posted to S3 with the form: a pending resource, its object staged."""
    created = _made_by_hand(
        stack,
        "POST",
        "/v1/resources/uploads",
        {"name": "uploaded.txt", "directory_path": "in", "content_type": "text/plain"},
    )
    if not created:
        return
    form = created["upload"]
    with acting_as(None):
        posted = requests.post(form["url"], data=form["fields"], files={"file": UPLOADED}, timeout=10)
    if posted.status_code >= 300:
        stack.errors.append(f"the upload's S3 POST was answered {posted.status_code}")
        return
    # S3 tags the object with the form's `tagging` field (the policy requires it); moto ignores the field
    pairs = re.findall(r"<Key>([^<]*)</Key><Value>([^<]*)</Value>", form["fields"].get("tagging", ""))
    tags = [{"Key": key, "Value": value} for key, value in pairs]
    client, bucket = stack.svc.blobs.client, stack.svc.blobs.bucket
    with acting_as(None):
        client.put_object_tagging(Bucket=bucket, Key=form["fields"]["key"], Tagging={"TagSet": tags})


def _read_until_ready(stack: Stack) -> None:
    """`GET /v1/resources/{id}` of the upload, tried again as a client does until it answers ready."""
    resource_id = _named(stack, "uploaded.txt").get("id")
    for _ in range(4):
        answer = stack.request("GET", f"/v1/resources/{resource_id}")
        if answer.status == 200 and isinstance(answer.body, dict) and answer.body.get("status") == "ready":
            return


def _finished_once(stack: Stack) -> list[str]:
    """Answered ready at last, of the uploaded size; its bytes at the resource's key; the staged object
    gone, or tagged to expire (the form tags it); counted at most once."""
    problems = []
    record = _named(stack, "uploaded.txt")
    last = stack.answers[-1] if stack.answers else None
    ready = last is not None and last.status == 200 and isinstance(last.body, dict)
    if not ready or last.body.get("status") != "ready" or last.body.get("size") != len(UPLOADED):
        problems.append(f"the last GET answered {last and last.status} {last and last.body}")
    if (record.get("status"), record.get("size")) != ("ready", len(UPLOADED)):
        problems.append(f"the record is {record.get('status')} of {record.get('size')} bytes")
    objects = _objects(stack)
    if record and objects.get(record["key"]) != UPLOADED:
        problems.append("the resource's key does not hold the uploaded bytes")
    staged = f"{record['key']}.upload" if record else None
    if staged in objects and not _expiring(stack, staged):
        problems.append(f"the staged object {staged} is left and not tagged to expire")
    return problems + _stored_resources(stack) + _counted_at_most_once(stack, [record] if record else [])


FLOWS = (
    Flow(
        "api_run",
        frozenset({"api", "worker", "callbacks", "sweeper"}),
        Expect(accepted=True),
        start=lambda stack: stack.start_run(inputs=stack.run_inputs(seconds=0.15)),
    ),
    Flow(
        "api_run_progress",  # the worker's progress writes: the run item's, then the events'
        frozenset({"worker"}),
        Expect(accepted=True),
        start=lambda stack: stack.start_run(inputs=stack.run_inputs(seconds=0.15, report=True)),
    ),
    Flow(
        "api_run_budgeted",  # stored and counted in one transaction (without a budget: one PutItem)
        frozenset({"api"}),
        Expect(accepted=True),
        start=lambda stack: stack.start_run(inputs=stack.run_inputs()),
        prepare=_with_a_budget,
    ),
    Flow("intake_run", frozenset({"intake"}), Expect(), start=lambda stack: stack.send_intake()),
    Flow(
        "api_cancel_waiting",
        frozenset({"api", "worker"}),
        Expect(status="cancelled", code="cancelled", executions=0, accepted=True),
        start=_asked("cancel"),
        prepare=_accepted,
    ),
    Flow(
        "sweeper_redispatch",
        frozenset({"sweeper"}),
        Expect(accepted=True),
        start=lambda stack: None,
        prepare=_worker_lost(_at_payload_read),
    ),
    Flow(
        "sweeper_worker_lost",
        frozenset({"sweeper"}),
        Expect(status="failed", code="worker_lost", executions=0, accepted=True),
        start=lambda stack: None,
        prepare=_worker_lost(_at_payload_read),
        settings={"RUNPLANE_MAX_ATTEMPTS": "1"},
    ),
    Flow(
        "sweeper_settle",
        frozenset({"sweeper"}),
        Expect(accepted=True),
        start=lambda stack: None,
        prepare=_worker_lost(_at_end, callbacks_down=True),
    ),
    Flow(
        "dead_letter",
        frozenset({"dead_letters"}),
        Expect(status="failed", code="dispatch_failed", executions=0, accepted=True),
        start=lambda stack: None,
        prepare=_dead_lettered,
    ),
    Flow(
        "api_redeliver",
        frozenset({"api"}),
        Expect(),
        start=_asked("callbacks/redeliver"),
        prepare=_retry_pending,
        settings={"RUNPLANE_CALLBACK_SCHEDULE": str(RETRY_SECONDS)},
        check=_attempted_at_once,
    ),
    Flow(
        # the worker's requests and the report endpoint's: sent to the agent once (see its prepare)
        "api_run_async",
        frozenset({"worker", "api"}),
        Expect(accepted=True, retried_when_lost=False),
        start=lambda stack: None,
        prepare=_sent_to_a_reporting_agent,
        settings=AGENT_SETTINGS,
        check=_agent_ended_it,
        renews=True,
    ),
    Flow(
        "sweeper_agent_silent",
        frozenset({"sweeper"}),
        Expect(status="failed", code="heartbeat_timeout", retried_when_lost=False, accepted=True),
        start=lambda stack: None,
        prepare=_handed_to_a_silent_agent,
        settings=AGENT_SETTINGS,
        check=_given_up,
    ),
    Flow(
        # a run naming a resource by id and creating one inline, whose python code reads both (the
        # worker's forked child's S3 reads are points too)
        "api_run_resources",
        frozenset({"api", "worker", "callbacks", "sweeper"}),
        Expect(accepted=True),
        start=_run_with_resources,
        prepare=_with_a_resource,
        check=_read_its_resources,
    ),
    Flow(
        # the same run refused by its budget once its inline resource is made: create_run discards it
        "api_run_resources_refused",
        frozenset({"api"}),
        Expect(runs=0, executions=0),
        start=_refused_run_with_resources,
        prepare=_with_a_resource_and_no_credits,
        check=_discarded,
    ),
    Flow(
        "api_create_resource",
        frozenset({"api"}),
        Expect(runs=0, executions=0),
        start=_create_resource,
        check=_created_and_readable,
    ),
    Flow(
        "api_finish_upload",
        frozenset({"api"}),
        Expect(runs=0, executions=0),
        start=_read_until_ready,
        prepare=_uploaded,
        check=_finished_once,
    ),
)
FLOW = {flow.name: flow for flow in FLOWS}

# Scenarios that show a defect not fixed yet (scenario id -> what goes wrong): they run, expected to fail
# (strict: once the defect is fixed they pass, and their entry must go).
KNOWN_DEFECTS: dict[str, str] = {}

_READ_FAILS_THE_RUN = (
    "a resource read in the python runnable's process (ResourceFile.read_bytes -> Blobs.stream) that fails "
    "transiently (throttled past the SDK's retries, a connect or read timeout) raises the botocore error into "
    "the code: the run ends failed runnable_exception, final, as if the code were wrong; nothing retries the "
    "read or the run"
)
for _nth in (1, 2):
    for _mode in ("throttled", "timeout", "applied_then_error"):
        KNOWN_DEFECTS[f"api_run_resources-worker:s3.GetObject@_body>Blobs.stream#{_nth}-{_mode}"] = (
            _READ_FAILS_THE_RUN
        )


def run(
    flow: Flow, tmp: Path, point: Point | None = None, mode: str | None = None
) -> tuple[Report, list[Point]]:
    """One scenario: `mode` at `point` (None: the clean run). The report and the points recorded."""
    started = time.monotonic()
    with Stack(tmp, flow.settings) as stack:
        flow.prepare(stack)
        stack.injector.begin(flow.components)
        fault = Fault(mode, point) if point is not None and mode is not None else None
        if fault:
            stack.injector.faults.append(fault)
        flow.start(stack)
        stack.drive()
        stack.injector.merge_forked()
        violations = stack.violations(flow.expect) + flow.check(stack)
        fired = fault is not None and fault.times == 0
        if fault is not None and not fired:
            violations.append(f"the fault never fired: the flow made no request {point.id}")
        report = Report(flow.name, point and point.id, mode, fired, violations, time.monotonic() - started)
        return report, list(dict.fromkeys(stack.injector.points))


@cache
def points(name: str) -> tuple[Point, ...]:
    """The injection points of a flow, from a clean run (recorded once per process). How often a lease
    is renewed depends on how long the body takes: only the first renewal is a point, in a flow that
    always renews."""
    with TemporaryDirectory() as tmp:
        _, recorded = run(FLOW[name], Path(tmp))
    renewal = 1 if FLOW[name].renews else 0
    return tuple(point for point in recorded if "renew" not in point.site or point.nth <= renewal)


def all_points() -> dict[str, list[list[object]]]:
    """Every flow's points as plain data: what pytest-xdist's controller hands its workers, so that each
    collects the same scenarios (the order of a clean run's requests can differ between two runs: the
    sweeper reads in parallel)."""
    return {flow.name: [list(astuple(point)) for point in points(flow.name)] for flow in FLOWS}
