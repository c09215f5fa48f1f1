"""Callbacks for a run's events (`callback_events`): signed like the end's, throttled per event type,
the end always last."""

from __future__ import annotations

import itertools
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from runplane.domain.deliveries import CallbackAttempt
from runplane.logic import services
from standardwebhooks.webhooks import Webhook

from tests.conftest import Api, drain, make_runnable, pollers, working
from tests.integration.test_callbacks import deliver_until, deliveries, secret
from tests.receiver import Received, receiving

EVERY = ["start", "state", "output", "logs", "completed"]


@pytest.fixture
def fast(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("RUNPLANE_ALLOW_LOOPBACK", "1")
    monkeypatch.setenv("RUNPLANE_CALLBACK_SCHEDULE", "0.5,0.5")
    monkeypatch.setenv("RUNPLANE_CALLBACK_TIMEOUT_SECONDS", "1")
    monkeypatch.setenv("RUNPLANE_CALLBACK_EVENT_SECONDS", "1")
    services.reset()
    return env


def start(api: Api, runnable_id: str, url: str | None, script: list[dict[str, Any]], **body: Any) -> str:
    fields = {"callback_url": url} if url else {}
    reply = api.post(f"/v1/runnable/{runnable_id}/runs", {"inputs": {"script": script}, **fields, **body})
    assert reply.status == 202, reply.text
    return reply.json()["id"]


def event_of(request: Received) -> str:
    return request.headers["Runplane-Event"]


def ended(api: Api, run_id: str):
    return lambda: any(d["event"] == "completed" and d["state"] != "pending" for d in deliveries(api, run_id))


def until(done, callbacks, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "not called back in time"
        if not callbacks.poll_once():
            time.sleep(0.05)


@pytest.mark.usefixtures("fast")
def test_a_run_is_called_back_for_each_event_it_asks_for_the_end_last(
    api: Api, account, tmp_path: Path
) -> None:
    scripted = make_runnable(account.account_id, "scripted")
    go_on = tmp_path / "go-on"
    script = [{"state": {"step": 1}}, {"outputs": {"draft": "d"}}, {"log": "thinking"}, {"wait": str(go_on)}]
    callbacks = pollers()["callbacks"]
    with receiving() as receiver, working(1):
        run_id = start(api, scripted, receiver.url, script, callback_events=EVERY)
        until(
            lambda: {"start", "state", "output", "logs"} <= {event_of(r) for r in receiver.received},
            callbacks,
        )
        go_on.touch()
        until(ended(api, run_id), callbacks)
    events = [event_of(r) for r in receiver.received]
    assert events[0] == "start"
    assert events[-1] == "completed"
    assert set(events) == set(EVERY)
    assert len(events) == len(set(events))  # one of each: nothing was retried or sent twice
    verifier = Webhook(secret(api))
    bodies = [verifier.verify(r.body, r.headers) for r in receiver.received]  # every one is signed
    assert [b["id"] for b in bodies] == [run_id] * len(bodies)
    assert bodies[-1]["status"] == "completed"
    assert bodies[-1]["state"] == {"step": 1}
    ids = [r.headers["webhook-id"] for r in receiver.received]
    assert len(set(ids)) == len(ids)  # each message has its own webhook-id
    listed = {d["id"]: d["event"] for d in deliveries(api, run_id)}
    assert sorted(listed.values()) == sorted(EVERY)


@pytest.mark.usefixtures("fast")
def test_by_default_only_the_end_is_called_back(api: Api, account) -> None:
    scripted = make_runnable(account.account_id, "scripted")
    with receiving() as receiver:
        run_id = start(api, scripted, receiver.url, [{"state": {"step": 1}}, {"log": "hi"}])
        deliver_until(ended(api, run_id))
    assert [event_of(r) for r in receiver.received] == ["completed"]
    assert "webhook-id" in receiver.received[0].headers


@pytest.mark.usefixtures("fast")
def test_a_chatty_run_gets_at_most_one_state_callback_per_interval(api: Api, account, tmp_path: Path) -> None:
    """State every 0.1 s for about 3.5 s, with RUNPLANE_CALLBACK_EVENT_SECONDS=1: a few state callbacks,
    at least a second apart, each of a later tick."""
    scripted = make_runnable(account.account_id, "scripted")
    stop = tmp_path / "stop"
    with receiving() as receiver:
        run_id = start(api, scripted, receiver.url, [{"tick_until": str(stop)}], callback_events=["state"])
        callbacks = pollers()["callbacks"]
        with working(1):
            began = time.monotonic()
            while time.monotonic() - began < 3.5:
                callbacks.poll_once()
                time.sleep(0.05)
            stop.touch()
            deadline = time.monotonic() + 10
            while api.get(f"/v1/run/{run_id}").json()["status"] == "running":
                assert time.monotonic() < deadline
                callbacks.poll_once()
        for _ in range(20):
            callbacks.poll_once()
    states = [r for r in receiver.received if event_of(r) == "state"]
    assert 2 <= len(states) <= 5, [r.at for r in states]
    made = [d for d in deliveries(api, run_id) if d["event"] == "state"]
    created = sorted(datetime.fromisoformat(d["created_at"]) for d in made)
    # each was sent, or (the last, made as the run ended) dropped as superseded
    unsent = [d for d in made if d["state"] != "succeeded"]
    assert len(states) + len(unsent) == len(made)
    assert all("superseded" in d["attempts"][-1]["error"] for d in unsent)
    assert len(unsent) <= 1
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(created)]
    assert all(gap >= 0.99 for gap in gaps), gaps  # the throttle: one a second at most
    ticks = [json.loads(r.body)["state"]["tick"] for r in states]
    assert ticks == sorted(ticks)
    assert [event_of(r) for r in receiver.received] == ["state"] * len(states)  # completed was not asked


@pytest.mark.usefixtures("fast")
def test_an_event_callback_not_yet_sent_when_the_run_ends_is_dropped_not_sent_after_the_end(
    api: Api, account
) -> None:
    scripted = make_runnable(account.account_id, "scripted")
    with receiving() as receiver:
        run_id = start(
            api, scripted, receiver.url, [{"state": {"a": 1}}], callback_events=["state", "completed"]
        )
        drain("worker")  # the run ends before any callback is attempted
        deliver_until(ended(api, run_id))
        deliver_until(lambda: all(d["state"] != "pending" for d in deliveries(api, run_id)))
    assert [event_of(r) for r in receiver.received] == ["completed"]
    [state] = [d for d in deliveries(api, run_id) if d["event"] == "state"]
    assert state["state"] == "stopped"
    assert "superseded" in state["attempts"][-1]["error"]


@pytest.mark.usefixtures("fast")
def test_the_end_waits_for_an_event_callback_being_attempted(api: Api, account) -> None:
    """An event delivery whose attempt is in flight (claimed, its lease live) holds the end's back; once
    it is done, the end goes."""
    scripted = make_runnable(account.account_id, "scripted")
    with receiving() as receiver:
        run_id = start(
            api, scripted, receiver.url, [{"state": {"a": 1}}], callback_events=["state", "completed"]
        )
        drain("worker")
        store = services.services().deliveries
        records = {d.event: d for d in store.for_run(account.account_id, run_id)}
        now = time.time()
        in_flight = store.claim(records["state"], "another-attempt", now, now + 30)
        assert in_flight is not None
        callbacks = pollers()["callbacks"]
        for _ in range(3):
            callbacks.poll_once()
        assert receiver.received == []  # the end waits
        assert store.get(account.account_id, run_id, records["completed"].id).attempts == []
        attempt = CallbackAttempt(number=1, started_at=datetime.now(UTC), status_code=200, latency_ms=5)
        assert store.record_attempt(
            in_flight, "another-attempt", attempt, state="succeeded", next_attempt_at=None
        )
        deliver_until(ended(api, run_id))
    assert [event_of(r) for r in receiver.received] == ["completed"]


@pytest.mark.usefixtures("fast")
def test_a_run_that_does_not_ask_for_its_end_has_no_end_callback(api: Api, account, tmp_path: Path) -> None:
    scripted = make_runnable(account.account_id, "scripted")
    go_on = tmp_path / "go-on"
    callbacks = pollers()["callbacks"]
    with receiving() as receiver, working(1):
        run_id = start(api, scripted, receiver.url, [{"wait": str(go_on)}], callback_events=["start"])
        until(lambda: bool(receiver.received), callbacks)
        go_on.touch()
        until(lambda: api.get(f"/v1/run/{run_id}").json()["status"] == "completed", callbacks)
        until(lambda: all(d["state"] != "pending" for d in deliveries(api, run_id)), callbacks)
    assert [event_of(r) for r in receiver.received] == ["start"]
    refused = api.post(f"/v1/run/{run_id}/callbacks/redeliver")
    assert (refused.status, refused.json()["code"]) == (409, "no_callback")


def test_callback_events_need_a_callback_url_and_known_distinct_names(api: Api, echo_id: str) -> None:
    for body, code in (
        ({"callback_events": ["state"]}, "callback_events_without_url"),
        (
            {"callback_events": ["state", "state"], "callback_url": "https://example.com/h"},
            "validation_error",
        ),
        ({"callback_events": ["progress"], "callback_url": "https://example.com/h"}, "validation_error"),
        ({"callback_events": [], "callback_url": "https://example.com/h"}, "validation_error"),
    ):
        reply = api.post(f"/v1/runnable/{echo_id}/runs", {"inputs": {}, **body})
        assert (reply.status, reply.json()["code"]) == (400, code), (body, reply.text)
