"""Retries: a scripted server in front of the local stack answers 429, 503 or a lost answer, then lets
requests through; the client's attempts, pauses and Idempotency-Keys are counted."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from runplane_client import (
    ApiConnectionError,
    RateLimited,
    RetryPolicy,
    Runplane,
    RunStatus,
    ServerError,
    ServiceUnavailable,
)
from runplane_client.transport import retry_after_seconds

from tests.client.conftest import FAST_RETRIES, unique
from tests.client.servers import FORWARD, LOST, Reply, Scripted, scripted
from tests.local_stack import Stack, free_port

pytestmark = pytest.mark.e2e

ECHO = "/v1/runnable/{}/runs"


def through(proxy: Scripted, stack: Stack, retries: RetryPolicy = FAST_RETRIES) -> Runplane:
    return Runplane(proxy.url, stack.info["api_key"], retries=retries)


def keys_sent(proxy: Scripted) -> list[str | None]:
    return [seen.headers.get("Idempotency-Key") for seen in proxy.seen]


def test_a_429_is_retried_after_its_retry_after_with_the_same_idempotency_key(stack: Stack) -> None:
    echo = stack.info["runnables"]["echo"]
    with scripted(stack.info["api_url"], Reply.error(429, "rate_limited", "1"), FORWARD) as proxy:
        began = time.monotonic()
        started = through(proxy, stack).runs.start(echo, {"n": 1})
        assert time.monotonic() - began >= 1.0  # Retry-After: 1, not the policy's 0.05 s
    assert [seen.path for seen in proxy.seen] == [ECHO.format(echo) + "?mode=async"] * 2
    first, second = keys_sent(proxy)
    assert first
    assert first == second
    assert stack.wait_terminal(started.id)["status"] == "completed"


def test_503s_are_retried_until_the_run_is_answered(stack: Stack) -> None:
    echo, busy = stack.info["runnables"]["echo"], Reply.error(503, "service_unavailable", "0")
    with scripted(stack.info["api_url"], busy, busy, FORWARD) as proxy:
        state = through(proxy, stack).runs.run(echo, {"n": 2}, timeout=30)
    assert (state.status, state.outputs) == (RunStatus.completed, {"n": 2})
    assert len(proxy.seen) == 3
    assert len(set(keys_sent(proxy))) == 1
    assert keys_sent(proxy)[0]


def test_a_start_whose_answer_was_lost_is_replayed_not_run_twice(stack: Stack, client: Runplane) -> None:
    mine = client.runnables.create(unique("once"), "python", {"function": "echo"})
    with scripted(stack.info["api_url"], LOST, FORWARD) as proxy:
        started = through(proxy, stack).runs.start(mine, {"n": 3})
    assert len(proxy.seen) == 2
    assert len(set(keys_sent(proxy))) == 1
    assert [run.id for run in client.runs.list(runnable=mine)] == [started.id]


def test_a_create_whose_answer_was_lost_answers_the_runnable_it_made(stack: Stack, client: Runplane) -> None:
    name = unique("made-once")
    with scripted(stack.info["api_url"], LOST, FORWARD) as proxy:
        made = through(proxy, stack).runnables.create(name, "python", {"function": "echo"}, tags=["t"])
    answers = [(seen.method, seen.path.split("?")[0], seen.answered) for seen in proxy.seen]
    assert answers == [  # the retry finds the name taken, by the runnable the first attempt made
        ("POST", "/v1/runnables", 502),
        ("POST", "/v1/runnables", 409),
        ("GET", "/v1/runnables", 200),
    ]
    assert client.runnables.get_by_name(name) == made
    assert made.tags == ["t"]


def test_retries_end_with_the_typed_error_of_the_last_answer(stack: Stack) -> None:
    with scripted(stack.info["api_url"], Reply.error(429, "rate_limited", "0")) as proxy:
        policy = RetryPolicy(retries=2, base_delay=0.01)
        with pytest.raises(RateLimited) as limited:
            through(proxy, stack, policy).runs.get("01a2080f-0000-7000-8000-000000000000")
    assert (limited.value.status, limited.value.attempts, limited.value.retry_after) == (429, 3, 0.0)
    assert len(proxy.seen) == 3


def test_a_retry_after_longer_than_the_policy_allows_is_raised_at_once(stack: Stack) -> None:
    too_long = Reply.error(429, "rate_limited", "3600")
    with scripted(stack.info["api_url"], too_long, FORWARD) as proxy, pytest.raises(RateLimited) as limited:
        through(proxy, stack).runs.start("echo")
    assert (limited.value.attempts, limited.value.retry_after, len(proxy.seen)) == (1, 3600.0, 1)


def test_a_request_that_may_have_been_applied_is_sent_once(stack: Stack) -> None:
    """A resource's creation has no idempotency key: after a 500 or a lost answer it is not sent again."""
    for failure, error in ((Reply.error(500, "internal_error"), ServerError), (LOST, ServiceUnavailable)):
        with scripted(stack.info["api_url"], failure, FORWARD) as proxy, pytest.raises(error) as failed:
            through(proxy, stack).resources.create("a.txt", b"a", content_type="text/plain")
        assert (failed.value.attempts, len(proxy.seen)) == (1, 1)
    assert failed.value.status == 502
    assert "Bad Gateway" in failed.value.message  # a gateway's page, not JSON, is kept as the message


