"""Callback delivery against a real receiver on loopback: signatures, retries, stops, dead letters, replay."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from runplane.domain.ids import intake_run_id
from runplane.logic import services
from runplane.logic.callbacks import delivery_id_for, replay_dead
from runplane.logic.sweep import sweep
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.conftest import Api, drain, pollers
from tests.receiver import Answer, receiving


@pytest.fixture
def fast_schedule(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Loopback receivers allowed (as in local mode) and three quick retries."""
    monkeypatch.setenv("RUNPLANE_ALLOW_LOOPBACK", "1")
    monkeypatch.setenv("RUNPLANE_CALLBACK_SCHEDULE", "0.5,0.5,0.5")
    monkeypatch.setenv("RUNPLANE_CALLBACK_TIMEOUT_SECONDS", "1")
    services.reset()
    return env


def start(api: Api, runnable_id: str, url: str, **body: Any) -> str:
    reply = api.post(f"/v1/runnable/{runnable_id}/runs", {"callback_url": url, **body})
    assert reply.status == 202, reply.text
    return reply.json()["id"]


def deliver_until(done: Callable[[], bool], seconds: float = 15) -> None:
    """Run workers and the callbacks function (as the event source mappings would) until `done`."""
    callbacks = pollers()["callbacks"]
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "callbacks did not settle in time"
        drain("worker")
        if not callbacks.poll_once():
            time.sleep(0.05)


def deliveries(api: Api, run_id: str) -> list[dict[str, Any]]:
    reply = api.get(f"/v1/run/{run_id}/callbacks")
    assert reply.status == 200, reply.text
    return reply.json()["items"]


def settled(api: Api, run_id: str) -> Callable[[], bool]:
    return lambda: any(d["state"] != "pending" for d in deliveries(api, run_id))


def secret(api: Api) -> str:
    return api.get("/v1/callbacks/secret").json()["secret"]


@pytest.mark.usefixtures("fast_schedule")
def test_a_delivery_is_the_signed_run_state_with_the_callers_headers(api: Api, echo_id: str) -> None:
    with receiving() as receiver:
        run_id = start(
            api,
            echo_id,
            receiver.url,
            inputs={"x": 1},
            callback_headers={"Authorization": "Bearer hook-token"},
        )
        deliver_until(settled(api, run_id))
    [request] = receiver.received
    payload = Webhook(secret(api)).verify(request.body, request.headers)
    assert payload == api.get(f"/v1/run/{run_id}").json()
    assert payload["status"] == "completed"
    assert payload["result"]["outputs"] == {"x": 1}
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Authorization"] == "Bearer hook-token"
    [delivery] = deliveries(api, run_id)
    assert delivery["id"] == request.headers["webhook-id"]
    assert delivery["state"] == "succeeded"
    assert delivery["next_attempt_at"] is None
    assert [(a["number"], a["status_code"], a["error"]) for a in delivery["attempts"]] == [(1, 200, None)]
    assert "hook-token" not in api.get(f"/v1/run/{run_id}").text


@pytest.mark.usefixtures("fast_schedule")
def test_a_failed_run_is_delivered_with_its_error(api: Api, account: Any) -> None:
    from tests.conftest import make_runnable

    fail_id = make_runnable(account.account_id, "fail")
    with receiving() as receiver:
        run_id = start(api, fail_id, receiver.url, inputs={"message": "no luck"})
        deliver_until(settled(api, run_id))
    payload = Webhook(secret(api)).verify(receiver.received[0].body, receiver.received[0].headers)
    assert payload["status"] == "failed"
    assert payload["result"]["error"]["message"] == "no luck"


