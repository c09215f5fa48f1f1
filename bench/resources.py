"""Resources: what a run's resources cost in AWS requests, and how fast their bytes move locally.

    .venv/bin/python bench/resources.py [--repeat 5] [--uploads 7] [--reads 7] [--only requests|local]

1. AWS requests per run, by function, service and operation, and their cost per million: the real api
   and worker handlers against moto in this process, with the defaults on (per-key rate limit, account
   max_concurrency), as in bench/async_agents.py, whose counting (botocore `before-call` events), DynamoDB
   units (bench/capacity.py) and prices this reuses. A python runnable's code runs in a process the worker
   forks, with its own boto3 session: its S3 requests are counted by a hook this bench adds to that
   process's client, and added to the worker's. Requests made outside botocore are added by hand and named
   so: the client's S3 POST of an upload, an http agent's GET of its presigned url.
   The presigner keeps one STS session per account per function (adapters/presigner.py); here each
   function (api, worker) gets its own, as separate Lambda functions have, and every scenario is measured
   after a warm-up, so its AssumeRole shows only in the rows measured with that function's sessions
   dropped first ("cold").
2. Uploads through `runplane local` (a subprocess; moto's S3 server on a real loopback socket): the
   presigned S3 POST of 5 MiB and 50 MiB, bytes per second, and the GET /v1/resources/{id} that finishes it.
3. The worker's read of a 5 MiB resource in the same stack: a python runnable (registered here, the stack
   imports this module) times its S3 client's creation, `read_bytes()` and `path` inside the run.

Prices: bench/async_agents.py's (us-east-1 list prices as in docs/operations.md) and, new here, S3's:
$0.005 per 1,000 PUT, COPY, POST or LIST requests, $0.0004 per 1,000 GET and other requests, DELETE free;
S3 Standard $0.023 per GB-month; object tags $0.01 per 10,000 tags a month; DynamoDB storage $0.25 per
GB-month; STS free. Data transfer from S3 to Lambda in the same region is free; to the internet
$0.09 per GB (the first 10 TB a month after 100 GB free); into S3 free.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from async_agents import (
    Bench,
    Made,
    collect,
    count,
    label,
    per_million,
    typical,
    units,
)
from inprocess import moto_backed
from runplane.runnables import RunContext, runnable

KIB = 1024
MIB = 1024 * 1024
SMALL = b"a line of a small text resource\n" * 32  # 1024 bytes of text
assert len(SMALL) == KIB

S3_PUT = 0.005e-3  # PUT, COPY, POST, LIST: $0.005 per 1,000
S3_GET = 0.0004e-3  # GET, SELECT and every other request but DELETE
S3_FREE = {"DeleteObject", "DeleteObjects"}
S3_WRITES = {"PutObject", "PostObject", "CopyObject", "ListObjectsV2", "ListObjects", "CreateMultipartUpload"}
S3_GB_MONTH = 0.023
S3_TAG_MONTH = 0.01e-4  # $0.01 per 10,000 tags a month
DYNAMODB_GB_MONTH = 0.25
DYNAMODB_ITEM_OVERHEAD = 100  # bytes DynamoDB adds to each item's size for storage
TRANSFER_OUT_GB = 0.09
GB = 1024**3  # AWS bills a "GB" of storage and transfer as 2^30 bytes


# --- runnables of this bench (registered in this process, and in the local stack that imports it) ---


@runnable("bench_read")
def bench_read(inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Reads each resource once, with `read_bytes()`: its size."""
    return {name: len(resource.read_bytes()) for name, resource in ctx.resources.items()}