def test_reads_are_retried_after_a_5xx(stack: Stack) -> None:
    echo = stack.info["runnables"]["echo"]
    with scripted(stack.info["api_url"], Reply.error(500, "internal_error"), LOST, FORWARD) as proxy:
        assert through(proxy, stack).runnables.get(echo).id == echo
    assert len(proxy.seen) == 3


@pytest.fixture
def hanging_up() -> Iterator[tuple[str, list[int]]]:
    """A server that accepts each connection and closes it without an answer; counts them."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []

    def serve() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            connection.recv(65536)
            accepted.append(1)
            connection.close()

    threading.Thread(target=serve, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}", accepted
    listener.close()


def test_connection_failures_are_retried_when_that_is_safe(hanging_up: tuple[str, list[int]]) -> None:
    url, accepted = hanging_up
    client = Runplane(url, "rpk_x", retries=RetryPolicy(retries=2, base_delay=0.01))
    with pytest.raises(ApiConnectionError) as read:
        client.runs.get("01a2080f-0000-7000-8000-000000000000")
    assert (read.value.status, read.value.attempts, len(accepted)) == (None, 3, 3)
    accepted.clear()
    with pytest.raises(ApiConnectionError) as created:  # sent, maybe applied: not again
        client.resources.create("a.txt", b"a")
    assert (created.value.attempts, len(accepted)) == (1, 1)

    nobody = Runplane(f"http://127.0.0.1:{free_port()}", "rpk_x", retries=RetryPolicy(2, 0.01))
    with pytest.raises(ApiConnectionError) as refused:  # never sent: safe to try again
        nobody.resources.create("a.txt", b"a")
    assert refused.value.attempts == 3


def test_retry_after_is_read_as_seconds_or_as_an_http_date() -> None:
    assert retry_after_seconds("7") == 7.0
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # past
    later = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 120))
    assert 115 <= (retry_after_seconds(later) or 0) <= 120
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None


def test_a_2xx_answer_that_is_not_json_is_a_server_error_not_a_decoding_crash() -> None:
    page = Reply(200, {"Content-Type": "text/html"}, b"<html>not the API</html>")
    with scripted(None, page) as server:
        client = Runplane(server.url, "rpk_x", retries=FAST_RETRIES)
        with pytest.raises(ServerError, match="not JSON") as raised:
            list(client.runs.list())
    assert raised.value.code == "not_json"
