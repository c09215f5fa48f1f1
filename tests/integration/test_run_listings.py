"""Run listings return the runs a model of them says, in its order, whichever index serves them.

One population per module (a module fixture: one xdist worker holds it), built through the real api and
worker handlers on a frozen clock moved to chosen instants: runnables echo (A), fail (B), sleep (C), a rare
one (R: one run among many) and a parent (P) whose run started four children (runs of A, created at one
instant); runs waiting, running (claimed by a worker that then vanished), completed, failed, cancelled and
timed out; instants tied (their ids order them), whole seconds (an isoformat without a fraction) beside
fractional ones; and another account, filed in the same shard of the `live` index, whose id starts with
this one's. Every listing is walked to its end through its cursors and compared with the model: the
account's runs filtered in Python, newest first by (created_at, id), as created_key orders them.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode

import boto3
import pytest
import time_machine
from moto import mock_aws
from runplane.adapters import run_reads
from runplane.adapters.dynamo import due_shard
from runplane.domain.models import RunnableFields, RunQuery
from runplane.domain.states import Status
from runplane.local.provision import provision
from runplane.logic import keys, runs, services
from runplane.logic.runnables import create_runnable

from tests.conftest import TEST_PRICES, Api, drain, pollers

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)
ACCOUNT = "acme"
UNKNOWN = "01a20000-0000-7000-8000-000000000000"  # a well-formed id no run or runnable has
STATUSES = tuple(Status)
PAGE_SIZES = (1, 2, 3, 7, 100)
ROE_CODES = {Status.waiting: 0, Status.running: 1, Status.completed: 3, Status.failed: 4}
ROE_CODES |= {Status.timeout: 4, Status.cancelled: 5}

# (seconds after T0, runnable, status): the account's runs, created in this order
SCRIPT: tuple[tuple[float, str, Status], ...] = (
    (0.0, "A", Status.completed),
    (0.0, "B", Status.failed),
    (0.0, "A", Status.waiting),  # three at one instant: their ids order them
    (0.5, "C", Status.completed),
    (1.0, "A", Status.completed),  # a whole second (no fraction in its isoformat) after a fractional one
    (1.0, "A", Status.running),
    (1.25, "B", Status.waiting),
    (1.999999, "A", Status.cancelled),
    (2.0, "C", Status.timeout),
    (3.0, "B", Status.failed),
    (3.0, "A", Status.completed),
    (3.5, "A", Status.waiting),
    (4.0, "B", Status.cancelled),
    (4.0, "C", Status.running),
    (5.0, "R", Status.completed),  # the rare runnable's only run
    (6.0, "P", Status.completed),  # the parent: its children are created when it runs, at 6.5
    (6.5, "A", Status.completed),  # a run of A beside the children, at their instant
    (7.0, "B", Status.running),
    (8.0, "A", Status.completed),
    (8.0, "C", Status.waiting),
    (9.000001, "A", Status.completed),
    (10.0, "B", Status.waiting),
)
CHILDREN = (Status.completed, Status.waiting, Status.running, Status.cancelled)
CHILDREN_AT = 6.5
# the other account's runs (live ones too: its entries share this account's shard of the `live` index)
OTHER_SCRIPT = ((0.0, Status.waiting), (3.0, Status.running), (6.5, Status.completed), (12.0, Status.waiting))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def stamp(instant: datetime, zone: timedelta = timedelta(0)) -> str:
    """RFC 3339, in the zone `zone` (Z for UTC)."""
    return instant.astimezone(timezone(zone)).isoformat().replace("+00:00", "Z")


# created_after / created_before: (label, after, before); the model keeps after <= created_at < before
RANGES: tuple[tuple[str, datetime | None, datetime | None], ...] = (
    ("any time", None, None),
    ("from 3.0", at(3.0), None),  # inclusive: the two runs at 3.0 are in
    ("before 4.0", None, at(4.0)),  # exclusive: the two runs at 4.0 are out
    ("1.0 to 6.5", at(1.0), at(6.5)),  # the children (at 6.5) out
    ("1.999999 to 9.000001", at(1.999999), at(9.000001)),
    ("empty gap 8.1 to 8.2", at(8.1), at(8.2)),
    ("empty: after == before", at(3.0), at(3.0)),
    ("empty: after > before", at(5.0), at(2.0)),
)


@dataclass(frozen=True)
class Run:
    id: str
    runnable: str  # its label
    status: Status
    created_at: datetime
    parent_run_id: str | None


@dataclass
class World:
    api: Api
    other_api: Api
    account_id: str
    runnables: dict[str, str]  # label -> id
    runs: list[Run]
    parent_id: str
    childless_id: str  # a run of A without children

    def model(
        self,
        statuses: frozenset[Status] = frozenset(),
        runnable: str | None = None,
        parent: str | None = None,
        after: datetime | None = None,
        before: datetime | None = None,
    ) -> list[str]:
        runnable_id = self.runnables.get(runnable or "", runnable)
        kept = [
            run
            for run in self.runs
            if (not statuses or run.status in statuses)
            and (runnable is None or self.runnables[run.runnable] == runnable_id)
            and (parent is None or run.parent_run_id == parent)
            and (after is None or run.created_at >= after)
            and (before is None or run.created_at < before)
        ]
        return [run.id for run in sorted(kept, key=lambda run: (run.created_at, run.id), reverse=True)]


# --- building the population -------------------------------------------------------------------------


ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "RUNPLANE_RUNNABLE_PACKAGES": "tests.fixtures.runnables",
    "RUNPLANE_RATE_LIMIT_BURST": "0",
    "RUNPLANE_MODEL_PRICES": json.dumps(TEST_PRICES),
}


class Builder:
    def __init__(self, clock: Any, api: Api, account_id: str):
        self.clock, self.api, self.account_id = clock, api, account_id

    def start(self, seconds: float, runnable_id: str, body: dict[str, Any]) -> str:
        self.clock.move_to(at(seconds))
        reply = self.api.post(f"/v1/runnable/{runnable_id}/runs", body)
        assert reply.status == 202, reply.text
        return reply.json()["id"]

    def leave(self, run_id: str, status: Status) -> None:
        """`run_id`, whose dispatch message is the only one queued, left waiting, running (its worker
        claimed it and vanished) or cancelled."""
        drop_dispatches()
        if status is Status.running:
            record = services.services().runs.get(self.account_id, run_id, consistent=True)
            assert record is not None
            now = self.clock_now()
            assert services.services().runs.claim(record, "vanished", now, now + 3600, 3) is not None
        elif status is Status.cancelled:
            reply = self.api.post(f"/v1/run/{run_id}/cancel")
            assert reply.status == 200, reply.text

    def clock_now(self) -> float:
        return datetime.now(UTC).timestamp()

    def run(self, seconds: float, runnable_id: str, status: Status, body: dict[str, Any]) -> str:
        run_id = self.start(seconds, runnable_id, body)
        if status in (Status.completed, Status.failed, Status.timeout):
            drain("worker")
        else:
            self.leave(run_id, status)
        return run_id


def drop_dispatches() -> None:
    """Delete every dispatch message (a message lost: its run stays as it is)."""
    sqs, url = services.services().queues.client, services.services().settings.dispatch_queue_url
    while messages := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages"):
        for message in messages:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


def body_for(label: str, status: Status, runnables: dict[str, str]) -> dict[str, Any]:
    if label == "C" and status is Status.timeout:
        return {"inputs": {"seconds": 5}, "timeout_seconds": 1}
    if label == "C":
        return {"inputs": {"seconds": 0}}
    if label == "B":
        return {"inputs": {"message": "bad day"}}
    if label == "P":
        items = [{"n": n} for n in range(len(CHILDREN))]
        return {"inputs": {"child": runnables["A"], "items": items, "wait": False}}
    return {"inputs": {}}


def same_shard_account(account_id: str) -> str:
    """An account whose id starts with `account_id` and whose runs share its `live` shard."""
    return next(name for n in range(1000) if due_shard(name := f"{account_id}-{n}") == due_shard(account_id))


def build(clock: Any) -> World:
    key = keys.create_key(ACCOUNT, scopes=["admin"])
    api, account_id = Api(key.token), key.account_id
    functions = {"A": "echo", "B": "fail", "C": "sleep", "R": "echo", "P": "parent"}
    runnables = {
        label: create_runnable(
            account_id,
            RunnableFields(name=f"{label}-{function}", kind="python", config={"function": function}),
        ).id
        for label, function in functions.items()
    }
    builder = Builder(clock, api, account_id)
    made: list[tuple[str, str, Status]] = []  # (id, label, intended status)
    parent_id = childless_id = ""
    for seconds, label, status in SCRIPT:
        body = body_for(label, status, runnables)
        if label != "P":
            run_id = builder.run(seconds, runnables[label], status, body)
            made.append((run_id, label, status))
            childless_id = childless_id or (run_id if label == "A" and status is Status.completed else "")
            continue
        parent_id = builder.start(seconds, runnables[label], body)
        clock.move_to(at(CHILDREN_AT))
        assert pollers()["worker"].poll_once() == 1  # the parent runs: it starts its children, at 6.5
        drop_dispatches()
        made.append((parent_id, label, status))
        listed = api.get(f"/v1/runs?parent_run_id={parent_id}").json()["items"]
        assert len(listed) == len(CHILDREN)
        for child, child_status in zip(sorted(r["id"] for r in listed), CHILDREN, strict=True):
            if child_status is Status.completed:
                services.services().queues.dispatch(account_id, child)
                drain("worker")
            else:
                builder.leave(child, child_status)
            made.append((child, "A", child_status))
    other_key = keys.create_key(same_shard_account(ACCOUNT), scopes=["admin"])
    other_api = Api(other_key.token)
    echo = create_runnable(
        other_key.account_id, RunnableFields(name="echo", kind="python", config={"function": "echo"})
    ).id
    other = Builder(clock, other_api, other_key.account_id)
    for seconds, status in OTHER_SCRIPT:
        other.run(seconds, echo, status, {"inputs": {}})
    found = services.services().runs.get_many(account_id, [run_id for run_id, _, _ in made], consistent=True)
    by_id = {record.id: record for record in found}
    population = []
    for run_id, label, status in made:
        record = by_id[run_id]
        assert (record.status, record.runnable_id) == (status, runnables[label]), record
        population.append(Run(run_id, label, status, record.created_at, record.parent_run_id))
    return World(api, other_api, account_id, runnables, population, parent_id, childless_id)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    """The population, in moto, for the module's tests (built once: about 5 s)."""
    from runplane.adapters import aws

    with pytest.MonkeyPatch.context() as patch, mock_aws():
        for name, value in ENVIRONMENT.items():
            patch.setenv(name, value)
        patch.delenv("AWS_ENDPOINT_URL", raising=False)
        aws.session.cache_clear()
        aws._client.cache_clear()
        for name, value in provision(boto3.session.Session(), "test").items():
            patch.setenv(name, value)
        services.reset()
        keys._cache = keys._PrincipalCache()
        with time_machine.travel(T0, tick=False) as clock:
            built = build(clock)
        keys._cache = keys._PrincipalCache()  # cached on the frozen clock
        yield built
        aws.session.cache_clear()
        aws._client.cache_clear()
    services.reset()


