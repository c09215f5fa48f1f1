"""Runs you can watch: state, partial outputs, the log and the event stream, through the api handler.

Runs execute in the `working()` worker threads (or `drain()`), and the `scripted` fixture runnable does
what each test tells it, waiting for files the test creates: what a run reports, and when, is the test's
decision, so nothing here depends on how long anything takes except where a bound is the point.
"""

from __future__ import annotations

import itertools
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
from runplane.adapters import aws
from runplane.domain.events import FLUSH_SECONDS, MAX_BATCH_BYTES
from runplane.logic import services
from runplane.logic import watch as watching
from runplane.logic.keys import CreatedKey, create_key
from runplane.logic.sweep import sweep

from tests.conftest import Api, drain, make_runnable, working
from tests.integration.test_delivery import crash_mid_run

T = TypeVar("T")
SSE = "text/event-stream"


def start(api: Api, runnable_id: str, inputs: dict[str, Any], **fields: Any) -> str:
    reply = api.post(f"/v1/runnable/{runnable_id}/runs", {"inputs": inputs, **fields})
    assert reply.status == 202, reply.text
    return reply.json()["id"]


def until(check: Callable[[], T], what: str, seconds: float = 20) -> T:
    """Poll `check` until it returns something true; fail after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        time.sleep(0.02)


def run_state(api: Api, run_id: str) -> dict[str, Any]:
    reply = api.get(f"/v1/run/{run_id}")
    assert reply.status == 200, reply.text
    return reply.json()


def ended(api: Api, run_id: str) -> dict[str, Any]:
    return until(
        lambda: (state := run_state(api, run_id))["status"] not in ("waiting", "running") and state,
        f"run {run_id} ended",
    )


def events_page(api: Api, run_id: str, query: str = "") -> dict[str, Any]:
    reply = api.get(f"/v1/run/{run_id}/events{query}")
    assert reply.status == 200, reply.text
    return reply.json()


def all_events(api: Api, run_id: str) -> tuple[list[dict[str, Any]], int]:
    """Every event of an ended run, page after page by `after`; and how many pages that took."""
    after, seen = 0, []
    for pages in range(1, 200):
        page = events_page(api, run_id, f"?after={after}")
        seen += page["events"]
        if page["done"]:
            return seen, pages
        assert page["last_seq"] > after, page  # an ended run's pages always move on
        after = page["last_seq"]
    raise AssertionError("events never done")


def log_pages(api: Api, run_id: str, max_pages: int = 50) -> list[dict[str, Any]]:
    """The run's log, page after page by `next_cursor`, until it is null."""
    pages, cursor = [], None
    for _ in range(max_pages):
        reply = api.get(f"/v1/run/{run_id}/logs" + (f"?cursor={cursor}" if cursor is not None else ""))
        assert reply.status == 200, reply.text
        pages.append(reply.json())
        cursor = pages[-1]["next_cursor"]
        if cursor is None:
            return pages
    raise AssertionError(f"next_cursor still set after {max_pages} pages: {pages[-3:]}")


def log_so_far(api: Api, run_id: str) -> list[dict[str, Any]]:
    """The log of a run that may still run: pages until one brings nothing new (or the cursor ends)."""
    pages, cursor = [], None
    for _ in range(50):
        reply = api.get(f"/v1/run/{run_id}/logs" + (f"?cursor={cursor}" if cursor is not None else ""))
        assert reply.status == 200, reply.text
        pages.append(reply.json())
        if not pages[-1]["lines"] or pages[-1]["next_cursor"] is None:
            return pages
        cursor = pages[-1]["next_cursor"]
    raise AssertionError("the log goes on and on")


def lines_of(pages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(line["stream"], line["message"]) for page in pages for line in page["lines"]]


def reasons(events: list[dict[str, Any]]) -> list[tuple[str, str, int | None]]:
    return [(e["reason"], e["status"], e.get("attempt")) for e in events if e["type"] == "status"]


def assert_increasing(events: list[dict[str, Any]]) -> list[int]:
    seqs = [event["seq"] for event in events]
    assert all(a < b for a, b in itertools.pairwise(seqs)), seqs
    return seqs


def sse_messages(body: str) -> list[dict[str, str]]:
    """A text/event-stream body as its messages (blocks between blank lines), each a dict of its fields
    ("comment" for a line starting with a colon), as an EventSource parses them."""
    messages = []
    for block in body.split("\n\n"):
        if not block:
            continue
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            name = name or "comment"
            fields[name] = f"{fields[name]}\n{value}" if name == "data" and name in fields else value
        messages.append(fields)
    assert body.endswith("\n\n"), body  # every message is complete
    return messages