@pytest.mark.usefixtures("fast_schedule")
def test_failing_twice_then_succeeding_records_three_attempts_under_one_webhook_id(
    api: Api, echo_id: str
) -> None:
    with receiving(Answer(500), Answer(503), Answer(200)) as receiver:
        run_id = start(api, echo_id, receiver.url)
        deliver_until(settled(api, run_id))
    [delivery] = deliveries(api, run_id)
    assert delivery["state"] == "succeeded"
    assert [(a["number"], a["status_code"]) for a in delivery["attempts"]] == [(1, 500), (2, 503), (3, 200)]
    assert receiver.unique_ids() == {delivery["id"]}
    timestamps = [int(r.headers["webhook-timestamp"]) for r in receiver.received]
    assert timestamps == sorted(timestamps)
    gaps = [b.at - a.at for a, b in zip(receiver.received, receiver.received[1:], strict=False)]
    assert all(gap >= 0.4 for gap in gaps), gaps  # 0.5 s scheduled, ±20 % jitter
    for request in receiver.received:
        Webhook(secret(api)).verify(request.body, request.headers)


@pytest.mark.usefixtures("fast_schedule")
def test_an_attempt_that_times_out_is_recorded_and_retried(api: Api, echo_id: str) -> None:
    with receiving(Answer(200, delay=2.5), Answer(200)) as receiver:
        run_id = start(api, echo_id, receiver.url)
        deliver_until(settled(api, run_id))
    [delivery] = deliveries(api, run_id)
    first, second = delivery["attempts"]
    assert first["status_code"] is None
    assert "timed out" in first["error"]
    assert first["latency_ms"] < 2000
    assert second["status_code"] == 200
    assert delivery["state"] == "succeeded"


@pytest.mark.usefixtures("fast_schedule")
@pytest.mark.parametrize("answer", [Answer(410), Answer(500, headers={"webhook-delivery": "abort"})])
def test_gone_or_abort_stops_retrying(api: Api, echo_id: str, answer: Answer) -> None:
    with receiving(answer, Answer(200)) as receiver:
        run_id = start(api, echo_id, receiver.url)
        deliver_until(settled(api, run_id))
        time.sleep(1)
        assert not pollers()["callbacks"].poll_once()
    [delivery] = deliveries(api, run_id)
    assert delivery["state"] == "stopped"
    assert len(delivery["attempts"]) == 1
    assert len(receiver.received) == 1


@pytest.mark.usefixtures("fast_schedule")
def test_redirects_are_failures_and_never_followed(api: Api, echo_id: str) -> None:
    with (
        receiving() as target,
        receiving(Answer(302, headers={"Location": target.url}), Answer(200)) as receiver,
    ):
        run_id = start(api, echo_id, receiver.url)
        deliver_until(settled(api, run_id))
    [delivery] = deliveries(api, run_id)
    assert [a["status_code"] for a in delivery["attempts"]] == [302, 200]
    assert target.received == []


