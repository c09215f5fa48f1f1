"""Per-key rate limit: 429 with Retry-After; the burst is shared by every API instance through a counter in
DynamoDB that each instance writes once per share of the burst it admits, not per request."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from botocore.exceptions import ClientError
from runplane.domain.access import RateLimit
from runplane.domain.errors import TooManyRequests
from runplane.logic import services
from runplane.logic.keys import SHARES, CreatedKey, RateLimiter, admit_request, authenticate, create_key

from tests.conftest import Api

LIMIT = RateLimit(per_second=20, burst=40)  # the deployment's default: windows of 2 s, shares of 5
SHARE = 40 // SHARES


@pytest.fixture
def limited(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """5 requests per second, up to 10 at once: windows of 2 s holding 10 requests (shares of 2)."""
    monkeypatch.setenv("RUNPLANE_RATE_LIMIT_PER_SECOND", "5")
    monkeypatch.setenv("RUNPLANE_RATE_LIMIT_BURST", "10")
    services.reset()


def at_window_start() -> None:
    time.sleep(2 - time.time() % 2 + 0.01)


def a_window(limit: RateLimit = LIMIT, ahead: int = 10) -> float:
    """A moment early in a window no test has counted in yet (its counter item does not exist)."""
    seconds = limit.burst / limit.per_second
    return (time.time() // seconds + ahead) * seconds + 0.1


def admitted(limiter: RateLimiter, counter: str, now: float, limit: RateLimit = LIMIT) -> bool:
    try:
        limiter.admit(counter, limit, now)
    except TooManyRequests:
        return False
    return True


@contextmanager
def counter_writes(*, failing: bool = False) -> Iterator[list[int]]:
    """How many requests each write of a rate limit counter added, within the block; `failing`: each of
    those writes is throttled instead (an error the SDK gave up retrying)."""
    added: list[int] = []

    def write(params: dict[str, Any], **_: Any) -> None:
        if "#rate#" in params["Key"]["id"]["S"]:
            added.append(int(params["ExpressionAttributeValues"][":n"]["N"]))
            if failing:
                raise ClientError({"Error": {"Code": "ThrottlingException"}}, "UpdateItem")

    events = services.services().keys.client.meta.events
    events.register("before-parameter-build.dynamodb.UpdateItem", write)
    try:
        yield added
    finally:
        events.unregister("before-parameter-build.dynamodb.UpdateItem", write)


@pytest.mark.usefixtures("limited")
def test_a_key_beyond_its_burst_gets_429_with_retry_after(api: Api) -> None:
    at_window_start()
    statuses = [api.get("/v1/runs").status for _ in range(12)]
    assert statuses == [200] * 10 + [429] * 2
    refused = api.get("/v1/runs")
    assert refused.json()["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 2
    time.sleep(int(refused.headers["Retry-After"]))
    assert api.get("/v1/runs").status == 200


@pytest.mark.usefixtures("env")
def test_instances_share_the_burst_within_one_share_each() -> None:
    """The worst order: three instances each admit what they may before counting (a share less one),
    then a fourth takes the whole burst from the counter. The others' next requests find it full."""
    instances = [RateLimiter() for _ in range(4)]
    now = a_window()
    early = [sum(admitted(limiter, "k", now) for _ in range(SHARE - 1)) for limiter in instances[1:]]
    assert early == [SHARE - 1] * 3
    taken = sum(admitted(instances[0], "k", now) for _ in range(LIMIT.burst + 10))
    assert taken == LIMIT.burst
    assert not any(admitted(limiter, "k", now) for limiter in instances for _ in range(5))
    # burst + (share - 1) per other instance: within the stated bound, burst + (share - 1) per instance
    assert taken + sum(early) == LIMIT.burst + 3 * (SHARE - 1)
    assert admitted(instances[1], "k", now + 2)  # the next window starts empty


@pytest.mark.usefixtures("env")
@pytest.mark.parametrize("seed", range(3))
def test_any_order_over_many_instances_admits_the_burst_and_at_most_a_share_more_each(seed: int) -> None:
    instances = [RateLimiter() for _ in range(10)]
    order = random.Random(seed).choices(instances, k=400)
    now = a_window()
    total = 0
    for limiter in order:
        total += admitted(limiter, f"k{seed}", now)
    assert LIMIT.burst <= total <= LIMIT.burst + len(instances) * (SHARE - 1)