@contextmanager
def aws_requests() -> Iterator[Counter[str]]:
    """The AWS requests this process makes meanwhile, by operation (botocore before-call events, as
    bench/aws_requests.py counts them)."""
    made: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        made[model.name] += 1

    session = aws.session()
    session.events.register("before-call", count)
    aws._client.cache_clear()  # a client copies its session's handlers when it is created
    try:
        yield made
    finally:
        session.events.unregister("before-call", count)
        aws._client.cache_clear()


@pytest.fixture
def scripted(account: CreatedKey) -> str:
    return make_runnable(account.account_id, "scripted")


# --- what a run shows while it runs and after -------------------------------------------------------


def test_a_failing_run_shows_its_state_partial_outputs_log_and_traceback_while_and_after_it_runs(
    api: Api, scripted: str, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    script = [
        {"state": {"phase": "working", "step": 1}},
        {"outputs": {"draft": "partial"}},
        {"log": "step done", "fields": {"step": 1}},
        {"print": "printed 1"},
        {"print": "to stderr", "stream": "stderr"},
        {"wait": str(release)},
        {"state": {"phase": "failing", "step": None}},  # merged: None removes the key
        {"raise": "boom after progress"},
    ]
    with working():
        run_id = start(api, scripted, {"script": script})
        running = until(
            lambda: (s := run_state(api, run_id)).get("result") and s["result"].get("outputs") and s,
            "partial outputs while running",
        )
        assert running["status"] == "running"
        assert running["state"] == {"phase": "working", "step": 1}
        assert running["result"]["outputs"] == {"draft": "partial"}

        logged = until(
            lambda: len(lines_of(page := [api.get(f"/v1/run/{run_id}/logs").json()])) == 3 and page,
            "the three lines while running",
        )
        assert logged[0]["next_cursor"] is not None  # still running: more may follow
        assert logged[0]["truncated"] is False
        assert lines_of(logged)[0] == ("log", "step done")
        assert logged[0]["lines"][0]["fields"] == {"step": 1}
        assert set(lines_of(logged)[1:]) == {("stdout", "printed 1"), ("stderr", "to stderr")}
        # a page that reaches what is stored hands back a cursor to ask again with
        again = api.get(f"/v1/run/{run_id}/logs?cursor={logged[0]['next_cursor']}").json()
        assert again["lines"] == []
        assert again["next_cursor"] == logged[0]["next_cursor"]

        page = events_page(api, run_id)
        assert page["status"] == "running"
        assert page["done"] is False
        assert {e["type"] for e in page["events"]} == {"status", "state", "output", "logs"}
        assert page["last_seq"] == page["events"][-1]["seq"]

        release.touch()
        state = ended(api, run_id)

    assert state["status"] == "failed"
    assert state["state"] == {"phase": "failing"}
    assert state["result"]["error"] == {
        "message": "ValueError: boom after progress",
        "code": "runnable_exception",
    }
    assert state["result"].get("outputs") is None  # what the run returned (nothing) replaces partial outputs

    pages = log_pages(api, run_id)
    assert len(pages) == 1
    assert pages[0]["truncated"] is False
    lines = lines_of(pages)
    assert lines[0] == ("log", "step done")
    assert set(lines[1:3]) == {("stdout", "printed 1"), ("stderr", "to stderr")}
    assert len(lines) == 4
    stream, traceback = lines[3]
    assert stream == "stderr"
    assert traceback.startswith("Traceback (most recent call last):")
    assert traceback.endswith("ValueError: boom after progress")
    assert "tests/fixtures/runnables.py" in traceback
    assert "in scripted" in traceback
    assert "runplane/runnables" not in traceback  # the frames that called the runnable are Runplane's

    events, _ = all_events(api, run_id)
    assert assert_increasing(events) == list(range(1, len(events) + 1))  # nothing lost: no gaps
    assert reasons(events) == [
        ("accepted", "waiting", None),
        ("claimed", "running", 1),
        ("ended", "failed", 1),
    ]
    assert events[-1]["error"] == state["result"]["error"]
    states = [e["state"] for e in events if e["type"] == "state"]
    assert states[0] == {"phase": "working", "step": 1}
    assert states[-1] == {"phase": "failing"}
    assert [e["outputs"] for e in events if e["type"] == "output"] == [{"draft": "partial"}]
    logged_lines = [
        (line["stream"], line["message"]) for e in events if e["type"] == "logs" for line in e["lines"]
    ]
    assert logged_lines == lines  # the log is the logs events' lines
    assert all(e["status"] == "running" for e in events if e["type"] != "status")


def test_log_pages_follow_the_cursor_and_end_with_a_null_cursor(
    api: Api, scripted: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watching, "BATCHES_PER_PAGE", 1)  # a page per stored batch
    gates = [tmp_path / "b", tmp_path / "c"]
    script = [{"log": "a"}, {"wait": str(gates[0])}, {"log": "b"}, {"wait": str(gates[1])}, {"log": "c"}]
    with working():
        run_id = start(api, scripted, {"script": script})
        for gate, message in zip(gates, ["a", "b"], strict=True):  # each line is stored before the next
            until(lambda m=message: ("log", m) in lines_of(log_so_far(api, run_id)), f"line {message}")
            gate.touch()
        ended(api, run_id)
    pages = log_pages(api, run_id)
    assert lines_of(pages) == [("log", "a"), ("log", "b"), ("log", "c")]
    assert [len(page["lines"]) for page in pages[:3]] == [1, 1, 1]
    assert all(page["next_cursor"] is not None for page in pages[:-1])
    assert pages[-1]["next_cursor"] is None
    assert all(page["truncated"] is False for page in pages)


def test_log_pages_move_past_batches_that_hold_no_log_lines(
    api: Api, scripted: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches holding only state (a run that reports state for minutes before it logs) are passed over:
    the cursor moves on even when a page finds no line."""
    monkeypatch.setattr(watching, "BATCHES_PER_PAGE", 1)
    gates = [tmp_path / "second", tmp_path / "log"]
    script = [
        {"state": {"n": 1}},
        {"wait": str(gates[0])},
        {"state": {"n": 2}},
        {"wait": str(gates[1])},
        {"log": "at last"},
    ]
    with working():
        run_id = start(api, scripted, {"script": script})
        for gate, n in zip(gates, [1, 2], strict=True):  # each state is a batch of its own
            until(lambda n=n: run_state(api, run_id)["state"] == {"n": n}, f"state {n} stored")
            gate.touch()
        ended(api, run_id)
    pages = log_pages(api, run_id, max_pages=10)
    assert lines_of(pages) == [("log", "at last")]
    assert pages[-1]["next_cursor"] is None


def test_a_log_over_its_limit_is_cut_with_a_marker_line(
    api: Api, account: CreatedKey, scripted: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNPLANE_MAX_LOG_BYTES", "2048")
    services.reset()
    run_id = start(api, scripted, {"script": [{"lines": 200}, {"log": "never kept"}]})
    drain("worker")
    assert run_state(api, run_id)["status"] == "completed"  # a full log does not fail the run
    pages = log_pages(api, run_id)
    lines = lines_of(pages)
    *kept, marker = lines
    assert marker == ("log", "[log cut: a run keeps 2048 bytes of log, later lines are dropped]")
    assert 5 < len(kept) < 200
    assert kept == [("log", f"line {i}") for i in range(len(kept))]  # the first lines, in order
    assert all(page["truncated"] is True for page in pages)
    stored = [{k: v for k, v in line.items() if v is not None} for page in pages for line in page["lines"]]
    sizes = [len(json.dumps(line, separators=(",", ":"))) for line in stored]
    # kept while they fit; cut at the first that did not ("line {n}" is at most a character longer)
    assert sum(sizes[:-1]) <= 2048 < sum(sizes[:-1]) + sizes[-2] + 1
    record = services.services().runs.get(account.account_id, run_id, consistent=True)
    assert record is not None
    assert record.log_bytes == 2048


def test_a_log_under_its_limit_keeps_every_line_of_a_run_that_logs_fast(
    api: Api, account: CreatedKey
) -> None:
    chatty = make_runnable(account.account_id, "chatty")
    run_id = start(api, chatty, {"lines": 10_000})  # about 750 kB of log: under the 1 MiB limit
    drain("worker")
    assert run_state(api, run_id)["status"] == "completed"
    pages = log_pages(api, run_id)
    assert not any(page["truncated"] for page in pages)
    assert lines_of(pages) == [("log", f"line {i}") for i in range(10_000)]


def test_progress_writes_are_bounded_by_the_flush_interval_and_the_batch_size(
    api: Api, account: CreatedKey, scripted: str
) -> None:
    """10,000 log lines and 1,000 state updates in a tight loop make a handful of writes: one run item
    update (and one events put) per FLUSH_SECONDS, plus what heartbeats and batches of at most
    MAX_BATCH_BYTES of log lines need, over what a run that reports nothing makes."""
    quiet = start(api, scripted, {"script": []})
    with aws_requests() as baseline:
        drain("worker")
    assert run_state(api, quiet)["status"] == "completed"

    chatty = make_runnable(account.account_id, "chatty")
    run_id = start(api, chatty, {"lines": 10_000})
    with aws_requests() as made:
        began = time.monotonic()
        drain("worker")
        seconds = time.monotonic() - began
    state = run_state(api, run_id)
    assert state["status"] == "completed"
    assert state["state"] == {"i": 9990}

    record = services.services().runs.get(account.account_id, run_id, consistent=True)
    assert record is not None
    heartbeat = services.services().settings.heartbeat_seconds
    writes = (
        math.ceil(seconds / FLUSH_SECONDS)  # progress written at most once per flush interval
        + math.ceil(seconds / heartbeat)  # lease renewals with nothing to write
        + 1  # what waits when the run returns
        + math.ceil(record.log_bytes / MAX_BATCH_BYTES)  # the log, a batch at most per write
    )
    assert writes < 100  # so the bound means something next to 11,000 reports
    progress_updates = made["UpdateItem"] - baseline["UpdateItem"]
    progress_puts = made["PutItem"] - baseline["PutItem"]
    assert 1 <= progress_updates <= writes, (made, baseline, seconds)
    assert 1 <= progress_puts <= progress_updates, (made, baseline)  # a batch per progress write


# --- the event stream ------------------------------------------------------------------------------


def a_run_with_batches(api: Api, scripted: str, tmp_path: Path, batches: int = 3) -> str:
    """An ended run whose progress was stored as `batches` batches (a state and a log line each)."""
    gates = [tmp_path / f"gate{i}" for i in range(batches - 1)]
    script: list[dict[str, Any]] = []
    for i in range(batches):
        script += [{"state": {"n": i}}, {"log": f"batch {i}"}]
        script += [{"wait": str(gates[i])}] if i < len(gates) else []
    with working():
        run_id = start(api, scripted, {"script": script})
        for i, gate in enumerate(gates):
            until(lambda i=i: run_state(api, run_id)["state"] == {"n": i}, f"state {i} stored")
            until(lambda i=i: ("log", f"batch {i}") in lines_of(log_so_far(api, run_id)), f"line {i} stored")
            gate.touch()
        ended(api, run_id)
    return run_id


def test_event_seqs_increase_and_after_pages_through_them(
    api: Api, scripted: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = a_run_with_batches(api, scripted, tmp_path)
    whole = events_page(api, run_id)
    events = whole["events"]
    seqs = assert_increasing(events)
    assert seqs == list(range(1, len(seqs) + 1))
    assert whole["done"] is True
    assert whole["status"] == "completed"
    assert whole["last_seq"] == seqs[-1]
    assert [e["type"] for e in events].count("logs") == 3
    for after in range(len(seqs) + 1):  # `after` leaves out what was seen, whichever seq it is
        page = events_page(api, run_id, f"?after={after}")
        assert page["events"] == events[after:]
        assert page["last_seq"] == seqs[-1]
        assert page["done"] is True
    beyond = events_page(api, run_id, f"?after={seqs[-1] + 5}")
    assert beyond["events"] == []
    assert beyond["done"] is True

    monkeypatch.setattr(watching, "BATCHES_PER_PAGE", 1)  # smaller pages: the same events, in order
    paged, pages = all_events(api, run_id)
    assert paged == events
    assert pages >= 3


def test_a_long_poll_answers_soon_after_an_event_not_at_the_end_of_its_window(
    api: Api, account: CreatedKey, scripted: str, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    script = [{"state": {"phase": "before"}}, {"wait": str(release)}, {"state": {"phase": "after"}}]
    window = 20.0
    with working():
        run_id = start(api, scripted, {"script": script})
        until(lambda: run_state(api, run_id)["state"] == {"phase": "before"}, "first state")
        seen = events_page(api, run_id)["last_seq"]
        asked, answers = threading.Event(), []

        def poll() -> None:
            poller = Api(account.token)  # a resolver of its own, as each Lambda instance has
            asked.set()
            began = time.monotonic()
            reply = poller.get(f"/v1/run/{run_id}/events?after={seen}&wait={window:g}")
            answers.append((began, time.monotonic(), reply))

        thread = threading.Thread(target=poll)
        thread.start()
        asked.wait(5)
        time.sleep(0.5)  # the poll is waiting (longer only makes the check stricter)
        changed = time.monotonic()
        release.touch()
        thread.join(window + 10)
        ended(api, run_id)
    (began, answered, reply), *_ = answers
    assert reply.status == 200, reply.text
    page = reply.json()
    assert page["events"], page
    assert page["events"][0]["seq"] == seen + 1
    assert {"phase": "after"} in [e.get("state") for e in page["events"]]
    assert answered - began >= 0.5  # it waited for the event...
    assert answered - changed < window / 2  # ...and answered once it came, well before the window ended


def test_a_long_poll_with_nothing_new_answers_empty_at_the_end_of_its_window(api: Api, scripted: str) -> None:
    run_id = start(api, scripted, {"script": []})  # no worker: the run waits, nothing happens
    seen = events_page(api, run_id)["last_seq"]
    began = time.monotonic()
    page = events_page(api, run_id, f"?after={seen}&wait=1.5")
    took = time.monotonic() - began
    assert page == {"events": [], "last_seq": seen, "status": "waiting", "done": False}
    assert 1.5 <= took < 5
    began = time.monotonic()
    assert events_page(api, run_id, f"?after={seen}")["events"] == []  # no wait: at once
    assert time.monotonic() - began < 1


def test_server_sent_events_resume_from_last_event_id_and_end_with_done_then_204(
    api: Api, scripted: str, tmp_path: Path
) -> None:
    run_id = a_run_with_batches(api, scripted, tmp_path, batches=2)
    events = events_page(api, run_id)["events"]
    last = events[-1]["seq"]

    reply = api.get(f"/v1/run/{run_id}/events", headers={"Accept": SSE})
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith(SSE)
    assert reply.headers["Cache-Control"] == "no-cache"
    first, *sent, done = sse_messages(reply.text)
    assert first == {"retry": "250"}  # how soon to reconnect once this answer ends
    assert [int(m["id"]) for m in sent] == [e["seq"] for e in events]
    assert [json.loads(m["data"]) for m in sent] == events
    assert all(set(m) == {"id", "data"} for m in sent)  # unnamed: an EventSource's "message" events
    assert done == {
        "id": str(last),
        "event": "done",
        "data": json.dumps({"status": "completed", "last_seq": last}),
    }

    middle = events[2]["seq"]
    resumed = api.get(f"/v1/run/{run_id}/events", headers={"Accept": SSE, "Last-Event-ID": str(middle)})
    _, *sent, done = sse_messages(resumed.text)
    assert [int(m["id"]) for m in sent] == [e["seq"] for e in events if e["seq"] > middle]
    assert done["event"] == "done"

    for headers in ({"Last-Event-ID": str(last)}, {}):  # by header (an EventSource) or by after=
        query = "" if headers else f"?after={last}"
        reconnect = api.get(f"/v1/run/{run_id}/events{query}", headers={"Accept": SSE, **headers})
        assert (reconnect.status, reconnect.text) == (204, "")  # stop reconnecting: nothing follows

    for garbage in ("abc", "-3", "\u00b2", "1" * 20):  # not a seq Runplane sent: from the start
        again = api.get(f"/v1/run/{run_id}/events", headers={"Accept": SSE, "Last-Event-ID": garbage})
        assert again.status == 200, (garbage, again.text)
        assert [m.get("id") for m in sse_messages(again.text)][1] == "1"


def test_an_event_stream_with_nothing_new_keeps_the_client_where_it_was(api: Api, scripted: str) -> None:
    run_id = start(api, scripted, {"script": []})  # waiting: no worker
    reply = api.get(f"/v1/run/{run_id}/events?after=1&wait=0.2", headers={"Accept": SSE})
    assert reply.status == 200
    assert sse_messages(reply.text) == [{"retry": "250"}, {"comment": "nothing new", "id": "1"}]
    reply = api.get(f"/v1/run/{run_id}/events?wait=0", headers={"Accept": SSE})
    _, accepted = sse_messages(reply.text)  # a reconnect with no Last-Event-ID starts from the first
    assert json.loads(accepted["data"])["reason"] == "accepted"
    assert accepted["id"] == "1"


# --- why a run's status changed ----------------------------------------------------------------------


def test_a_run_is_accepted_then_claimed_by_attempt_1_then_ended(api: Api, scripted: str) -> None:
    run_id = start(api, scripted, {"script": []})
    drain("worker")
    events, _ = all_events(api, run_id)
    assert reasons(events) == [
        ("accepted", "waiting", None),
        ("claimed", "running", 1),
        ("ended", "completed", 1),
    ]
    assert all(e["type"] == "status" for e in events)  # a run that reports nothing has status events only


def test_a_run_taken_over_after_its_worker_was_lost_is_retried_by_attempt_2(
    api: Api, account: CreatedKey, scripted: str
) -> None:
    run_id = start(api, scripted, {"script": [{"state": {"by": "the second worker"}}]})
    boto3.client("sqs").purge_queue(QueueUrl=services.services().settings.dispatch_queue_url)
    expiry = crash_mid_run(account.account_id, run_id, time.time() - 31)
    assert sweep(now=expiry + 1)["redispatched"] == 1
    drain("worker")
    events, _ = all_events(api, run_id)
    assert reasons(events) == [
        ("accepted", "waiting", None),
        ("claimed", "running", 1),
        ("retried", "running", 2),
        ("ended", "completed", 2),
    ]
    assert_increasing(events)
    retried = next(e for e in events if e.get("reason") == "retried")
    state = next(e for e in events if e["type"] == "state")
    assert retried["seq"] < state["seq"]
    assert state["state"] == {"by": "the second worker"}


def test_a_cancellation_is_an_event_before_the_run_ends_cancelled(
    api: Api, scripted: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNPLANE_LEASE_SECONDS", "1.5")  # heartbeats (which see the request) every 0.5 s
    services.reset()
    never = tmp_path / "never"
    script = [{"state": {"phase": "waiting"}}, {"wait": str(never)}, {"state": {"phase": "cancelled"}}]
    with working():
        run_id = start(api, scripted, {"script": script})
        until(lambda: run_state(api, run_id)["state"] == {"phase": "waiting"}, "running")
        reply = api.post(f"/v1/run/{run_id}/cancel")
        assert reply.status == 202, reply.text
        state = ended(api, run_id)
    assert state["status"] == "cancelled"
    assert state["state"] == {"phase": "cancelled"}  # what the code reported on its way out is kept
    events, _ = all_events(api, run_id)
    assert assert_increasing(events) == list(range(1, len(events) + 1))
    assert reasons(events) == [
        ("accepted", "waiting", None),
        ("claimed", "running", 1),
        ("cancel_requested", "running", 1),
        ("ended", "cancelled", 1),
    ]
    asked = next(e["seq"] for e in events if e.get("reason") == "cancel_requested")
    last_state = [e for e in events if e["type"] == "state"][-1]
    assert last_state["state"] == {"phase": "cancelled"}
    assert last_state["seq"] > asked
    assert events[-1]["error"]["code"] == "cancelled"


def test_a_run_held_by_a_concurrency_limit_says_which_limit_holds_it(
    api: Api, account: CreatedKey, tmp_path: Path
) -> None:
    limited = make_runnable(account.account_id, "scripted", max_concurrency=1)
    release = tmp_path / "release"
    with working():
        first = start(api, limited, {"script": [{"wait": str(release)}]})
        until(lambda: run_state(api, first)["status"] == "running", "the first run holds the slot")
        second = start(api, limited, {"script": [{"state": {"mine": True}}]})
        held = until(
            lambda: (s := run_state(api, second))["state"] is not None and s,
            "the second run says why it waits",
        )
        assert held["status"] == "waiting"
        assert held["state"] == {"waiting_for": {"scope": "runnable", "limit": 1}}
        page = events_page(api, second)
        assert reasons(page["events"]) == [("accepted", "waiting", None), ("queued", "waiting", None)]
        assert page["events"][-1]["waiting_for"] == {"scope": "runnable", "limit": 1}
        assert page["done"] is False
        release.touch()
        done = ended(api, second)
    assert done["status"] == "completed"
    assert done["state"] == {"mine": True}  # its own state, no longer the limit
    events, _ = all_events(api, second)
    assert reasons(events) == [
        ("accepted", "waiting", None),
        ("queued", "waiting", None),
        ("claimed", "running", 1),
        ("ended", "completed", 1),
    ]


# --- refusals -------------------------------------------------------------------------------------


def test_another_account_cannot_read_a_runs_log_or_events(api: Api, scripted: str) -> None:
    run_id = start(api, scripted, {"script": [{"log": "private"}]})
    drain("worker")
    other = Api(create_key("globex", scopes=["admin"]).token)
    for path, headers in (
        ("logs", {}),
        ("events", {}),
        ("events?wait=1", {}),
        ("events", {"Accept": SSE}),
        ("events", {"Accept": SSE, "Last-Event-ID": "3"}),
    ):
        reply = other.get(f"/v1/run/{run_id}/{path}", headers=headers)
        assert reply.status == 404, (path, reply.text)
        body = reply.json()
        assert body["code"] == "run_not_found"
        assert run_id in body["error"]
        assert "private" not in reply.text
    assert api.get(f"/v1/run/{run_id}/logs").status == 200  # its own account reads it


@pytest.mark.parametrize(
    ("query", "code", "field"),
    [
        ("events?after=-1", "validation_error", "query.after"),
        ("events?after=abc", "validation_error", "query.after"),
        ("events?after=1.5", "validation_error", "query.after"),
        ("events?wait=99", "validation_error", "query.wait"),
        ("events?wait=-1", "validation_error", "query.wait"),
        ("events?wait=nan", "validation_error", "query.wait"),
        ("logs?cursor=abc", "invalid_cursor", None),
        ("logs?cursor=-1", "invalid_cursor", None),
        ("logs?cursor=%C2%B2", "invalid_cursor", None),  # a digit, to str.isdigit, but no number
        ("logs?cursor=1234567890123", "validation_error", "query.cursor"),
    ],
)
def test_bad_watch_parameters_are_400s_in_the_native_error_shape(
    api: Api, scripted: str, query: str, code: str, field: str | None
) -> None:
    run_id = start(api, scripted, {"script": []})
    reply = api.get(f"/v1/run/{run_id}/{query}")
    assert reply.status == 400, reply.text
    body = reply.json()
    assert set(body) == {"error", "code", "issues"}
    assert body["error"]
    assert body["code"] == code
    assert [issue["field"] for issue in body["issues"]] == ([field] if field else [])


# --- misuse of ctx.set_state and ctx.set_outputs ---------------------------------------------------


MISUSE = [
    ("state", "not_a_dict", "TypeError: state must be a dict, not list"),
    ("state", "not_json", "ValueError: state is not JSON: Object of type _NotJson is not JSON serializable"),
    ("state", "nan", "ValueError: state is not JSON: Out of range float values are not JSON compliant"),
    # {"good":true,"blob":"x...x"} with 16 KiB of x: the merged state is measured, as JSON, compact
    ("state", "oversize", "ValueError: state would be 16407 bytes of JSON; at most 16384 are kept"),
    ("outputs", "oversize", "ValueError: outputs would be 32779 bytes of JSON; at most 32768 are kept"),
]


@pytest.mark.parametrize(("what", "case", "message"), MISUSE)
def test_a_bad_state_or_outputs_raises_in_the_runnable_and_fails_the_run_if_uncaught(
    api: Api, account: CreatedKey, what: str, case: str, message: str
) -> None:
    misuse = make_runnable(account.account_id, "misuse")
    inputs = {"case": case, "outputs": what == "outputs"}
    failed, caught = start(api, misuse, inputs), start(api, misuse, {**inputs, "catch": True})
    drain("worker")

    state = run_state(api, failed)
    assert state["status"] == "failed"
    assert state["result"]["error"] == {"message": message, "code": "runnable_exception"}
    assert state["state"] == {"good": True}  # the bad value never replaced what was set before
    assert lines_of(log_pages(api, failed))[-1][1].endswith(message)  # with its traceback

    state = run_state(api, caught)
    assert state["status"] == "completed"  # the code can catch it and go on
    assert state["result"]["outputs"] == {"raised": message, "state": {"good": True}}
    assert state["state"] == {"good": True}


# --- progress whose events were not stored -----------------------------------------------------------


def losing_the_batch_with(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    """The events table refuses every batch holding a state with `key` (as if its worker crashed between
    the run item's write, which took the seqs, and the events' put)."""
    store = services.services().events
    put = store.put

    def refusing(account_id: str, run_id: str, events: list[Any], expires_at: int) -> None:
        if any(key in (event.state or {}) for event in events):
            raise OSError("the worker is gone")
        put(account_id, run_id, events, expires_at)

    monkeypatch.setattr(store, "put", refusing)


def a_run_that_lost_a_batch(
    api: Api, scripted: str, tmp_path: Path, last_step: dict[str, Any], meanwhile: Any = None
) -> str:
    """A run whose second batch (state {"n": 1, "lost": True} and a log line) was not stored; then
    `last_step` (it runs in the working() block of the caller). `meanwhile(run_id)` is called while the
    lost batch is the run's newest."""
    gates = [tmp_path / "lose", tmp_path / "after"]
    script = [
        {"state": {"n": 1}},
        {"wait": str(gates[0])},
        {"state": {"lost": True}},
        {"log": "lost with its batch"},
        {"wait": str(gates[1])},
        {"state": {"lost": None, "n": 2}},
        last_step,
    ]
    run_id = start(api, scripted, {"script": script})
    until(lambda: run_state(api, run_id)["state"] == {"n": 1}, "the first batch")
    gates[0].touch()
    until(lambda: run_state(api, run_id)["state"] == {"n": 1, "lost": True}, "the lost batch's run write")
    if meanwhile is not None:
        meanwhile(run_id)
    gates[1].touch()
    return run_id


def test_a_batch_not_stored_is_waited_for_while_newest_then_skipped(
    api: Api, account: CreatedKey, scripted: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing seq at the end of a running run's events may yet be stored: readers wait for it until
    the grace is over. Below a later stored batch, or once the run has ended, it is skipped at once."""
    losing_the_batch_with(monkeypatch, "lost")
    monkeypatch.setattr(watching, "GAP_GRACE_SECONDS", 3600.0)
    seen: dict[str, Any] = {}

    def while_lost(run_id: str) -> None:
        page = events_page(api, run_id)
        before = page["events"]
        assert assert_increasing(before) == list(range(1, len(before) + 1))  # in order, up to the gap
        assert [e.get("state") for e in before if e["type"] == "state"] == [{"n": 1}]
        assert page["done"] is False
        held = events_page(api, run_id, f"?after={page['last_seq']}&wait=0.3")
        assert (held["events"], held["last_seq"]) == ([], page["last_seq"])  # within the grace: it waits
        monkeypatch.setattr(watching, "GAP_GRACE_SECONDS", 0.0)
        skipped = events_page(api, run_id, f"?after={page['last_seq']}")
        assert skipped["last_seq"] > page["last_seq"]  # past the grace: taken as lost
        monkeypatch.setattr(watching, "GAP_GRACE_SECONDS", 3600.0)
        seen["before"] = before

    with working():
        run_id = a_run_that_lost_a_batch(api, scripted, tmp_path, {"log": "after the gap"}, while_lost)
        ended(api, run_id)
    record = services.services().runs.get(account.account_id, run_id, consistent=True)
    assert record is not None
    before = seen["before"]
    page = events_page(api, run_id)  # a later batch is stored, the run has ended: no wait, in the grace
    events = page["events"]
    seqs = assert_increasing(events)
    gap = set(range(1, record.seq + 1)) - set(seqs)
    assert len(gap) == 2
    assert min(gap) == before[-1]["seq"] + 1
    assert events[: len(before)] == before  # what came before is served as it was, then the rest
    assert [e.get("state") for e in events if e["type"] == "state"] == [{"n": 1}, {"n": 2}]
    assert page["done"] is True
    assert page["last_seq"] == record.seq
    logged = [line["message"] for e in events if e["type"] == "logs" for line in e["lines"]]
    assert logged == ["after the gap"]
    assert lines_of(log_pages(api, run_id)) == [("log", "after the gap")]


def test_a_batch_not_stored_does_not_hold_up_a_run_that_keeps_reporting(
    api: Api, scripted: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that reports after losing a batch is followed past the gap while it runs, whatever the
    grace: the worker stores a batch (or gives up on it) before it numbers the next."""
    losing_the_batch_with(monkeypatch, "lost")
    monkeypatch.setattr(watching, "GAP_GRACE_SECONDS", 3600.0)
    stop = tmp_path / "stop"
    with working():
        run_id = a_run_that_lost_a_batch(api, scripted, tmp_path, {"tick_until": str(stop)})
        seen = events_page(api, run_id)["last_seq"]
        try:
            page = until(
                lambda: (p := events_page(api, run_id, f"?after={seen}"))["events"] and p,
                "events after the gap while the run reports",
                seconds=10,
            )
            assert page["status"] == "running"
            assert page["events"][0]["seq"] > seen + 1  # past the lost seqs
            assert page["events"][0]["state"]["n"] == 2  # the batch after the lost one
        finally:
            stop.touch()
        ended(api, run_id)