@pytest.mark.usefixtures("fast_schedule")
def test_a_redirect_to_the_metadata_service_is_not_followed(api: Api, echo_id: str) -> None:
    redirect = Answer(307, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
    with receiving(redirect, Answer(200)) as receiver:
        run_id = start(api, echo_id, receiver.url)
        deliver_until(settled(api, run_id))
    first = deliveries(api, run_id)[0]["attempts"][0]
    assert first["status_code"] == 307
    assert first["error"] == "HTTP 307"


@pytest.mark.usefixtures("fast_schedule")
def test_a_receiver_that_is_down_for_a_while_gets_every_delivery_once(api: Api, echo_id: str) -> None:
    # Bound, not listening: connections are refused, and the port stays this test's until the receiver
    # takes it (a port closed meanwhile could be taken by a test in another pytest worker).
    with socket.socket() as down:
        down.bind(("127.0.0.1", 0))
        port = down.getsockname()[1]
        url = f"http://127.0.0.1:{port}/hook"
        run_ids = [start(api, echo_id, url, inputs={"n": n}) for n in range(5)]
        drain("worker")
        deadline = time.monotonic() + 0.8
        while time.monotonic() < deadline:
            pollers()["callbacks"].poll_once()
            time.sleep(0.05)
    with receiving(port=port) as receiver:
        deliver_until(lambda: all(settled(api, r)() for r in run_ids))
    states = {r: deliveries(api, r)[0] for r in run_ids}
    assert {d["state"] for d in states.values()} == {"succeeded"}
    assert all(d["attempts"][0]["error"].startswith("connection failed") for d in states.values())
    assert receiver.unique_ids() == {d["id"] for d in states.values()}
    outputs = sorted(json.loads(r.body)["result"]["outputs"]["n"] for r in receiver.received)
    assert sorted(set(outputs)) == list(range(5))


@pytest.mark.usefixtures("fast_schedule")
def test_a_delivery_that_exhausts_its_schedule_is_dead_in_the_dlq_and_can_be_replayed(
    api: Api, echo_id: str, env: dict[str, str]
) -> None:
    began = datetime.now(UTC)
    with receiving(Answer(500)) as receiver:
        run_id = start(api, echo_id, receiver.url)
        deliver_until(settled(api, run_id))
        [delivery] = deliveries(api, run_id)
        assert delivery["state"] == "dead"
        assert len(delivery["attempts"]) == 4  # the first attempt and three retries
        sqs = boto3.client("sqs")
        [parked] = sqs.receive_message(
            QueueUrl=env["RUNPLANE_CALLBACKS_DLQ_URL"], MessageAttributeNames=["All"]
        )["Messages"]
        assert json.loads(parked["Body"])["delivery_id"] == delivery["id"]
        assert parked["MessageAttributes"]["runplane-error"]["StringValue"] == "HTTP 500"

        receiver.script = [Answer(200)]
        assert replay_dead(began - timedelta(minutes=1), datetime.now(UTC) + timedelta(minutes=1)) == [
            delivery["id"]
        ]
        deliver_until(settled(api, run_id))
    [replayed] = deliveries(api, run_id)
    assert replayed["state"] == "succeeded"
    assert len(replayed["attempts"]) == 5
    assert replayed["attempts"][-1]["status_code"] == 200
    assert receiver.unique_ids() == {delivery["id"]}


@pytest.mark.usefixtures("fast_schedule")
def test_redeliver_sends_again_with_the_same_webhook_id(api: Api, echo_id: str) -> None:
    with receiving() as receiver:
        run_id = start(api, echo_id, receiver.url)
        deliver_until(settled(api, run_id))
        reply = api.post(f"/v1/run/{run_id}/callbacks/redeliver")
        assert reply.status == 202
        assert reply.json()["state"] == "pending"
        again = api.post(f"/v1/run/{run_id}/callbacks/redeliver")  # pending, not yet attempted
        assert again.status == 202
        assert again.json()["state"] == "pending"
        deliver_until(lambda: len(receiver.received) == 2 and settled(api, run_id)())
        time.sleep(0.5)
        assert pollers()["callbacks"].poll_once() == 0  # the first redelivery's message was dropped
    first, second = receiver.received  # two redeliveries before an attempt: one attempt
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert [a["number"] for a in deliveries(api, run_id)[0]["attempts"]] == [1, 2]


@pytest.mark.usefixtures("fast_schedule")
def test_redeliver_of_a_pending_delivery_attempts_it_now(
    api: Api, echo_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNPLANE_CALLBACK_SCHEDULE", "3600")
    services.reset()
    with receiving(Answer(500), Answer(200)) as receiver:
        run_id = start(api, echo_id, receiver.url)
        deliver_until(lambda: any(d["attempts"] for d in deliveries(api, run_id)))
        [waiting] = deliveries(api, run_id)
        assert waiting["state"] == "pending"
        reply = api.post(f"/v1/run/{run_id}/callbacks/redeliver")
        assert reply.status == 202
        redelivered = reply.json()
        assert redelivered.keys() == waiting.keys()
        assert (redelivered["state"], redelivered["attempts"]) == ("pending", waiting["attempts"])
        assert redelivered["next_attempt_at"] < waiting["next_attempt_at"]
        deliver_until(settled(api, run_id), seconds=5)
    assert [r.headers["webhook-id"] for r in receiver.received] == [redelivered["id"]] * 2
    assert [a["status_code"] for a in deliveries(api, run_id)[0]["attempts"]] == [500, 200]


@pytest.mark.usefixtures("fast_schedule")
def test_redeliver_while_an_attempt_is_being_made_is_409(api: Api, echo_id: str) -> None:
    with receiving(Answer(200, delay=0.5)) as receiver:
        run_id = start(api, echo_id, receiver.url)
        drain("worker")
        attempt = threading.Thread(target=pollers()["callbacks"].poll_once)
        attempt.start()
        deadline = time.monotonic() + 5
        while not receiver.received:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        reply = api.post(f"/v1/run/{run_id}/callbacks/redeliver")
        attempt.join()
    assert reply.status == 409
    assert reply.json()["code"] == "delivery_in_flight"
    assert len(receiver.received) == 1
    assert deliveries(api, run_id)[0]["state"] == "succeeded"


@pytest.mark.usefixtures("fast_schedule")
def test_redeliver_of_a_run_without_callback_or_not_ended_is_409(
    api: Api, echo_id: str, account: Any
) -> None:
    plain = api.post(f"/v1/runnable/{echo_id}/runs", {}).json()["id"]
    assert api.post(f"/v1/run/{plain}/callbacks/redeliver").json()["code"] == "no_callback"
    with receiving() as receiver:
        waiting = start(api, echo_id, receiver.url)
        reply = api.post(f"/v1/run/{waiting}/callbacks/redeliver")
    assert reply.status == 409
    assert reply.json()["code"] == "run_not_terminal"
    assert api.get(f"/v1/run/{waiting}/callbacks").json()["items"] == []


@pytest.mark.usefixtures("fast_schedule")
def test_a_longer_retry_after_is_honoured(api: Api, echo_id: str) -> None:
    with receiving(Answer(503, headers={"Retry-After": "2"}), Answer(200)) as receiver:
        run_id = start(api, echo_id, receiver.url)
        deliver_until(settled(api, run_id))
    first, second = receiver.received
    assert second.at - first.at >= 1.9


@pytest.mark.usefixtures("fast_schedule")
def test_after_rotation_both_secrets_sign_until_the_overlap_ends(
    api: Api, echo_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = secret(api)
    assert old.startswith("whsec_")
    assert secret(api) == old
    rotated = api.post("/v1/callbacks/secret/rotate").json()
    assert rotated["secret"] != old
    assert rotated["previous_valid_until"] is not None
    with receiving() as receiver:
        deliver_until(settled(api, start(api, echo_id, receiver.url)))
        monkeypatch.setenv("RUNPLANE_CALLBACK_SECRET_OVERLAP_SECONDS", "0")
        services.reset()
        api.post("/v1/callbacks/secret/rotate")
        deliver_until(settled(api, start(api, echo_id, receiver.url)))
    during, after = receiver.received
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(during.body, during.headers)
    Webhook(rotated["secret"]).verify(during.body, during.headers)
    Webhook(secret(api)).verify(after.body, after.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(rotated["secret"]).verify(after.body, after.headers)


def test_secrets_are_per_account(api: Api, env: dict[str, str]) -> None:
    from runplane.logic.keys import create_key

    other = Api(create_key("globex", scopes=["admin"]).token)
    assert secret(api) != secret(other)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://127.0.0.1/hook", "loopback"),
        ("https://169.254.169.254/latest/meta-data/", "link-local"),
        ("https://[fd00:ec2::254]/", "private"),
        ("https://10.1.2.3/", "private"),
        ("https://100.64.0.1/", "carrier-grade NAT"),
        ("https://[::ffff:127.0.0.1]/", "IPv4-mapped"),
        ("https://[64:ff9b::a9fe:a9fe]/", "NAT64"),
        ("https://internal.test/", "private"),
        ("https://mixed.test/", "10.9.9.9"),
        ("http://hooks.example.com/", "https"),
        ("https://user:pw@hooks.example.com/", "credentials"),
        ("https://a..b/", "not a valid host name"),
    ],
)
def test_forbidden_callback_urls_are_refused_at_request_time(
    api: Api, echo_id: str, dns: dict[str, list[str] | None], url: str, reason: str
) -> None:
    dns.update({"internal.test": ["192.168.0.7"], "mixed.test": ["93.184.215.14", "10.9.9.9"]})
    reply = api.post(f"/v1/runnable/{echo_id}/runs", {"callback_url": url})
    assert reply.status == 400, reply.text
    body = reply.json()
    assert body["code"] == "forbidden_callback_url"
    assert body["issues"][0]["field"] == "body.callback_url"
    assert reason in body["issues"][0]["message"]
    assert api.get("/v1/runs").json()["items"] == []


@pytest.mark.parametrize("addresses", [None, []], ids=["lookup-fails", "no-address"])
def test_a_callback_url_whose_host_does_not_resolve_is_400_unresolvable(
    api: Api, echo_id: str, dns: dict[str, list[str] | None], addresses: list[str] | None
) -> None:
    dns["nowhere.test"] = addresses
    reply = api.post(f"/v1/runnable/{echo_id}/runs", {"callback_url": "https://nowhere.test/hook"})
    assert reply.status == 400, reply.text
    assert reply.json() == {
        "error": "callback_url cannot be used: nowhere.test does not resolve (no DNS address)",
        "code": "unresolvable_callback_url",
        "issues": [{"field": "body.callback_url", "message": "nowhere.test does not resolve"}],
    }
    assert api.get("/v1/runs").json()["items"] == []


def test_an_intake_message_whose_callback_host_does_not_resolve_fails_its_run_unresolvable(
    api: Api, env: dict[str, str], echo_id: str, dns: dict[str, list[str] | None]
) -> None:
    from tests.integration.test_delivery import intake_dead_letters, send_intake

    dns["nowhere.test"] = None
    message = {"account_id": "acme", "runnable_id": echo_id, "callback_url": "https://nowhere.test/hook"}
    message_id = send_intake(env, message)
    drain("intake")
    [parked] = intake_dead_letters(env)
    assert parked["MessageAttributes"]["runplane-error-code"]["StringValue"] == "unresolvable_callback_url"
    run = api.get(f"/v1/run/{intake_run_id(message_id)}").json()
    assert run["status"] == "failed"
    assert run["result"]["error"]["code"] == "unresolvable_callback_url"
    assert "nowhere.test does not resolve" in run["result"]["error"]["message"]


@pytest.mark.usefixtures("fast_schedule")
def test_a_host_that_later_resolves_to_a_forbidden_address_is_not_called(
    api: Api, echo_id: str, dns: dict[str, list[str] | None]
) -> None:
    dns["rebind.test"] = ["93.184.215.14"]
    run_id = start(api, echo_id, "https://rebind.test/hook")
    dns["rebind.test"] = ["169.254.169.254"]
    drain("worker")
    pollers()["callbacks"].poll_once()
    [attempt] = deliveries(api, run_id)[0]["attempts"]
    assert attempt["status_code"] is None
    assert attempt["error"].startswith("forbidden destination")
    assert "169.254.169.254" in attempt["error"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("webhook-id", "x"),
        ("Webhook-Signature", "x"),
        ("Host", "x"),
        ("Content-Length", "x"),
        ("Connection", "x"),
        ("X-Price", "10 €"),
        ("Authorization", " Bearer x"),
        ("X-Split", "a\r\nX-Injected: 1"),
    ],
)
def test_callback_headers_cannot_override_what_runplane_sets_or_break_the_request(
    api: Api, echo_id: str, name: str, value: str
) -> None:
    body = {"callback_url": "https://hooks.example.com/", "callback_headers": {name: value}}
    reply = api.post(f"/v1/runnable/{echo_id}/runs", body)
    assert reply.status == 400
    assert reply.json()["code"] == "validation_error"


@pytest.mark.usefixtures("fast_schedule")
@pytest.mark.usefixtures("fast_schedule")
def test_a_callback_that_cannot_be_enqueued_before_the_end_does_not_hold_the_end_back(
    api: Api, echo_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The callbacks queue down as the run ends: the end is written all the same, keeping the run in the
    sweeper's index, and the sweeper sends the callback once the queue is back."""
    queues = services.services().queues
    with receiving() as receiver:
        run_id = start(api, echo_id, receiver.url)
        with monkeypatch.context() as patched:
            patched.setattr(
                queues, "send_callback", lambda *_: (_ for _ in ()).throw(ConnectionError("down"))
            )
            drain("worker")
        assert api.get(f"/v1/run/{run_id}").json()["status"] == "completed"
        assert pollers()["callbacks"].poll_once() == 0
        assert sweep(time.time())["settled"] == 0  # not due yet: the worker may still be at it
        assert sweep(time.time() + 120)["settled"] == 1
        deliver_until(settled(api, run_id))
        assert sweep(time.time() + 240)["settled"] == 0
    assert len(receiver.received) == 1


@pytest.mark.usefixtures("fast_schedule")
def test_a_callback_message_that_arrives_before_the_run_has_ended_waits_for_it(
    api: Api, echo_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sent, then the end's write fails (the worker crashed, say): the message finds the run still going
    and comes back later; once the run ends, it is delivered with the terminal state, once."""
    runs = services.services().runs
    with receiving() as receiver:
        run_id = start(api, echo_id, receiver.url)
        with monkeypatch.context() as patched:
            patched.setattr(runs, "finish", lambda *_: (_ for _ in ()).throw(TimeoutError("cut off")))
            worker = threading.Thread(target=drain, args=("worker",))
            worker.start()
            deadline = time.monotonic() + 5
            while not pollers()["callbacks"].poll_once():  # the message arrives while the end fails
                assert time.monotonic() < deadline, "no callback message"
                time.sleep(0.05)
            assert api.get(f"/v1/run/{run_id}").json()["status"] == "running"
            assert receiver.received == []
        worker.join()
        assert api.get(f"/v1/run/{run_id}").json()["status"] == "completed"
        deliver_until(settled(api, run_id))
    assert len(receiver.received) == 1
    assert json.loads(receiver.received[0].body)["status"] == "completed"


@pytest.mark.usefixtures("fast_schedule")
def test_a_failed_attempt_hides_its_message_until_the_retry_is_due(api: Api, echo_id: str) -> None:
    with receiving(Answer(500), Answer(200)) as receiver:
        run_id = start(api, echo_id, receiver.url)
        drain("worker")
        callbacks = pollers()["callbacks"]
        assert callbacks.poll_once() == 1
        assert [callbacks.poll_once() for _ in range(5)] == [0] * 5  # hidden, not spinning
        deliver_until(settled(api, run_id))
    assert len(receiver.received) == 2


@pytest.mark.usefixtures("fast_schedule")
def test_a_delivery_waiting_for_a_retry_whose_message_was_lost_is_requeued_by_the_sweeper(
    api: Api, echo_id: str, env: dict[str, str]
) -> None:
    with receiving(Answer(500), Answer(200)) as receiver:
        run_id = start(api, echo_id, receiver.url)
        drain("worker")
        assert pollers()["callbacks"].poll_once() == 1  # the first attempt fails: a retry is scheduled
        boto3.client("sqs").purge_queue(QueueUrl=env["RUNPLANE_CALLBACKS_QUEUE_URL"])
        assert pollers()["callbacks"].poll_once() == 0
        assert sweep()["callback_requeued"] == 0  # not yet overdue
        boto3.client("dynamodb").update_item(  # as if 16 minutes had passed
            TableName=env["RUNPLANE_CALLBACKS_TABLE"],
            Key={"pk": {"S": f"acme#{run_id}"}, "id": {"S": delivery_id_for(run_id)}},
            UpdateExpression="SET next_attempt_at = :t",
            ExpressionAttributeValues={":t": {"N": str(time.time() - 16 * 60)}},
        )
        assert sweep()["callback_requeued"] == 1
        assert sweep()["callback_requeued"] == 0  # requeued once, not every sweep
        deliver_until(settled(api, run_id))
    assert len(receiver.received) == 2


@pytest.mark.usefixtures("fast_schedule")
def test_an_error_inside_an_attempt_is_recorded_and_retried(
    api: Api, echo_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runplane.logic import deliver

    def broken(account_id: str) -> list[str]:
        raise RuntimeError("secrets unavailable")

    with receiving() as receiver:
        run_id = start(api, echo_id, receiver.url)
        drain("worker")
        with monkeypatch.context() as patched:
            patched.setattr(deliver, "signing_secrets", broken)
            assert pollers()["callbacks"].poll_once() == 1
        deliver_until(settled(api, run_id))
    first, second = deliveries(api, run_id)[0]["attempts"]
    assert first["error"] == "internal error: RuntimeError"
    assert second["status_code"] == 200
    assert len(receiver.received) == 1


@pytest.mark.usefixtures("fast_schedule")
def test_attempts_that_never_finish_still_use_up_the_schedule(api: Api, echo_id: str) -> None:
    with receiving() as receiver:
        run_id = start(api, echo_id, receiver.url)
        drain("worker")
        store = services.services().deliveries
        record = store.get("acme", run_id, delivery_id_for(run_id))
        at = record.next_attempt_at
        for _ in range(4):  # the first attempt and three retries, each claimed and then lost to a crash
            at += 0.01
            assert store.claim(record, "crashed", at, at + 0.005) is not None
        deliver_until(settled(api, run_id))
    [delivery] = deliveries(api, run_id)
    assert delivery["state"] == "dead"
    assert delivery["attempts"][-1]["error"] == "earlier attempts did not finish"
    assert receiver.received == []


@pytest.mark.usefixtures("fast_schedule")
def test_an_end_message_sent_again_waits_about_a_second_for_the_end(
    api: Api, echo_id: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delivery was stored long ago (by an attempt that did not end the run); the final end sends
    again and its message arrives just before the end is written: it waits as long as the message has,
    about a second, not as long as the delivery has existed."""
    runs, queues = services.services().runs, services.services().queues
    hidden: list[float] = []
    hide = queues.hide_callback
    monkeypatch.setattr(queues, "hide_callback", lambda handle, s: (hidden.append(s), hide(handle, s)))
    finish, calls = runs.finish, []

    def end_after_the_message(request: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            boto3.client("dynamodb").update_item(  # stored 20 minutes ago
                TableName=env["RUNPLANE_CALLBACKS_TABLE"],
                Key={"pk": {"S": f"acme#{run_id}"}, "id": {"S": delivery_id_for(run_id)}},
                UpdateExpression="SET created_at = :c",
                ExpressionAttributeValues={
                    ":c": {"S": (datetime.now(UTC) - timedelta(minutes=20)).isoformat()}
                },
            )
            assert pollers()["callbacks"].poll_once() == 1  # the message arrives before the end
        return finish(request)

    with receiving() as receiver:
        run_id = start(api, echo_id, receiver.url)
        monkeypatch.setattr(runs, "finish", end_after_the_message)
        drain("worker")
        assert api.get(f"/v1/run/{run_id}").json()["status"] == "completed"
        assert hidden, "the message did not wait for the end"
        assert hidden[0] <= 2, f"the ended run's callback is hidden {hidden[0]:.0f} s"
        deliver_until(settled(api, run_id))
    assert len(receiver.received) == 1


@pytest.mark.usefixtures("fast_schedule")
def test_cancelling_a_waiting_run_while_the_callbacks_queue_is_down_cancels_it_and_calls_back_later(
    api: Api, echo_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    queues = services.services().queues
    with receiving() as receiver:
        run_id = start(api, echo_id, receiver.url)
        with monkeypatch.context() as patched:
            patched.setattr(
                queues, "send_callback", lambda *_: (_ for _ in ()).throw(ConnectionError("down"))
            )
            reply = api.post(f"/v1/run/{run_id}/cancel")
            assert (reply.status, reply.json()["status"]) == (200, "cancelled"), reply.text
            assert sweep(time.time() + 120)["settled"] == 0  # still down: tried again at the next sweep
        drain("worker")  # its dispatch message finds it cancelled: nothing is executed
        assert sweep(time.time() + 240)["settled"] == 1
        deliver_until(settled(api, run_id))
    assert [json.loads(r.body)["status"] for r in receiver.received] == ["cancelled"]