@pytest.mark.usefixtures("env")
def test_requests_are_counted_once_per_share_and_refusals_not_at_all() -> None:
    instances = [RateLimiter() for _ in range(3)]
    start = a_window()
    with counter_writes() as quiet:
        for window in range(5):  # each instance admits less than a share per window: no write at all
            for limiter in instances:
                assert all(admitted(limiter, "k", start + 2 * window) for _ in range(SHARE - 1))
    assert quiet == []
    busy = RateLimiter()
    with counter_writes() as counted:
        assert sum(admitted(busy, "busy", start) for _ in range(LIMIT.burst + 20)) == LIMIT.burst
    assert counted == [SHARE] * (LIMIT.burst // SHARE)  # 8 writes for 40 requests; the 20 refused: none


@pytest.mark.usefixtures("limited")
def test_a_counter_that_cannot_be_written_leaves_each_instance_to_limit_the_key_alone(api: Api) -> None:
    """No 500 and no unlimited traffic: the instance admits the burst by itself, then 429 as always."""
    at_window_start()
    with counter_writes(failing=True) as tried:
        statuses = [api.get("/v1/runs").status for _ in range(12)]
    assert statuses == [200] * 10 + [429] * 2
    assert tried == [2]  # one try per window: a throttled table is not asked again at every request
    time.sleep(2 - time.time() % 2 + 0.01)
    with counter_writes() as counted:
        assert [api.get("/v1/runs").status for _ in range(2)] == [200, 200]
    assert counted == [2]  # the next window counts in DynamoDB again


@pytest.mark.usefixtures("limited")
def test_each_key_has_its_own_budget(api: Api, account: CreatedKey) -> None:
    other_key = Api(create_key(account.account_id).token)
    at_window_start()
    assert [api.get("/v1/runs").status for _ in range(11)] == [200] * 10 + [429]
    assert other_key.get("/v1/runs").status == 200


@pytest.mark.usefixtures("limited")
def test_refused_requests_are_not_counted(account: CreatedKey) -> None:
    principal = authenticate(f"Bearer {account.token}")
    window_start = (time.time() // 2 + 1) * 2
    for _ in range(10):
        admit_request(principal, now=window_start)
    for _ in range(5):
        with pytest.raises(TooManyRequests, match="Rate limit exceeded"):
            admit_request(principal, now=window_start + 1.5)
    admit_request(principal, now=window_start + 2)  # the next window starts empty


def test_an_accounts_own_rate_limit_applies_to_its_keys_and_is_visible(api: Api, account: CreatedKey) -> None:
    from runplane.logic.accounts import set_rate_limit

    assert api.get("/v1/account").json()["rate_limit"] == {"per_second": 20.0, "burst": 0}  # tests: off
    set_rate_limit(account.account_id, per_second=1.5, burst=3)
    fresh = Api(create_key(account.account_id).token)  # read with the key, cached as long as the key
    at_window_start()
    assert [fresh.get("/v1/runs").status for _ in range(4)] == [200, 200, 200, 429]
    assert api.get("/v1/account").json()["rate_limit"] == {"per_second": 1.5, "burst": 3}


@pytest.mark.usefixtures("limited")
def test_an_account_may_be_exempted(account: CreatedKey) -> None:
    from runplane.logic.accounts import set_rate_limit

    set_rate_limit(account.account_id, per_second=1, burst=0)
    exempt = Api(create_key(account.account_id).token)
    assert {exempt.get("/v1/runs").status for _ in range(15)} == {200}


@pytest.mark.parametrize(("per_second", "burst"), [(1.0, None), (0.0, 5), (-1.0, 5), (1.0, -1)])
def test_an_unusable_rate_limit_is_refused(account: CreatedKey, per_second: float, burst: int | None) -> None:
    from runplane.domain.errors import InvalidRequest
    from runplane.logic.accounts import set_rate_limit

    with pytest.raises(InvalidRequest):
        set_rate_limit(account.account_id, per_second=per_second, burst=burst)