@runnable("bench_read_timed")
def bench_read_timed(inputs: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Seconds to make this process's S3 client, then for each resource `read_bytes()` (into memory) and
    `path` (a second GET, streamed to the run's directory), with the sizes read."""
    from runplane.logic.services import services
    from runplane.runnables import resources as run_files

    began = time.perf_counter()
    run_files._blobs_here(services().settings.payload_bucket)  # made by a run's first read: a fresh fork
    timings: dict[str, Any] = {"client": time.perf_counter() - began}
    for name, resource in ctx.resources.items():
        began = time.perf_counter()
        data = resource.read_bytes()
        read = time.perf_counter() - began
        began = time.perf_counter()
        path = resource.path
        timings[name] = {
            "read_bytes": read,
            "path": time.perf_counter() - began,
            "bytes": len(data),
            "file_bytes": path.stat().st_size,
        }
    return timings


# --- counting the requests of a python runnable's own process ---

CHILD_CALLS = Path(tempfile.gettempdir()) / f"runplane-bench-resources-{os.getpid()}.calls"


def count_child(model: Any, **_: Any) -> None:
    """A request of the run's code (a forked process): appended to a file the worker's side reads."""
    with CHILD_CALLS.open("a") as out:
        out.write(f"{model.service_model.service_name} {model.name}\n")


def count_run_code() -> None:
    """Hook `count_child` onto the S3 client a run's process makes (runnables/resources._blobs_here)."""
    from runplane.runnables import resources as run_files

    make = run_files._blobs_here
    hooked: set[int] = set()

    def hooked_blobs(bucket: str) -> Any:
        blobs = make(bucket)
        if id(blobs) not in hooked:
            blobs.client.meta.events.register("before-call", count_child)
            hooked.add(id(blobs))
        return blobs

    run_files._blobs_here = hooked_blobs


def run_code_calls() -> Counter[tuple[str, str, str]]:
    """The requests the run's code made since the last call, as the worker function's."""
    if not CHILD_CALLS.exists():
        return Counter()
    lines = CHILD_CALLS.read_text().split()
    CHILD_CALLS.unlink()
    return Counter(
        ("worker", service, operation) for service, operation in zip(lines[::2], lines[1::2], strict=True)
    )


# --- one presigner session per function, as separate Lambda functions keep them ---


class PerFunction(dict):
    """The presigner's sessions, keyed by the function that asks (async_agents' label) and the account."""

    def get(self, account_id: Any, default: Any = None) -> Any:
        return super().get((label["now"], account_id), default)

    def __setitem__(self, account_id: Any, value: Any) -> None:
        super().__setitem__((label["now"], account_id), value)

    def drop(self, function: str) -> None:
        for key in [k for k in self if k[0] == function]:
            del self[key]


# --- pricing ---


def s3_dollars(made: Made) -> float:
    total = 0.0
    for (_, service, operation), n in made.requests.items():
        if service == "s3" and operation not in S3_FREE:
            total += n * (S3_PUT if operation in S3_WRITES else S3_GET)
    return total


def cost(made: Made) -> dict[str, float]:
    """async_agents' items, with S3's requests (STS is free)."""
    return {**made.cost(), "S3 requests": s3_dollars(made)}


def by_hand(made: Made, function: str, service: str, operation: str) -> Made:
    """`made` with a request that botocore does not see (a client's or an agent's own HTTP request)."""
    return made + Made(Counter({(function, service, operation): 1}))


# --- in-process scenarios ---


def data_uri(data: bytes, media_type: str = "text/plain") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


class Scenarios:
    def __init__(self) -> None:
        from runplane.logic.services import services

        self.bench = Bench()
        self.sessions = PerFunction()
        services().presigner._sessions = self.sessions
        self.api = self.bench.api
        self.reader = self.python_runnable("bench_read")

    def python_runnable(self, function: str) -> str:
        spec = {"name": function, "kind": "python", "config": {"function": function}, "timeout_seconds": 60}
        reply = self.api.post("/v1/runnables", spec)
        assert reply.status == 201, reply.text
        return reply.json()["id"]

    def create(self, data: bytes) -> str:
        body = {"name": "notes.txt", "directory_path": "docs", "content": data_uri(data)}
        reply = self.api.post("/v1/resources", body)
        assert reply.status == 201, reply.text
        return reply.json()["id"]

    def upload(self, data: bytes) -> tuple[str, Made]:
        """A resource uploaded through its presigned POST: (its id, what the three steps made)."""
        import requests

        body = {"name": "big.bin", "directory_path": "data", "size": len(data)}
        reply, started = collect("api", lambda: self.api.post("/v1/resources/uploads", body))
        assert reply.status == 201, reply.text
        created = reply.json()
        form = created["upload"]
        sent = requests.post(form["url"], data=form["fields"], files={"file": ("big.bin", data)}, timeout=60)
        assert sent.status_code in (200, 201, 204), sent.text[:300]
        resource_id = created["resource"]["id"]
        reply, finished = collect("api", lambda: self.api.get(f"/v1/resources/{resource_id}"))
        assert reply.status == 200, reply.text
        assert reply.json()["status"] == "ready", reply.text
        return resource_id, by_hand(started, "client", "s3", "PostObject") + finished

    def run(self, runnable: str, resources: list[dict[str, Any]], expect: dict[str, Any]) -> Made:
        """One async run, submitted and executed; its outputs checked."""
        body = {"inputs": {}, "resources": resources}
        reply, submitted = collect("api", lambda: self.api.post(f"/v1/runnable/{runnable}/runs", body))
        assert reply.status == 202, reply.text
        run_code_calls()  # nothing of an earlier run
        executed = self.bench.execute()
        executed.requests += run_code_calls()
        state = self.bench.state(reply.json()["id"])
        assert state["status"] == "completed", state
        assert state["result"]["outputs"] == expect, state
        return submitted + executed

    def http_run(self, agent: Any, runnable: str, resources: list[dict[str, Any]], data: bytes) -> Made:
        """An http run; then the agent's one GET of each resource's presigned url (moto answers it)."""
        import requests

        made = self.run(runnable, resources, {"ok": True})
        envelope = json.loads(agent.received[-1].body)
        for described in envelope["resources"].values():
            got = requests.get(described["url"], timeout=30)
            assert got.status_code == 200, got.text[:300]
            assert got.content == data
            made = by_hand(made, "agent", "s3", "GetObject")
        return made


def stored_sizes(resource_id: str) -> tuple[int, int, int]:
    """(the S3 object's bytes, the resources table item's bytes, the bytes of what a run naming it keeps in
    its payload) of a resource of the bench account."""
    from capacity import item_size
    from runplane.adapters import aws
    from runplane.logic.services import services

    record = services().resources.get("bench", resource_id)
    assert record is not None
    item = aws.client("dynamodb").get_item(
        TableName=services().settings.resources_table,
        Key={"account_id": {"S": "bench"}, "id": {"S": resource_id}},
    )
    seen = {"name": "doc", "resource": record.seen_by_run()}
    return record.size or 0, item_size(item.get("Item", {})), len(json.dumps(seen, separators=(",", ":")))


def in_process(repeat: int) -> None:
    from runplane.adapters import aws

    from tests.receiver import Answer, receiving

    with moto_backed(RUNPLANE_RATE_LIMIT_BURST="10000"):  # on (its counter write counted), never reached
        aws.session().events.register("before-call", count)
        units.register(aws.session().events)
        aws._client.cache_clear()  # clients copy the session's handlers when created
        count_run_code()
        s = Scenarios()
        small = s.create(SMALL)
        big_data = b"\x00\x01" * (5 * MIB // 2)
        big, _ = s.upload(big_data)
        reference = [{"name": "doc", "resource": {"id": small}}]
        inline_counter = iter(range(10**6))

        def inline() -> list[dict[str, Any]]:
            body = {
                "name": f"n{next(inline_counter)}.txt",
                "directory_path": "docs",
                "content": data_uri(SMALL),
            }
            return [{"name": "doc", "resource": body}]

        with receiving(Answer(body=json.dumps({"outputs": {"ok": True}}).encode())) as agent:
            http = s.bench.runnable("bench agent", {"url": agent.url}, 60)
            cases: dict[str, Any] = {
                "(a) none": lambda: s.run(s.reader, [], {}),
                "(b) 1 KiB": lambda: s.run(s.reader, reference, {"doc": KIB}),
                "(c) 5 MiB": lambda: s.run(
                    s.reader, [{"name": "doc", "resource": {"id": big}}], {"doc": 5 * MIB}
                ),
                "(d) inline": lambda: s.run(s.reader, inline(), {"doc": KIB}),
                "(e0) http": lambda: s.http_run(agent, http, [], SMALL),
                "(e) http 1K": lambda: s.http_run(agent, http, reference, SMALL),
            }

            def cold_http() -> Made:
                s.sessions.drop("worker")
                return s.http_run(agent, http, reference, SMALL)

            for case in cases.values():  # warm: clients, caches, each function's presigner session
                case()
            runs = {name: typical([case() for _ in range(repeat)]) for name, case in cases.items()}
            runs["(e) cold"] = typical([cold_http() for _ in range(repeat)])

        def by_content() -> Made:
            body = {"name": "notes.txt", "directory_path": "docs", "content": data_uri(SMALL)}
            reply, made = collect("api", lambda: s.api.post("/v1/resources", body))
            assert reply.status == 201, reply.text
            return made

        def later_get() -> Made:
            reply, made = collect("api", lambda: s.api.get(f"/v1/resources/{big}"))
            assert reply.status == 200, reply.text
            return made

        def cold_upload() -> Made:
            s.sessions.drop("api")
            return s.upload(big_data)[1]

        creations = {
            "(f) content": typical([by_content() for _ in range(repeat)]),
            "(f) upload": typical([s.upload(big_data)[1] for _ in range(repeat)]),
            "upload cold": typical([cold_upload() for _ in range(repeat)]),
            "later GET": typical([later_get() for _ in range(repeat)]),
        }
        sizes = {"1 KiB": stored_sizes(small), "5 MiB": stored_sizes(big)}
    print_requests(
        "1. AWS requests per run (api submit + worker), one resource named `doc`, by function and operation",
        runs,
    )
    print(
        "  (a)-(d) python runnable bench_read (read_bytes() of each resource, once); (a) no resource,"
        " (b) an existing 1 KiB resource, (c) an existing 5 MiB one, (d) a 1 KiB resource created inline"
        " (content) with the run. (e0) http runnable, no resource; (e) with the 1 KiB resource, and the"
        " agent's one GET of its presigned url; (e) cold: the worker's presigner session of the account"
        " dropped first (a fresh worker instance, or one 11 h later)."
    )
    print_requests(
        "\n   creating a resource: POST /v1/resources by content (1 KiB); an upload of 5 MiB: POST "
        "/v1/resources/uploads + the client's S3 POST + the first GET, which finishes it",
        creations,
    )
    print(
        "  upload cold: the api's presigner session dropped first; later GET: a GET of the ready resource"
        " (its download_url presigned; nothing to finish)"
    )
    print_storage(sizes)


def print_requests(title: str, rows: dict[str, Made]) -> None:
    print(f"\n{title}")
    keys = sorted({k for made in rows.values() for k in made.requests if k[0] != "esm"})
    keys += sorted({k for made in rows.values() for k in made.requests if k[0] == "esm"})
    width = max(10, *(len(name) for name in rows))
    print(f"  {'function service operation':<36}" + "".join(f" {name:>{width}}" for name in rows))

    def line(name: str, values: list[str]) -> None:
        print(f"  {name:<36}" + "".join(f" {value:>{width}}" for value in values))

    for key in keys:
        line(
            " ".join(key),
            [format(made.requests[key], "g") if made.requests[key] else "." for made in rows.values()],
        )
    line("requests (esm left out)", [format(made.aws_requests(), "g") for made in rows.values()])
    line("WRU", [format(made.wru, ".0f") for made in rows.values()])
    line("RRU", [format(made.rru, ".1f") for made in rows.values()])
    line("API Gateway requests", [format(made.api_calls, "g") for made in rows.values()])
    line("api ms (moto's)", [format(made.api_seconds * 1000, ".0f") for made in rows.values()])
    line("worker ms (moto's)", [format(made.worker_seconds * 1000, ".0f") for made in rows.values()])
    print("  cost per million")
    costs = {name: cost(made) for name, made in rows.items()}
    for item in next(iter(costs.values())):
        line(f"  {item}", [per_million(c[item]) for c in costs.values()])
    line("  total", [per_million(sum(c.values())) for c in costs.values()])


def print_storage(sizes: dict[str, tuple[int, int, int]]) -> None:
    print("\n   storage and transfer, apart (per million resources; a month of 30 days)")
    print(f"  {'':<54} {'1 KiB':>10} {'5 MiB':>10}")

    def line(name: str, dollars: list[float]) -> None:
        print(f"  {name:<54}" + "".join(f" {per_million(d):>10}" for d in dollars))

    objects = [size for size, _, _ in sizes.values()]
    items = [item for _, item, _ in sizes.values()]
    line("S3 Standard, the bytes kept 30 days ($0.023/GB-month)", [b / GB * S3_GB_MONTH for b in objects])
    line("S3 object tag (the expiry rule's), 30 days", [S3_TAG_MONTH for _ in objects])
    line(
        "DynamoDB, the resource's item kept 30 days",
        [(i + DYNAMODB_ITEM_OVERHEAD) / GB * DYNAMODB_GB_MONTH for i in items],
    )
    line("transfer S3 -> Lambda, same region (python runnables)", [0.0 for _ in objects])
    line(
        "transfer S3 -> internet, an agent's download of its url", [b / GB * TRANSFER_OUT_GB for b in objects]
    )
    line("transfer into S3 (POST /v1/resources, uploads)", [0.0 for _ in objects])
    print(
        "  (the resources table item: "
        + ", ".join(f"{name} {item} B" for name, (_, item, _) in sizes.items())
        + "; what a run naming it keeps in its payload, in the run item: "
        + ", ".join(f"{name} {seen} B" for name, (_, _, seen) in sizes.items())
        + ")"
    )


# --- local stack: uploads and the worker's read over real sockets ---


def local_stack(uploads: int, reads: int) -> None:
    import requests
    import urllib3

    from tests.local_stack import ROOT, start_stack

    environment = {
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "bench")]),  # this module, as bench.resources
        "RUNPLANE_RUNNABLE_PACKAGES": "bench.resources",
        "RUNPLANE_SYNC_WAIT_SECONDS": "60",
    }
    with tempfile.TemporaryDirectory() as tmp:
        stack = start_stack(Path(tmp), workers=1, **environment)
        stack.keep_draining_output()
        try:
            session = requests.Session()

            def call(method: str, path: str, body: Any = None) -> Any:
                reply = stack.call(method, path, body)
                assert reply.status_code in (200, 201, 202), reply.text[:500]
                return reply.json()

            def timed_upload(data: bytes) -> tuple[str, float, float, float]:
                """(its id, seconds of the S3 POST, of the GET that finishes it, of a later GET)."""
                body = {"name": "blob.bin", "directory_path": "data", "size": len(data)}
                started = call("POST", "/v1/resources/uploads", body)
                form = started["upload"]
                file = ("file", ("blob.bin", data, "application/octet-stream"))
                encoded, content_type = urllib3.encode_multipart_formdata([*form["fields"].items(), file])
                began = time.perf_counter()
                sent = session.post(
                    form["url"], data=encoded, headers={"Content-Type": content_type}, timeout=300
                )
                send = time.perf_counter() - began
                assert sent.status_code in (200, 201, 204), sent.text[:300]
                resource_id = started["resource"]["id"]
                began = time.perf_counter()
                ready = call("GET", f"/v1/resources/{resource_id}")
                finish = time.perf_counter() - began
                assert ready["status"] == "ready", ready
                assert ready["size"] == len(data), ready
                began = time.perf_counter()
                call("GET", f"/v1/resources/{resource_id}")
                return resource_id, send, finish, time.perf_counter() - began

            rows = []
            for size, n in ((5 * MIB, uploads), (50 * MIB, min(uploads, 5))):
                data = os.urandom(size)
                timed_upload(data)  # warm: connections, the api's presigner session
                rows.append((size, [timed_upload(data) for _ in range(n)]))
            big_id = rows[0][1][0][0]

            spec = {"name": "timed", "kind": "python", "config": {"function": "bench_read_timed"}}
            timed = call("POST", "/v1/runnables", spec)["id"]
            body = {"resources": [{"name": "doc", "resource": {"id": big_id}}]}
            call("POST", f"/v1/runnable/{timed}/runs?mode=sync", body)  # warm: the worker's imports
            results = []
            for _ in range(reads):
                state = call("POST", f"/v1/runnable/{timed}/runs?mode=sync", body)
                assert state["status"] == "completed", state
                results.append(state["result"]["outputs"])
        finally:
            stack.stop()

    print("\n2. uploads through `runplane local`: the presigned S3 POST to moto's S3 server over loopback")
    print(
        f"  {'size':>7} {'n':>3} {'POST median':>12} {'MB/s':>8} {'min..max s':>14}"
        f" {'finishing GET ms':>17} {'later GET ms':>13}"
    )
    for size, made in rows:
        sends = [send for _, send, _, _ in made]
        median = statistics.median(sends)
        print(
            f"  {size // MIB:>4} MiB {len(sends):>3} {median:>11.3f}s {size / median / 1e6:>8.1f}"
            f" {min(sends):>6.3f}..{max(sends):<6.3f} {statistics.median(m[2] for m in made) * 1000:>17.0f}"
            f" {statistics.median(m[3] for m in made) * 1000:>13.0f}"
        )
    print(
        "  POST: the multipart body encoded beforehand, the request timed alone (MB/s in 10^6 bytes);"
        " finishing GET: GET /v1/resources/{id} that finds the object (a ranged GET of its first bytes,"
        " the record made ready, the day's usage counted, a download_url presigned), through the local"
        " gateway; later GET: the same request once ready (a GetItem and the presigned url)"
    )

    def median(pick: Any) -> float:
        return statistics.median(pick(r) for r in results) * 1000

    print(
        f"\n3. the worker's read of a 5 MiB resource (python runnable, a forked process), median of {reads}"
    )
    print(f"  S3 client created in the run's process  {median(lambda r: r['client']):>7.1f} ms")
    read = median(lambda r: r["doc"]["read_bytes"])
    path = median(lambda r: r["doc"]["path"])
    print(f"  read_bytes() (one GetObject, into memory) {read:>6.1f} ms  {5 * MIB / read / 1e3:>6.1f} MB/s")
    print(f"  path (one GetObject, to the run's files)  {path:>6.1f} ms  {5 * MIB / path / 1e3:>6.1f} MB/s")
    assert all(r["doc"]["bytes"] == r["doc"]["file_bytes"] == 5 * MIB for r in results)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5, help="measurements of each in-process scenario")
    parser.add_argument(
        "--uploads", type=int, default=7, help="timed uploads of 5 MiB (of 50 MiB: at most 5)"
    )
    parser.add_argument("--reads", type=int, default=7, help="runs reading the 5 MiB resource")
    parser.add_argument("--only", choices=["requests", "local"])
    args = parser.parse_args()
    if args.only != "local":
        in_process(args.repeat)
    if args.only != "requests":
        local_stack(args.uploads, args.reads)


if __name__ == "__main__":
    main()
