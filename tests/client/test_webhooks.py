"""`runplane_client.webhooks` against the `standardwebhooks` package, and against the local stack's
real callbacks (before and after a secret rotation)."""

from __future__ import annotations

import base64
import json
import os
import time
from datetime import UTC, datetime

import pytest
from runplane_client import Runplane, RunStatus
from runplane_client.webhooks import WebhookVerificationError, sign, verify
from standardwebhooks.webhooks import Webhook

from tests.receiver import Received, Receiver, receiving

SECRET = "whsec_" + base64.b64encode(os.urandom(32)).decode()
OTHER = "whsec_" + base64.b64encode(os.urandom(32)).decode()
BODY = json.dumps({"id": "01a2080f-0000-7000-8000-000000000000", "status": "completed", "é": "ü"})


def signed_by_the_package(
    body: str = BODY, secret: str = SECRET, at: float | None = None, message_id: str = "msg_1"
) -> dict[str, str]:
    stamp = datetime.fromtimestamp(time.time() if at is None else at, UTC)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, stamp, body),
    }


def test_what_the_package_signs_verifies_and_answers_the_body() -> None:
    headers = signed_by_the_package()
    assert verify(headers, BODY.encode(), SECRET) == json.loads(BODY)
    assert verify(headers, BODY, SECRET) == json.loads(BODY)  # text too
    upper = {name.upper(): value for name, value in headers.items()}
    assert verify(upper, BODY, SECRET) == json.loads(BODY)  # header names in any case
    raw = base64.b64decode(SECRET.removeprefix("whsec_"))
    assert verify(headers, BODY, raw) == json.loads(BODY)
    assert verify(headers, BODY, SECRET.removeprefix("whsec_").rstrip("=")) == json.loads(BODY)


def test_a_signature_made_here_is_the_packages_own() -> None:
    now = int(time.time())
    assert sign("msg_2", now, BODY, SECRET) == Webhook(SECRET).sign(
        "msg_2", datetime.fromtimestamp(now, UTC), BODY
    )
    headers = {
        "webhook-id": "msg_2",
        "webhook-timestamp": str(now),
        "webhook-signature": sign("msg_2", now, BODY, SECRET),
    }
    assert Webhook(SECRET).verify(BODY, headers) == json.loads(BODY)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda h, b: (h, b.replace("completed", "failed")), "no signature matches"),
        (lambda h, b: ({**h, "webhook-id": "msg_other"}, b), "no signature matches"),
        (lambda h, b: ({**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}, b), "no signature"),
        (lambda h, b: ({**h, "webhook-signature": "v2," + h["webhook-signature"][3:]}, b), "no signature"),
        (lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b), "missing header"),
        (lambda h, b: ({**h, "webhook-timestamp": "12e3"}, b), "not a Unix time"),
    ],
)
def test_a_changed_message_is_refused(change, why: str) -> None:
    headers, body = change(signed_by_the_package(), BODY)
    with pytest.raises(WebhookVerificationError, match=why):
        verify(headers, body, SECRET)


def test_another_secret_is_refused_and_either_of_two_accepted() -> None:
    headers = signed_by_the_package()
    with pytest.raises(WebhookVerificationError):
        verify(headers, BODY, OTHER)
    assert verify(headers, BODY, [OTHER, SECRET]) == json.loads(BODY)
    both = {
        **headers,
        "webhook-signature": f"{signed_by_the_package(secret=OTHER)['webhook-signature']} {headers['webhook-signature']}",
    }
    assert verify(both, BODY, SECRET) == verify(both, BODY, OTHER) == json.loads(BODY)


def test_a_timestamp_more_than_five_minutes_away_is_refused_as_the_package_refuses_it() -> None:
    now = time.time()
    for offset, accepted in ((-299, True), (299, True), (-301, False), (301, False)):
        headers = signed_by_the_package(at=now + offset)
        try:
            Webhook(SECRET).verify(BODY, headers)
            theirs = True
        except Exception:
            theirs = False
        try:
            verify(headers, BODY, SECRET, now=now)
            mine = True
        except WebhookVerificationError:
            mine = False
        assert mine == theirs == accepted, offset
    assert verify(signed_by_the_package(at=now - 3600), BODY, SECRET, tolerance=4000) == json.loads(BODY)


# --- the local stack's callbacks ---


def received(receiver: Receiver, count: int, seconds: float = 20) -> list[Received]:
    deadline = time.monotonic() + seconds
    while len(receiver.received) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(receiver.received) >= count, f"{len(receiver.received)} callbacks, {count} expected"
    return receiver.received


@pytest.mark.e2e
def test_a_real_callback_verifies_with_the_accounts_secret_before_and_after_a_rotation(
    client: Runplane,
) -> None:
    secret = client.callbacks.secret().secret
    assert secret.startswith("whsec_")
    with receiving() as receiver:
        run = client.runs.run("echo", {"hello": "hook"}, callback_url=receiver.url, timeout=30)
        (first,) = received(receiver, 1)
        payload = verify(first.headers, first.body, secret)
        assert (payload["id"], payload["status"], payload["result"]["outputs"]) == (
            run.id,
            "completed",
            {"hello": "hook"},
        )
        assert RunStatus(payload["status"]) is run.status
        with pytest.raises(WebhookVerificationError):
            verify(first.headers, first.body, OTHER)

        deadline = time.monotonic() + 20
        while client.callbacks.deliveries(run.id)[0].state != "succeeded" and time.monotonic() < deadline:
            time.sleep(0.1)
        rotated = client.callbacks.rotate_secret()
        assert rotated.secret != secret
        assert rotated.previous_valid_until is not None
        again = client.callbacks.redeliver(run.id)
        assert again.id == first.headers["webhook-id"]
        second = received(receiver, 2)[1]
    assert second.headers["webhook-id"] == first.headers["webhook-id"]
    assert len(second.headers["webhook-signature"].split()) == 2  # one per secret while they overlap
    for key in (rotated.secret, secret, [OTHER, rotated.secret]):
        assert verify(second.headers, second.body, key)["id"] == run.id
    (delivery,) = client.callbacks.deliveries(run.id)
    assert (delivery.id, delivery.url, len(delivery.attempts)) == (again.id, receiver.url, 2)
    assert [attempt.status_code for attempt in delivery.attempts] == [200, 200]


def test_a_signature_of_any_text_is_refused_as_a_mismatch() -> None:
    headers = {**signed_by_the_package(), "webhook-signature": "v1,é v1,\u2603"}
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify(headers, BODY, SECRET)
