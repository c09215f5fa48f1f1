"""Per-key rate limit: 429 with Retry-After, shared by every API instance through DynamoDB."""

from __future__ import annotations

import time

import pytest
from runplane.logic import services
from runplane.logic.keys import CreatedKey, admit_request, authenticate, create_key

from tests.conftest import Api


@pytest.fixture
def limited(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """5 requests per second, up to 10 at once: windows of 2 s holding 10 requests."""
    monkeypatch.setenv("RUNPLANE_RATE_LIMIT_PER_SECOND", "5")
    monkeypatch.setenv("RUNPLANE_RATE_LIMIT_BURST", "10")
    services.reset()


def at_window_start() -> None:
    time.sleep(2 - time.time() % 2 + 0.01)


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


@pytest.mark.usefixtures("limited")
def test_each_key_has_its_own_budget_shared_across_api_instances(api: Api, account: CreatedKey) -> None:
    other_key = Api(create_key(account.account_id).token)
    second_instance = Api(api.token)  # another resolver, as another Lambda instance would have
    at_window_start()
    assert [api.get("/v1/runs").status for _ in range(5)] == [200] * 5
    assert [second_instance.get("/v1/runs").status for _ in range(6)] == [200] * 5 + [429]
    assert other_key.get("/v1/runs").status == 200


@pytest.mark.usefixtures("limited")
def test_refused_requests_are_not_counted(account: CreatedKey) -> None:
    principal = authenticate(f"Bearer {account.token}")
    window_start = (time.time() // 2 + 1) * 2
    for _ in range(10):
        admit_request(principal, now=window_start)
    for _ in range(5):
        with pytest.raises(Exception, match="Rate limit exceeded"):
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
