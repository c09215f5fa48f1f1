"""Watch tokens: a run's event stream without the API key, for a browser's EventSource."""

from __future__ import annotations

import time

import pytest
from runplane.logic import keys, watch_tokens

from tests.conftest import Api, drain


def started(api: Api, runnable_id: str) -> str:
    reply = api.post(f"/v1/runnable/{runnable_id}/runs", {"inputs": {"x": 1}})
    assert reply.status == 202, reply.text
    return reply.json()["id"]


def token_for(api: Api, run_id: str, **query: int) -> str:
    suffix = "".join(f"?{name}={value}" for name, value in query.items())
    reply = api.post(f"/v1/run/{run_id}/events/token{suffix}")
    assert reply.status == 201, reply.text
    return reply.json()["token"]


def test_a_watch_token_reads_the_runs_events_without_the_key(api: Api, echo_id: str) -> None:
    run_id = started(api, echo_id)
    drain()
    token = token_for(api, run_id)
    reply = api.get(
        f"/v1/run/{run_id}/events?token={token}", token=None, headers={"Accept": "text/event-stream"}
    )
    assert reply.status == 200, reply.text
    assert reply.headers["Content-Type"].startswith("text/event-stream")
    assert "event: done" in reply.text
    as_json = api.get(f"/v1/run/{run_id}/events?token={token}", token=None)
    assert as_json.json()["done"] is True


def test_a_watch_token_opens_nothing_but_its_runs_events(api: Api, echo_id: str) -> None:
    run_id, other = started(api, echo_id), started(api, echo_id)
    token = token_for(api, run_id)
    for path in (
        f"/v1/run/{other}/events?token={token}",  # another run
        f"/v1/run/{run_id}?token={token}",  # another route of the same run
        f"/v1/run/{run_id}/logs?token={token}",
        f"/v1/runs?token={token}",
    ):
        reply = api.get(path, token=None)
        assert reply.status == 401, (path, reply.text)
        assert reply.json()["code"] == "unauthorized"
    assert api.post(f"/v1/run/{run_id}/cancel?token={token}", token=None).status == 401


@pytest.mark.parametrize(
    "spoil",
    [
        lambda token: token[:-2] + ("AA" if not token.endswith("AA") else "BB"),  # another signature
        lambda token: token.replace("rpw_", "rpx_"),
        lambda token: token.split(".")[0],  # no signature
        lambda token: "rpw_" + "x" * 40 + "." + token.split(".")[1],  # claims that do not parse
    ],
)
def test_a_tampered_token_is_refused(api: Api, echo_id: str, spoil) -> None:
    run_id = started(api, echo_id)
    reply = api.get(f"/v1/run/{run_id}/events?token={spoil(token_for(api, run_id))}", token=None)
    assert reply.status == 401, reply.text


def test_a_token_stops_working_when_it_expires_or_its_key_is_revoked(
    api: Api, echo_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = started(api, echo_id)
    token = token_for(api, run_id, seconds=60)
    assert api.get(f"/v1/run/{run_id}/events?token={token}", token=None).status == 200
    later = time.time() + 61
    monkeypatch.setattr(watch_tokens.time, "time", lambda: later)
    assert api.get(f"/v1/run/{run_id}/events?token={token}", token=None).status == 401
    monkeypatch.undo()
    fresh = token_for(api, run_id)
    keys.revoke_key(keys.authenticate(f"Bearer {api.token}").key_id)
    assert api.get(f"/v1/run/{run_id}/events?token={fresh}", token=None).status == 401


def test_only_a_key_that_reads_runs_gets_a_token_and_only_for_its_own_runs(api: Api, echo_id: str) -> None:
    run_id = started(api, echo_id)
    writer = Api(keys.create_key("acme", scopes=["runnables:read"]).token)
    refused = writer.post(f"/v1/run/{run_id}/events/token")
    assert (refused.status, refused.json()["missingPerms"]) == (403, ["runs:read"])
    stranger = Api(keys.create_key("someone-else").token)
    assert stranger.post(f"/v1/run/{run_id}/events/token").status == 404
    assert api.post(f"/v1/run/{run_id}/events/token?seconds=86401").status == 400


def test_a_malformed_token_is_401_never_a_500(api: Api, echo_id: str) -> None:
    import base64

    run_id = started(api, echo_id)
    claims = token_for(api, run_id).removeprefix("rpw_").split(".")[0]
    nested = base64.urlsafe_b64encode(b"[" * 5000).decode().rstrip("=")
    for token in (f"rpw_{claims}.%C3%A9", f"rpw_{nested}.sig", "rpw_" + "a" * 600, "rpw_.", "rpw_"):
        reply = api.get(f"/v1/run/{run_id}/events?token={token}", token=None)
        assert reply.status == 401, (token[:40], reply.text)
