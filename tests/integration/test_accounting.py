"""Usage and cost: per run, summed per listed page, per account and day (and toward credits); listing
filters; experiment ids; X-Ray subsegments for traced runs."""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
from runplane.logic import services

from tests.conftest import LLM_RUN_COST, Api, drain, make_runnable

# At the test prices (conftest.TEST_PRICES), by hand:
#   gpt-4o 1000 in (200 cached), 100 out: 800 x 20 + 200 x 10 + 100 x 25 = 20500 -> $0.0205
#   claude 300 in, 50 out:                300 x 6 + 50 x 25              =  3050 -> $0.00305
GPT = {
    "provider": "openai",
    "model": "gpt-4o",
    "prompt_tokens": 1000,
    "completion_tokens": 100,
    "cached_tokens": 200,
}
CLAUDE = {"provider": "anthropic", "model": "claude", "prompt_tokens": 300, "completion_tokens": 50}
MYSTERY = {"provider": "acme", "model": "mystery-1", "prompt_tokens": 7, "completion_tokens": 3}


def run(api: Api, runnable_id: str, **body: Any) -> dict[str, Any]:
    reply = api.post(f"/v1/runnable/{runnable_id}/runs", body)
    assert reply.status == 202, reply.text
    drain("worker")
    return api.get(f"/v1/run/{reply.json()['id']}").json()


def test_a_runs_usage_is_listed_per_model_summed_and_priced(api: Api, account) -> None:
    state = run(api, make_runnable(account.account_id, "usage"), inputs={"usage": [GPT, CLAUDE]})
    assert [u["model"] for u in state["result"]["usage"]] == ["gpt-4o", "claude"]
    assert (state["total_input_tokens"], state["total_output_tokens"], state["total_cached_tokens"]) == (
        1300,
        150,
        200,
    )
    assert state["total_token_cost_usd"] == pytest.approx(0.0205 + 0.00305)


def test_a_model_without_a_price_leaves_the_cost_unknown_but_counts_the_tokens(api: Api, account) -> None:
    state = run(api, make_runnable(account.account_id, "usage"), inputs={"usage": [GPT, MYSTERY]})
    assert state["total_token_cost_usd"] is None
    assert state["total_input_tokens"] == 1007


def test_a_listed_page_sums_its_runs_usage(api: Api, account) -> None:
    usage = make_runnable(account.account_id, "usage")
    run(api, usage, inputs={"usage": [GPT]})
    run(api, usage, inputs={"usage": [CLAUDE, MYSTERY]})
    run(api, make_runnable(account.account_id, "echo"))
    page = api.get(f"/v1/runs?runnable_id={usage}").json()
    assert len(page["items"]) == 2
    assert page["totals"] == {
        "total_input_tokens": 1307,
        "total_output_tokens": 153,
        "total_cached_tokens": 200,
        "total_token_cost_usd": pytest.approx(0.0205 + 0.00305),
        "unpriced_usage": 1,
    }
    first = api.get(f"/v1/runs?runnable_id={usage}&limit=1").json()
    assert first["totals"]["total_input_tokens"] == 307  # the newest run only
    assert first["next_cursor"]


def test_runs_are_listed_by_creation_time_range(api: Api, account) -> None:
    echo = make_runnable(account.account_id, "echo")
    early = run(api, echo)["id"]
    time.sleep(0.01)
    middle_time = datetime.now(UTC)
    middle = run(api, echo)["id"]
    late_time = datetime.now(UTC)
    late = run(api, echo)["id"]

    def listed(query: str) -> list[str]:
        reply = api.get(f"/v1/runs?{query}")
        assert reply.status == 200, reply.text
        return [r["id"] for r in reply.json()["items"]]

    after, before = quote(middle_time.isoformat()), quote(late_time.isoformat())
    assert listed(f"created_after={after}") == [late, middle]
    assert listed(f"created_after={after}&created_before={before}") == [middle]
    assert listed(f"runnable_id={echo}&created_before={after}") == [early]
    assert listed(f"status=completed&created_before={before}&created_after={after}") == [middle]
    naive = api.get("/v1/runs?created_after=2026-01-01T00:00:00")
    assert (naive.status, naive.json()["issues"][0]["field"]) == (400, "query.created_after")
    reversed_range = api.get(f"/v1/runs?created_after={before}&created_before={after}")
    assert (reversed_range.status, reversed_range.json()["items"]) == (200, [])  # no instant in it: nothing


