"""Small value rules: identifiers, settings, cursors, request fields, Prefer: wait."""

from __future__ import annotations

import re
import time
import uuid

import pytest
from pydantic import ValidationError
from runplane.adapters.dynamo import decode_cursor, encode_cursor
from runplane.domain.errors import InvalidRequest
from runplane.domain.ids import INTAKE_NAMESPACE, intake_run_id, new_id
from runplane.domain.models import IntakeMessage, StartRunRequest
from runplane.settings import Settings


def test_new_ids_are_uuid7_and_sort_by_creation_time() -> None:
    ids = []
    for _ in range(5):
        ids.append(new_id())
        time.sleep(0.002)
    assert all(uuid.UUID(i).version == 7 for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == 5


def test_intake_run_ids_are_uuid5_of_the_message_id() -> None:
    assert intake_run_id("m-1") == str(uuid.uuid5(INTAKE_NAMESPACE, "m-1"))
    assert intake_run_id("m-1") == intake_run_id("m-1") != intake_run_id("m-2")


def test_settings_come_from_runplane_environment_variables() -> None:
    settings = Settings.from_env(
        {
            "RUNPLANE_SYNC_WAIT_SECONDS": "3",
            "RUNPLANE_RUNNABLE_PACKAGES": "a.b, c",
            "RUNPLANE_MAX_ATTEMPTS": "5",
        }
    )
    assert settings.sync_wait_seconds == 3
    assert settings.runnable_packages == ["a.b", "c"]
    assert settings.max_attempts == 5
    assert settings.heartbeat_seconds == settings.lease_seconds / 3
    assert Settings.from_env({}).sync_wait_seconds == 25


def test_invalid_settings_fail_loudly() -> None:
    with pytest.raises(ValidationError):
        Settings.from_env({"RUNPLANE_MAX_ATTEMPTS": "0"})


def test_cursor_round_trip_and_tampering() -> None:
    key = {"account_id": {"S": "acme"}, "id": {"S": "r1"}}
    cursor = encode_cursor(key)
    any_id = re.compile(r"r\d")
    assert decode_cursor(cursor, {"account_id": "acme", "id": any_id}) == key
    with pytest.raises(InvalidRequest):
        decode_cursor(cursor, {"account_id": "globex", "id": any_id})
    with pytest.raises(InvalidRequest):
        decode_cursor(cursor, {"account_id": "acme", "id": re.compile("x")})
    with pytest.raises(InvalidRequest):
        decode_cursor(cursor, {"account_id": "acme", "created_key": any_id})
    with pytest.raises(InvalidRequest):
        decode_cursor("%%%", {"account_id": "acme", "id": any_id})
    assert encode_cursor(None) is None
    assert decode_cursor(None, {}) is None


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": "evil"},
        {"content-length": "1"},
        {"Transfer-Encoding": "chunked"},
        {"Webhook-Id": "x"},
        {"bad name": "x"},
        {"X-Ok": "a\nb"},
    ],
)
def test_callback_headers_cannot_override_reserved_or_inject(headers: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        StartRunRequest(callback_url="https://example.com", callback_headers=headers)


def test_callback_headers_may_carry_the_callers_own_headers() -> None:
    request = StartRunRequest(callback_url="https://example.com/h", callback_headers={"X-Api-Key": "k"})
    assert request.callback_headers == {"X-Api-Key": "k"}


@pytest.mark.parametrize("url", ["example.com", "ftp://example.com", "https://", "javascript:alert(1)"])
def test_callback_url_must_be_absolute_http(url: str) -> None:
    with pytest.raises(ValidationError):
        StartRunRequest(callback_url=url)


@pytest.mark.parametrize("account", ["", "has#hash", "a" * 65, "spa ce"])
def test_intake_account_ids_are_restricted(account: str) -> None:
    with pytest.raises(ValidationError):
        IntakeMessage(account_id=account, runnable_id=uuid.uuid4())


def test_timeout_omitted_is_distinguished_from_null() -> None:
    assert "timeout_seconds" not in StartRunRequest().model_fields_set
    assert "timeout_seconds" in StartRunRequest(timeout_seconds=None).model_fields_set