# --- walking listings ---------------------------------------------------------------------------------


@dataclass
class Walk:
    ids: list[str]
    pages: list[int]  # each page's length
    short_with_cursor: int  # pages shorter than the limit that still had a next cursor


def walk(fetch: Any, limit: int, max_pages: int = 1000) -> Walk:
    """Every page of a listing, following its cursor; no page longer than `limit`."""
    ids: list[str] = []
    pages: list[int] = []
    short, cursor = 0, None
    for _ in range(max_pages):
        items, cursor = fetch(limit, cursor)
        assert len(items) <= limit, (limit, items)
        ids += items
        pages.append(len(items))
        if cursor is None:
            return Walk(ids, pages, short)
        short += len(items) < limit
    raise AssertionError(f"the listing did not end in {max_pages} pages")


def api_listing(world: World, params: dict[str, str]) -> Any:
    def fetch(limit: int, cursor: str | None) -> tuple[list[str], str | None]:
        query = {**params, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        reply = world.api.get("/v1/runs?" + urlencode(query))
        assert reply.status == 200, (query, reply.text)
        page = reply.json()
        return [item["id"] for item in page["items"]], page["next_cursor"]

    return fetch


def logic_listing(world: World, query: RunQuery) -> Any:
    def fetch(limit: int, cursor: str | None) -> tuple[list[str], str | None]:
        page = runs.list_runs(world.account_id, query, limit, cursor)
        return [state.id for state in page.items], page.next_cursor

    return fetch


def api_params(
    world: World,
    status: Status | None,
    runnable: str | None,
    parent: str | None,
    after: datetime | None,
    before: datetime | None,
) -> dict[str, str]:
    params = {}
    if status is not None:
        params["status"] = status.value
    if runnable is not None:
        params["runnable_id"] = world.runnables.get(runnable, runnable)
    if parent is not None:
        params["parent_run_id"] = parent
    if after is not None:
        params["created_after"] = stamp(after, timedelta(hours=2))  # another zone: the same instant
    if before is not None:
        params["created_before"] = stamp(before)
    return params


def label(value: Any) -> str:
    return "any" if value is None else "unknown" if value == UNKNOWN else str(value)


def singles(status: Status | None) -> frozenset[Status]:
    return frozenset({status} if status else ())


# --- the tests ----------------------------------------------------------------------------------------


def test_the_population_is_as_scripted(world: World) -> None:
    assert len(world.runs) == len(SCRIPT) + len(CHILDREN)
    assert {run.status for run in world.runs} == set(Status)
    children = [run for run in world.runs if run.parent_run_id == world.parent_id]
    assert [run.status for run in sorted(children, key=lambda run: run.id)] == list(CHILDREN)
    assert {run.created_at for run in children} == {at(CHILDREN_AT)}
    assert len({run.created_at for run in world.runs}) < len(world.runs)  # ties to break by id
    everything = walk(api_listing(world, {}), 100).ids
    assert everything == world.model()  # the other account's runs are not there


@pytest.mark.parametrize("status", [None, *STATUSES], ids=label)
def test_every_filter_combination_walks_to_the_models_runs(world: World, status: Status | None) -> None:
    """GET /v1/runs with every combination of status, runnable_id, parent_run_id and created range (each
    walked at one page size, the sizes taking turns so that every one meets every status, runnable and
    parent): the pages, concatenated, are the model's runs in its order."""
    combinations = itertools.product(
        enumerate((None, "A", "R", UNKNOWN)),
        enumerate((None, world.parent_id, world.childless_id)),
        enumerate(RANGES),
    )
    for (i, runnable), (j, parent), (k, (name, after, before)) in combinations:
        if parent == world.childless_id and runnable is not None:
            continue  # a childless parent's listing is empty whatever else is asked
        limit = PAGE_SIZES[(i + j + k) % len(PAGE_SIZES)]
        params = api_params(world, status, runnable, parent, after, before)
        expected = world.model(singles(status), runnable, parent, after, before)
        walked = walk(api_listing(world, params), limit)
        assert walked.ids == expected, (name, params, limit, walked.pages)


@pytest.mark.parametrize("limit", PAGE_SIZES)
def test_every_page_size_walks_to_the_models_runs(world: World, limit: int) -> None:
    """Each page size on every status: all runs, the rare runnable's, the parent's (the created ranges
    meet every page size in the test above)."""
    shapes = ((None, None, RANGES[0]), ("R", None, RANGES[0]), (None, world.parent_id, RANGES[0]))
    for status, (runnable, parent, (name, after, before)) in itertools.product((None, *STATUSES), shapes):
        params = api_params(world, status, runnable, parent, after, before)
        expected = world.model(singles(status), runnable, parent, after, before)
        walked = walk(api_listing(world, params), limit)
        assert walked.ids == expected, (name, params, limit, walked.pages)


LIVE = frozenset({Status.waiting, Status.running})
ENDED = frozenset(STATUSES) - LIVE
MIXED = [  # one live status and an ended one: only the runs tell (in an order every xdist worker shares)
    frozenset({live, ended})
    for live, ended in itertools.product(
        (Status.waiting, Status.running), [s for s in STATUSES if s in ENDED]
    )
]
SUBSETS = [
    LIVE,  # the `live` index, filtered on status
    *MIXED,
    frozenset({Status.completed, Status.failed}),  # ended only: the outcome tells
    frozenset({Status.cancelled, Status.timeout}),
    LIVE | {Status.completed},  # every live one and an ended one: the outcome, missing or in
    frozenset({Status.running, Status.failed, Status.timeout}),
    ENDED,
    frozenset(STATUSES) - {Status.waiting},
    frozenset(STATUSES),
]


@pytest.mark.parametrize("statuses", SUBSETS, ids=lambda chosen: "+".join(sorted(chosen)))
def test_several_statuses_at_once_walk_to_the_models_runs(world: World, statuses: frozenset[Status]) -> None:
    """Listings of several statuses (Roe AI's status codes, cancel-all), live and ended ones mixed: the
    `live` index, the account's or the parent's with the outcome filtered, and the runs read where only
    they tell waiting from running."""
    shapes = ((None, None, RANGES[0], 2), (None, None, RANGES[4], 7), (None, world.parent_id, RANGES[0], 1))
    shapes += (("R", None, RANGES[0], 1), ("A", None, RANGES[3], 3))
    for runnable, parent, (name, after, before), limit in shapes:
        query = RunQuery(
            statuses=statuses,
            runnable_id=world.runnables[runnable] if runnable else None,
            parent_run_id=parent,
            created_after=after,
            created_before=before,
        )
        expected = world.model(statuses, runnable, parent, after, before)
        walked = walk(logic_listing(world, query), limit)
        assert walked.ids == expected, (name, query, limit, walked.pages)


@pytest.mark.parametrize("queries", [1, 2])
def test_pages_that_end_early_continue_where_they_stopped(
    world: World, queries: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one (or two) Query requests a page, a sparse filter's page ends early, short (empty, even),
    with a cursor: the walk still returns exactly the model's runs, each once, in order."""
    monkeypatch.setattr(run_reads, "QUERIES_PER_PAGE", queries)
    short = 0
    limits = (1, 3) if queries == 1 else (2, 7)
    for status, runnable, limit in itertools.product(
        (None, Status.waiting, Status.failed), ("R", "B", UNKNOWN), limits
    ):
        params = api_params(world, status, runnable, None, None, None)
        expected = world.model(singles(status), runnable)
        walked = walk(api_listing(world, params), limit)
        assert walked.ids == expected, (params, limit, walked.pages)
        short += walked.short_with_cursor
    for statuses, runnable in itertools.product((LIVE | {Status.completed}, LIVE, MIXED[0]), (None, "R")):
        query = RunQuery(statuses=statuses, runnable_id=world.runnables[runnable] if runnable else None)
        for limit in limits[:2]:
            walked = walk(logic_listing(world, query), limit)
            assert walked.ids == world.model(statuses, runnable), (query, limit, walked.pages)
            short += walked.short_with_cursor
    assert short > 0  # some pages did end early


def test_the_rare_runnable_is_found_through_empty_pages(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_reads, "QUERIES_PER_PAGE", 1)
    walked = walk(api_listing(world, {"runnable_id": world.runnables["R"]}), 1)
    assert walked.ids == world.model(runnable="R")
    assert len(walked.ids) == 1
    assert walked.pages.count(0) > 10  # one index entry read a page: empty pages, with a cursor


def first_cursor(world: World, params: dict[str, str]) -> str:
    reply = world.api.get("/v1/runs?" + urlencode({**params, "limit": "1"}))
    assert reply.status == 200, reply.text
    cursor = reply.json()["next_cursor"]
    assert cursor, params
    return cursor


def listings(world: World) -> dict[str, dict[str, str]]:
    """Listings of distinct indexes, partitions and filters, each of two runs or more."""
    a, b = world.runnables["A"], world.runnables["B"]
    return {
        "all": {},
        "waiting": {"status": "waiting"},
        "running": {"status": "running"},
        "completed": {"status": "completed"},
        "failed": {"status": "failed"},
        "runnable A": {"runnable_id": a},
        "runnable B": {"runnable_id": b},
        "waiting of A": {"status": "waiting", "runnable_id": a},
        "completed of A": {"status": "completed", "runnable_id": a},
        "children": {"parent_run_id": world.parent_id},
        "children of A": {"parent_run_id": world.parent_id, "runnable_id": a},
    }


def model_of(world: World, params: dict[str, str], after: datetime | None = None) -> list[str]:
    statuses = singles(Status(params["status"]) if "status" in params else None)
    return world.model(statuses, params.get("runnable_id"), params.get("parent_run_id"), after)


def test_a_cursor_reused_with_another_filter_is_invalid_cursor(world: World) -> None:
    named = listings(world)
    cursors = {name: first_cursor(world, params) for name, params in named.items()}
    for (made_by, cursor), (name, params) in itertools.product(cursors.items(), named.items()):
        if made_by == name:
            continue
        reply = world.api.get("/v1/runs?" + urlencode({**params, "limit": "1", "cursor": cursor}))
        assert (reply.status, reply.json().get("code")) == (400, "invalid_cursor"), (
            made_by,
            name,
            reply.text,
        )


def test_a_cursor_outside_the_range_or_of_another_account_is_invalid_cursor(world: World) -> None:
    for params in listings(world).values():
        cursor = first_cursor(world, params)  # after the listing's newest run
        expected = model_of(world, params)
        created = next(run.created_at for run in world.runs if run.id == expected[0])
        outside = {**params, "created_before": stamp(created - timedelta(seconds=1)), "cursor": cursor}
        reply = world.api.get("/v1/runs?" + urlencode(outside))
        assert (reply.status, reply.json().get("code")) == (400, "invalid_cursor"), (params, reply.text)
        inside = {**params, "created_after": stamp(at(0.5)), "cursor": cursor, "limit": "100"}
        reply = world.api.get("/v1/runs?" + urlencode(inside))  # the same listing, its range narrowed
        assert reply.status == 200, reply.text
        assert [item["id"] for item in reply.json()["items"]] == model_of(world, params, at(0.5))[1:]
        reply = world.other_api.get("/v1/runs?" + urlencode({**params, "cursor": cursor}))
        assert (reply.status, reply.json().get("code")) == (400, "invalid_cursor"), (params, reply.text)


# --- Roe AI: an agent's jobs, by cursor (`next`) and by page number ------------------------------------

ROE_FILTERS: tuple[str | None, ...] = (None, "0", "1", "3", "4", "5", "0,1", "0,3", "2")


def roe_statuses(codes: str | None) -> frozenset[Status] | None:
    """What the model keeps for Roe's `status_code` (None: nothing, as for RETRY's 2)."""
    if codes is None:
        return frozenset()
    wanted = {int(code) for code in codes.split(",")}
    return frozenset(status for status, code in ROE_CODES.items() if code in wanted) or None


def roe_params(codes: str | None, after: datetime | None, before: datetime | None) -> dict[str, str]:
    params = {}
    if codes is not None:
        params["status_code"] = codes
    if after is not None:
        params["created_from"] = after.replace(tzinfo=None).isoformat()  # Roe's SDK: UTC, no zone
    if before is not None:
        params["created_to"] = before.replace(tzinfo=None).isoformat()
    return params


def roe_page(world: World, agent: str, params: dict[str, str]) -> tuple[list[str], dict[str, str] | None]:
    reply = world.api.get(f"/v1/agents/{agent}/jobs/?" + urlencode(params))
    assert reply.status == 200, (params, reply.text)
    page = reply.json()
    assert page["count"] == len(page["results"])
    following = page["next"] and dict(parse_qsl(page["next"].split("?", 1)[1]))
    return [job["id"] for job in page["results"]], following


def roe_walk(world: World, agent: str, params: dict[str, str], size: int, numbered: int) -> list[list[str]]:
    """The pages through `next`; the first `numbered` of them asked again by their number alone."""
    pages: list[list[str]] = []
    query: dict[str, str] | None = {**params, "page_size": str(size)}
    while query is not None:
        ids, query = roe_page(world, agent, query)
        assert len(ids) <= size
        pages.append(ids)
        assert len(pages) < 500
    for number, expected in enumerate(pages[:numbered], 1):
        by_number, _ = roe_page(world, agent, {**params, "page_size": str(size), "page": str(number)})
        assert by_number == expected, (params, size, number)
    return pages


@pytest.mark.parametrize("agent", ["A", "R"])
def test_roe_job_listings_walk_to_the_models_runs(world: World, agent: str) -> None:
    """An agent's jobs by Roe status codes (FAILURE is failed and timeout; 0,3 mixes a live status and an
    ended one; 2 matches nothing) and created range: through `next` the model's runs, page N by its number
    the model's N-th slice, as Roe's page-numbered clients expect."""
    for codes, ((name, after, before), size) in itertools.product(
        ROE_FILTERS, ((RANGES[0], 2), (RANGES[3], 7))
    ):
        statuses = roe_statuses(codes)
        params = roe_params(codes, after, before)
        expected = [] if statuses is None else world.model(statuses, agent, None, after, before)
        pages = roe_walk(world, world.runnables[agent], params, size, numbered=2)
        slices = [expected[i : i + size] for i in range(0, len(expected), size)] or [[]]
        assert pages in (slices, [*slices, []]), (name, params, size, pages)


@pytest.mark.parametrize("agent", ["A", "R"])
def test_roe_pages_that_end_early_are_numbered_as_next_walks_them(
    world: World, agent: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one Query a page, pages end early (short or empty, with `next`): following `next` still gives
    the model's runs, and a page number gives the page `next` reached, not the model's N-th slice."""
    monkeypatch.setattr(run_reads, "QUERIES_PER_PAGE", 1)
    for codes, size in itertools.product((None, "0,3", "3"), (1,) if agent == "R" else (3,)):
        statuses = roe_statuses(codes)
        assert statuses is not None
        pages = roe_walk(world, world.runnables[agent], roe_params(codes, None, None), size, numbered=4)
        assert list(itertools.chain(*pages)) == world.model(statuses, agent), (codes, size, pages)


def test_roe_cursor_of_another_status_filter_is_invalid_cursor(world: World) -> None:
    agent = world.runnables["A"]
    _, following = roe_page(world, agent, {"status_code": "3", "page_size": "1"})
    assert following
    asked = {"status_code": "0", "page_size": "1", "cursor": following["cursor"]}
    reply = world.api.get(f"/v1/agents/{agent}/jobs/?" + urlencode(asked))
    assert reply.status == 400, reply.text
    assert reply.json()["code"] == "invalid_cursor"