def test_the_accounts_usage_and_spend_are_summed_by_day_and_count_toward_credits(api: Api, account) -> None:
    usage = make_runnable(account.account_id, "usage")
    llm = make_runnable(account.account_id, "llm")
    run(api, usage, inputs={"usage": [GPT, MYSTERY]})
    run(api, llm)
    today = datetime.now(UTC).date()
    report = api.get("/v1/account/usage").json()
    assert (report["start"], report["end"]) == (today.replace(day=1).isoformat(), today.isoformat())
    expected_cost = 0.0205 + LLM_RUN_COST
    assert report["total_token_cost_usd"] == pytest.approx(expected_cost)
    assert report["total_input_tokens"] == 1007 + 150
    assert report["unpriced_usage"] == 1
    [day] = report["days"]
    assert (day["date"], day["total_output_tokens"]) == (today.isoformat(), 103 + 30)
    assert api.get("/v1/account").json()["credits"]["used_usd"] == pytest.approx(expected_cost)
    yesterday = (today - timedelta(days=1)).isoformat()
    empty = api.get(f"/v1/account/usage?start={yesterday}&end={yesterday}").json()
    assert (empty["days"], empty["total_token_cost_usd"]) == ([], 0)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("start=2026-02-01&end=2026-01-01", "query.start"),
        ("start=2020-01-01&end=2026-01-01", "query.start"),
        ("start=soon", "query.start"),
    ],
)
def test_a_bad_usage_period_is_refused(api: Api, query: str, field: str) -> None:
    reply = api.get(f"/v1/account/usage?{query}")
    assert (reply.status, reply.json()["issues"][0]["field"]) == (400, field)


def test_experiment_ids_are_kept_on_the_run(api: Api, account) -> None:
    echo = make_runnable(account.account_id, "echo")
    state = run(api, echo, experiment_id="exp-7", experiment_candidate_id="prompt-b")
    assert (state["experiment_id"], state["experiment_candidate_id"]) == ("exp-7", "prompt-b")
    assert api.post(f"/v1/runnable/{echo}/runs", {"experiment_id": ""}).status == 400


@pytest.fixture
def xray_daemon(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """The worker as in Lambda with active tracing, its invocation sampled, segments sent here."""
    daemon = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    daemon.bind(("127.0.0.1", 0))
    daemon.settimeout(0.5)
    monkeypatch.setenv("LAMBDA_TASK_ROOT", "/var/task")
    trace = f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)};Parent={secrets.token_hex(8)};Sampled=1"
    monkeypatch.setenv("_X_AMZN_TRACE_ID", trace)
    from aws_xray_sdk.core import xray_recorder

    xray_recorder.configure(daemon_address=f"127.0.0.1:{daemon.getsockname()[1]}")
    yield daemon
    daemon.close()


def subsegments(daemon: socket.socket) -> list[dict[str, Any]]:
    found = []
    while True:
        try:
            packet = daemon.recv(65536).decode()
        except TimeoutError:
            return found
        found.append(json.loads(packet.split("\n", 1)[1]))


@pytest.mark.parametrize(
    ("runnable_strategy", "run_strategy", "traced"),
    [
        ("default", "default", True),
        ("disable", "default", False),
        ("disable", "force", True),
        ("default", "disable", False),
    ],
)
def test_a_traced_run_executes_in_an_xray_subsegment_named_on_its_state(
    api: Api, account, xray_daemon: socket.socket, runnable_strategy: str, run_strategy: str, traced: bool
) -> None:
    services.reset()
    echo = make_runnable(account.account_id, "echo", telemetry_strategy=runnable_strategy)
    state = run(api, echo, telemetry_strategy=run_strategy)
    runs = [s for s in subsegments(xray_daemon) if s.get("name") == "run"]
    if not traced:
        assert (state["telemetry_span_id"], runs) == (None, [])
        return
    [segment] = runs
    assert state["telemetry_span_id"] == segment["id"]
    assert segment["annotations"] == {"run_id": state["id"], "runnable_id": echo, "kind": "python"}
