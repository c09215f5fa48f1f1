"""An account's dead callbacks through the API: listed (paged, in a window) and replayed, never another's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from runplane.logic import callbacks, keys

from tests.conftest import Api, make_runnable
from tests.integration.test_callbacks import deliver_until, deliveries, fast_schedule, start  # noqa: F401
from tests.receiver import Answer, Receiver, receiving


def dead(api: Api, runnable_id: str, receiver: Receiver, count: int) -> list[str]:
    """`count` runs whose callback died (the receiver answers 500), oldest first: their webhook-ids."""
    runs = [start(api, runnable_id, receiver.url) for _ in range(count)]
    deliver_until(lambda: all([d["state"] for d in deliveries(api, r)] == ["dead"] for r in runs), 30)
    return [deliveries(api, run_id)[0]["id"] for run_id in runs]


def listed(api: Api, query: str = "") -> list[dict[str, Any]]:
    reply = api.get(f"/v1/callbacks/dead{query}")
    assert reply.status == 200, reply.text
    return reply.json()["items"]


@pytest.fixture
def other() -> Api:
    return Api(keys.create_key("globex", scopes=["runs:read", "runs:write", "runnables:write"]).token)


@pytest.mark.usefixtures("fast_schedule")
def test_the_accounts_dead_callbacks_are_listed_paged_and_replayed_alone(
    api: Api, echo_id: str, other: Api
) -> None:
    with receiving(Answer(500)) as receiver:
        ours = dead(api, echo_id, receiver, 3)
        [theirs] = dead(other, make_runnable("globex"), receiver, 1)
        died = sorted(ours, key=lambda i: next(d for d in listed(api) if d["id"] == i)["finished_at"])

        first = api.get("/v1/callbacks/dead?limit=2").json()
        second = api.get(f"/v1/callbacks/dead?limit=2&cursor={first['next_cursor']}").json()
        assert [d["id"] for d in first["items"] + second["items"]] == died[::-1]  # newest first
        assert second["next_cursor"] is None
        assert all(d["state"] == "dead" and d["attempts"][-1]["status_code"] == 500 for d in first["items"])
        assert [d["id"] for d in listed(other)] == [theirs]
        before = (datetime.now(UTC) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
        assert listed(api, f"?until={before}") == []

        receiver.script = [Answer(200)]
        reply = api.post("/v1/callbacks/dead/replay", {})
        assert reply.status == 202, reply.text
        assert reply.json() == {"webhook_ids": died[::-1], "more": False}
        assert listed(api) == []
        assert [d["id"] for d in listed(other)] == [theirs]  # another account's stay dead
        ours_runs = {d["run_id"] for d in first["items"] + second["items"]}
        assert {deliveries(api, r)[0]["state"] for r in ours_runs} == {"pending"}
        deliver_until(lambda: all(deliveries(api, r)[0]["state"] == "succeeded" for r in ours_runs))
    assert receiver.unique_ids() >= {*ours, theirs}


@pytest.mark.usefixtures("fast_schedule")
def test_a_replay_reopens_at_most_its_limit_and_says_more_remain(
    api: Api, echo_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(callbacks, "DEAD_REPLAY_LIMIT", 1)
    with receiving(Answer(500)) as receiver:
        ours = dead(api, echo_id, receiver, 2)
        first = api.post("/v1/callbacks/dead/replay").json()
        second = api.post("/v1/callbacks/dead/replay").json()
    assert first["more"] is True
    assert second["more"] is False
    assert sorted(first["webhook_ids"] + second["webhook_ids"]) == sorted(ours)


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("?since=2026-01-10T00:00:00Z&until=2026-01-01T00:00:00Z", "invalid_period"),
        ("?since=2026-01-01T00:00:00Z&until=2026-02-01T00:00:01Z", "invalid_period"),
        ("?since=2026-01-01", "validation_error"),
        ("?cursor=bm90LWEtY3Vyc29y", "invalid_cursor"),
    ],
)
def test_a_bad_window_or_cursor_is_400(api: Api, query: str, code: str) -> None:
    reply = api.get(f"/v1/callbacks/dead{query}")
    assert (reply.status, reply.json()["code"]) == (400, code), reply.text


def test_a_replay_window_is_checked_and_needs_runs_write(api: Api) -> None:
    too_long = {"since": "2026-01-01T00:00:00Z", "until": "2026-03-01T00:00:00Z"}
    reply = api.post("/v1/callbacks/dead/replay", too_long)
    assert (reply.status, reply.json()["code"]) == (400, "invalid_period")
    reader = Api(keys.create_key("acme", scopes=["runs:read"]).token)
    assert reader.get("/v1/callbacks/dead").status == 200
    reply = reader.post("/v1/callbacks/dead/replay", {})
    assert (reply.status, reply.json()["missingPerms"]) == (403, ["runs:write"])


@pytest.mark.parametrize("since", [1767225600, "2026-01-01", "2026-01-01T00:00:00", "1767225600"])
def test_a_replay_window_is_rfc_3339_with_a_zone(api: Api, since: Any) -> None:
    reply = api.post("/v1/callbacks/dead/replay", {"since": since})
    assert (reply.status, reply.json()["code"]) == (400, "validation_error"), reply.text


@pytest.mark.usefixtures("fast_schedule")
def test_a_cursor_is_the_accounts_and_may_outlive_its_window(api: Api, echo_id: str, other: Api) -> None:
    with receiving(Answer(500)) as receiver:
        dead(api, echo_id, receiver, 2)
    cursor = api.get("/v1/callbacks/dead?limit=1").json()["next_cursor"]
    assert other.get(f"/v1/callbacks/dead?cursor={cursor}").json()["code"] == "invalid_cursor"
    later = (datetime.now(UTC) + timedelta(minutes=1)).isoformat().replace("+00:00", "Z")
    assert listed(api, f"?since={later}&until={later}&cursor={cursor}") == []
    earlier = (datetime.now(UTC) - timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    assert len(listed(api, f"?until={earlier}&cursor={cursor}")) == 0
    assert len(listed(api, f"?cursor={cursor}")) == 1
