"""What a listing of runs costs a busy account: DynamoDB requests and read units of a page, per listing.

    .venv/bin/python bench/listings.py [--runs 10000] [--json out.json]

Method. bench/recovery.py's world: moto in this process, the DynamoDB requests counted with botocore
events, read units computed from the items (bench/capacity.py) — a Query billed for every index entry it
read before its filter (read again, unhooked, to size them), per 4 KB of the response, halved (an index
read is eventually consistent); a BatchGetItem per item. Six runs go through the service for real
(completed by the worker, failed by it, cancelled through the API, timed out by ending.finish_run, claimed
and left running, left waiting); they are the templates of the seeded runs, written with the service's
own item builder (adapters.run_items.run_item) by an unhooked BatchWriteItem, then deleted. One account,
20 runnables (skewed: the first has most runs), over 30 days; the live runs are of the last hours, and
4 completed parents have 100 child runs. The listings go through the API (tests.conftest.Api: the app with
API Gateway's events), limit 50, but `waiting,running`, which /v1/runs cannot ask (one status at most):
logic.runs.list_runs, the function behind it. A page 2 is read when page 1 gave a cursor. moto's 1 MB
limit of a Query is lifted: it sizes whole items, DynamoDB the index entries read (never 1 MB here). A Scan
is not performed: its cost is computed from the table's (or an index's) bytes, 1 MB a request.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import recovery
from async_agents import per_million
from billing import PRICE
from capacity import item_size
from recovery import calls, label, query_units, units, world

MIX = {"completed": 90.0, "failed": 5.9, "timeout": 0.1, "cancelled": 2.0, "running": 1.0, "waiting": 1.0}
RUNNABLES, DAYS, LIMIT = 20, 30, 50
CHILDREN = (60, 25, 10, 5)  # child runs of four parents
scanned: Counter[str] = Counter()  # label -> index entries the Queries read (ScannedCount)


def _scanned(parsed: dict[str, Any], **_: Any) -> None:
    scanned[label["now"]] += parsed.get("ScannedCount", 0)


def templates(bench: Any) -> tuple[dict[str, Any], list[Any]]:
    """A run of each status, through the service; and the account's runnables."""
    from runplane.domain.models import RunnableFields
    from runplane.domain.states import ErrorCode, Status
    from runplane.logic import admission, ending
    from runplane.logic.runnables import create_runnable

    made = [
        create_runnable(
            "bench", RunnableFields(name=f"agent {n:02}", kind="python", config={"function": "llm"})
        )
        for n in range(RUNNABLES)
    ]
    boom = create_runnable("bench", RunnableFields(name="boom", kind="python", config={"function": "boom"}))
    ids = {"completed": bench.start(made[0].id), "failed": bench.start(boom.id)}
    while bench.worker.poll_once():
        pass
    ids["cancelled"] = bench.start(made[0].id)
    assert bench.api.post(f"/v1/run/{ids['cancelled']}/cancel").status == 200
    for status in ("timeout", "running", "waiting"):
        ids[status] = bench.start(made[0].id)
    lease = bench.svc.settings.lease_seconds
    for status in ("timeout", "running"):
        assert admission.admit(bench.record(ids[status]), "bench-worker", lease) is not None
    outcome = ending.fail_outcome("Run timed out", ErrorCode.timeout, Status.timeout)
    assert ending.finish_run(bench.record(ids["timeout"]), outcome, owner="bench-worker") is not None
    found = {status: bench.record(run_id) for status, run_id in ids.items()}
    assert all(record.status.value == status for status, record in found.items()), found
    return found, made


