"""Standard Webhooks signatures and the retry timing of callback deliveries."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from runplane.domain.webhooks import new_secret, signature_header
from runplane.logic.deliver import next_delay, retry_after_seconds
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

BODY = b'{"id": "run-1", "status": "succeeded"}'


def headers(secrets: list[str], message_id: str = "msg_1", body: bytes = BODY) -> dict[str, str]:
    timestamp = int(time.time())
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, message_id, timestamp, body),
    }


def test_signatures_verify_with_the_standardwebhooks_library() -> None:
    secret = new_secret()
    Webhook(secret).verify(BODY, headers([secret]))


def test_signatures_do_not_verify_with_another_secret() -> None:
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, headers([new_secret()]))


def test_signatures_do_not_verify_for_a_changed_body() -> None:
    secret = new_secret()
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY + b" ", headers([secret]))


def test_signatures_do_not_verify_for_a_changed_id() -> None:
    secret = new_secret()
    sent = headers([secret], message_id="msg_1")
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**sent, "webhook-id": "msg_2"})


def test_a_header_signed_with_two_secrets_verifies_with_either() -> None:
    new, old = new_secret(), new_secret()
    sent = headers([new, old])
    assert len(sent["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(BODY, sent)
    Webhook(old).verify(BODY, sent)


def test_new_secrets_have_the_whsec_prefix_and_differ() -> None:
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_")
    assert second.startswith("whsec_")
    assert first != second


def test_scheduled_delays_get_at_most_20_percent_jitter() -> None:
    delays = [next_delay(60, None) for _ in range(2000)]
    assert all(48 <= d <= 72 for d in delays)
    assert len(set(delays)) > 1


def test_a_longer_retry_after_replaces_the_scheduled_delay() -> None:
    assert next_delay(5, 30.0) == 30


def test_retry_after_is_capped_at_a_day() -> None:
    assert next_delay(5, 10**6) == 86400


def test_a_shorter_retry_after_is_ignored() -> None:
    for _ in range(200):
        assert 80 <= next_delay(100, 1.0) <= 120


def test_retry_after_in_seconds_is_read() -> None:
    assert retry_after_seconds("120") == 120.0


def test_retry_after_as_an_http_date_is_seconds_from_now() -> None:
    value = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    seconds = retry_after_seconds(value)
    assert seconds is not None
    assert 55 <= seconds <= 61


@pytest.mark.parametrize("value", [None, "", "soon", "²", "-5"])
def test_missing_or_unreadable_retry_after_is_none(value: str | None) -> None:
    assert retry_after_seconds(value) is None