def clone(template: Any, runnable: Any, at: datetime, run_id: str, parent: str | None = None) -> Any:
    """The template as if created at `at`, of `runnable`: its times moved as much."""
    shift = at - template.created_at
    seconds = shift.total_seconds()
    update: dict[str, Any] = {
        "id": run_id,
        "created_at": at,
        "runnable_id": runnable.id,
        "parent_run_id": parent,
    }
    update["runnable"] = {**template.runnable, "name": runnable.name, "config": runnable.config}
    for name in ("started_at", "completed_at", "failed_at"):
        if getattr(template, name) is not None:
            update[name] = getattr(template, name) + shift
    for name in ("lease_until", "progress_at", "deadline_at", "expires_at"):
        if getattr(template, name) is not None:
            update[name] = type(getattr(template, name))(getattr(template, name) + seconds)
    update["due_at"] = None if template.status.terminal else template.due_at and template.due_at + seconds
    history = []
    for event in template.history:
        moved = datetime.fromisoformat(event["at"]) + shift
        history.append({**event, "at": moved.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")})
    update["history"] = history
    return template.model_copy(update=update)


def seed(bench: Any, runs: int, rng: random.Random) -> dict[str, Any]:
    """`runs` runs of the account `bench` (the templates deleted); what the listings need to know."""
    from runplane import definitions as defs
    from runplane.adapters.run_items import run_item, run_pk
    from runplane.domain.ids import child_run_id, new_id

    found, made = templates(bench)
    now = max(record.created_at for record in found.values())
    weights = [1 / (rank + 1) for rank in range(RUNNABLES)]
    records = []
    for _ in range(runs - sum(CHILDREN)):
        status = rng.choices(list(MIX), list(MIX.values()))[0]
        hours = {"waiting": 0.2, "running": 2.0}.get(status, DAYS * 24.0)
        at = now - timedelta(hours=hours * rng.random())
        records.append(
            clone(found[status], rng.choices(made, weights)[0], at, new_id(int(at.timestamp() * 1000)))
        )
    parents = sorted((r for r in records if r.status.value == "completed"), key=lambda r: r.created_at)
    parents = parents[len(parents) // 2 :: len(parents) // 8][: len(CHILDREN)]
    for index, (parent, count) in enumerate(zip(parents, CHILDREN, strict=True)):
        runnable = made[-1 - index]
        for n in range(count):
            at = parent.created_at + timedelta(seconds=2 + 3 * n)
            records.append(clone(found["completed"], runnable, at, child_run_id(parent.id, n), parent.id))
        records[records.index(parent)] = parent.model_copy(update={"child_runs": count})
    items = [run_item(record) for record in records]
    client, table = recovery._raw["dynamodb"], os.environ[defs.RUNS.env_var]
    for record in found.values():
        client.delete_item(TableName=table, Key={"pk": {"S": run_pk("bench", record.id)}})
    for first in range(0, len(items), 25):
        batch = [{"PutRequest": {"Item": item}} for item in items[first : first + 25]]
        assert not client.batch_write_item(RequestItems={table: batch}).get("UnprocessedItems")
    statuses = Counter(record.status.value for record in records)
    by_runnable = Counter(record.runnable_id for record in records)
    return {
        "now": now,
        "items": items,
        "statuses": statuses,
        "runnable": made[4],
        "runnable_runs": by_runnable[made[4].id],
        "parent": parents[0].id,
        "indexes": {index.name: entries(items, index) for index in defs.RUNS.indexes},
    }


def entries(items: list[dict[str, Any]], index: Any) -> tuple[int, int, int]:
    """(entries, bytes, the largest entry's bytes) of an index of the runs table."""
    kept = {"pk", index.partition_key.name, index.sort_key.name, *index.include}
    sizes = [
        item_size({k: v for k, v in i.items() if k in kept}) for i in items if index.partition_key.name in i
    ]
    return len(sizes), sum(sizes), max(sizes, default=0)


def listings(seeded: dict[str, Any]) -> list[tuple[str, dict[str, str]]]:
    day = seeded["now"] - timedelta(days=10)
    one = seeded["runnable"].id
    return [
        ("all", {}),
        ("status=completed", {"status": "completed"}),
        ("status=failed", {"status": "failed"}),
        ("status=timeout", {"status": "timeout"}),
        ("status=running", {"status": "running"}),
        ("status=waiting,running", {"status": "waiting,running"}),
        ("runnable=<one>", {"runnable_id": one}),
        ("runnable=<one>&status=failed", {"runnable_id": one, "status": "failed"}),
        (
            "created window 1 day",
            {"created_after": day.isoformat(), "created_before": (day + timedelta(days=1)).isoformat()},
        ),
        ("parent=<largest>", {"parent_run_id": seeded["parent"]}),
    ]


def page(bench: Any, params: dict[str, str], cursor: str | None, name: str) -> dict[str, Any]:
    """One page, its requests and read units, read under the label `name`."""
    from runplane.domain.models import RunQuery
    from runplane.domain.states import Status
    from runplane.logic import runs

    recovery.clear()
    scanned.clear()
    label["now"] = name
    try:
        if "," in params.get("status", ""):  # not a /v1/runs query: the function behind it
            query = RunQuery(statuses=frozenset(Status(s) for s in params["status"].split(",")))
            answer = json.loads(runs.list_runs("bench", query, LIMIT, cursor).model_dump_json())
        else:
            asked = {**params, "limit": str(LIMIT), **({"cursor": cursor} if cursor else {})}
            reply = bench.api.get(f"/v1/runs?{urlencode(asked)}")
            assert reply.status == 200, reply.text
            answer = reply.json()
    finally:
        label["now"] = "setup"
    requests = {op: n for (who, op), n in calls.items() if who == name}
    rru = query_units[name] + sum(v for (who, op), v in units.rru.items() if who == name and op != "Query")
    return {
        "requests": requests,
        "entries_read": scanned[name],
        "rru": rru,
        "items": len(answer["items"]),
        "cursor": answer["next_cursor"],
        "early": bool(answer["next_cursor"]) and len(answer["items"]) < LIMIT,
        "usd_per_million": rru * PRICE["rru"] * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()
    os.environ["RUNPLANE_KEY_CACHE_SECONDS"] = "3600"  # the key is read once, not within a measured page
    with world() as bench:
        import moto.dynamodb.models.table as moto_table

        # moto ends a Query at 1 MB of whole items; DynamoDB at 1 MB of the index entries it read, which
        # 1000 entries (a Query's most here) of at most a few hundred bytes never reach (asserted below)
        moto_table.RESULT_SIZE_LIMIT = 64 * 2**20
        bench.svc.runs.client.meta.events.register("after-call.dynamodb.Query", _scanned)
        started = time.monotonic()
        seeded = seed(bench, args.runs, random.Random(20261201))
        seeding = time.monotonic() - started
        assert all(largest * 1000 < 2**20 for _, _, largest in seeded["indexes"].values())
        assert bench.api.get("/v1/runs?limit=1").status == 200  # warm: the key, the clients
        rows = []
        for name, params in listings(seeded):
            first = page(bench, params, None, f"{name} p1")
            rows.append({"listing": name, "page": 1, **first})
            if first["cursor"]:
                rows.append(
                    {"listing": name, "page": 2, **page(bench, params, first["cursor"], f"{name} p2")}
                )
        measuring = time.monotonic() - started - seeding
    report(args.runs, seeded, rows, seeding, measuring)
    if args.json:
        saved = {"runs": args.runs, "seeding_s": seeding, "measuring_s": measuring, "rows": rows}
        saved |= {"statuses": seeded["statuses"], "indexes": seeded["indexes"]}
        Path(args.json).write_text(json.dumps(saved, indent=2, default=str))


def report(
    runs: int, seeded: dict[str, Any], rows: list[dict[str, Any]], seeding: float, measuring: float
) -> None:
    mix = ", ".join(f"{s} {n}" for s, n in seeded["statuses"].most_common())
    print(
        f"{runs:,} runs of one account ({mix}); runnable=<one>: {seeded['runnable_runs']} runs;"
        f" parent=<largest>: {CHILDREN[0]} children"
    )
    print(
        f"seeded in {seeding:.1f} s, measured in {measuring:.1f} s; limit {LIMIT}; RRU at"
        f" ${PRICE['rru'] * 1e6:.3f} per 1M\n"
    )
    print(
        f"{'listing':<29} {'pg':>2} {'requests':<16} {'entries':>7} {'RRU':>7} {'items':>5} {'cursor':<6}"
        f" {'$/1M pages':>10}"
    )
    for row in rows:
        ops = " + ".join(
            f"{n} {op.replace('BatchGetItem', 'BGI').replace('Query', 'Q')}"
            for op, n in sorted(row["requests"].items(), key=lambda kv: kv[0] != "Query")
        )
        cursor = "early" if row["early"] else ("yes" if row["cursor"] else "no")
        print(
            f"{row['listing']:<29} {row['page']:>2} {ops:<16} {row['entries_read']:>7,} {row['rru']:>7g}"
            f" {row['items']:>5} {cursor:<6} {'$' + format(row['usd_per_million'], ',.2f'):>10}"
        )
    table = sum(item_size(item) for item in seeded["items"])
    print("\nfor comparison, a Scan (not performed), eventually consistent, 1 MB a page:")
    sizes = [("runs table", len(seeded["items"]), table)]
    sizes += [(f"index {name}", count, size) for name, (count, size, _) in seeded["indexes"].items()]
    for name, count, size in sizes:
        pages = math.ceil(size / 2**20)
        rru = sum(math.ceil(min(2**20, size - n * 2**20) / 4096) for n in range(pages)) / 2
        print(
            f"  {name:<17} {count:>6,} x {size / max(count, 1):5.0f} B = {size / 2**20:5.2f} MB, {pages} requests:"
            f" {rru:g} RRU, {per_million(rru * PRICE['rru'])} per 1M"
        )


if __name__ == "__main__":
    main()
