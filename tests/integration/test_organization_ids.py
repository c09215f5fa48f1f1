"""Every account has an organization id: a random UUID, given when it is opened, that never changes."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import boto3
import pytest
from runplane import cli
from runplane.logic import keys, services
from runplane.logic.accounts import describe_account
from runplane.logic.keys import CreatedKey, authenticate, create_key

from tests.conftest import Api


def is_uuid4(value: str) -> bool:
    return str(uuid.UUID(value)) == value and uuid.UUID(value).version == 4


def stored_organization_id(env: dict[str, str], account_id: str) -> str | None:
    item = boto3.client("dynamodb").get_item(
        TableName=env["RUNPLANE_ACCOUNTS_TABLE"], Key={"account_id": {"S": account_id}}
    )["Item"]
    return item.get("organization_id", {}).get("S")


@contextmanager
def dynamodb_requests() -> Iterator[Counter[str]]:
    made: Counter[str] = Counter()
    events = services.services().accounts.client.meta.events

    def count(model, **_: object) -> None:
        made[model.name] += 1

    events.register("before-call.dynamodb", count)
    try:
        yield made
    finally:
        events.unregister("before-call.dynamodb", count)


def remove_organization_id(env: dict[str, str], account_id: str) -> None:
    """As an account opened before organization ids existed."""
    boto3.client("dynamodb").update_item(
        TableName=env["RUNPLANE_ACCOUNTS_TABLE"],
        Key={"account_id": {"S": account_id}},
        UpdateExpression="REMOVE organization_id",
    )


def forget_verified_keys() -> None:
    """As a fresh API function: no key verified yet."""
    keys._cache = keys._PrincipalCache()


def test_an_account_has_one_organization_id_for_all_its_keys(
    env: dict[str, str], api: Api, account: CreatedKey
) -> None:
    assert is_uuid4(account.organization_id)
    assert create_key(account.account_id).organization_id == account.organization_id
    created = api.post("/v1/keys", {"scopes": ["runs:read"]}).json()
    assert created["organization_id"] == account.organization_id
    assert api.get("/v1/account").json()["organization_id"] == account.organization_id
    assert stored_organization_id(env, account.account_id) == account.organization_id

    other = create_key("globex")
    assert is_uuid4(other.organization_id)
    assert other.organization_id != account.organization_id


def test_the_principal_carries_it_and_authenticating_makes_no_extra_request(account: CreatedKey) -> None:
    forget_verified_keys()
    with dynamodb_requests() as made:
        assert authenticate(f"Bearer {account.token}").organization_id == account.organization_id
    assert made == {"GetItem": 2}  # the key and its account
    with dynamodb_requests() as made:
        assert authenticate(f"Bearer {account.token}").organization_id == account.organization_id
    assert made == {}  # verified, cached


@pytest.mark.parametrize("made_before", ["organization ids", "accounts were opened"])
def test_an_older_account_gets_one_when_its_key_is_next_used(
    env: dict[str, str], account: CreatedKey, made_before: str
) -> None:
    if made_before == "organization ids":
        remove_organization_id(env, account.account_id)
    else:
        boto3.client("dynamodb").delete_item(
            TableName=env["RUNPLANE_ACCOUNTS_TABLE"], Key={"account_id": {"S": account.account_id}}
        )
    forget_verified_keys()

    with dynamodb_requests() as made:
        given = authenticate(f"Bearer {account.token}").organization_id
    assert made == {"GetItem": 2, "UpdateItem": 1}
    assert is_uuid4(given)
    assert stored_organization_id(env, account.account_id) == given
    assert Api(account.token).get("/v1/account").json()["organization_id"] == given

    forget_verified_keys()
    assert authenticate(f"Bearer {account.token}").organization_id == given
    assert create_key(account.account_id).organization_id == given


def test_the_account_view_gives_one_to_an_account_without(env: dict[str, str], account: CreatedKey) -> None:
    remove_organization_id(env, account.account_id)
    given = describe_account(account.account_id).organization_id
    assert is_uuid4(given)
    assert describe_account(account.account_id).organization_id == given
    assert stored_organization_id(env, account.account_id) == given


def test_keys_create_prints_it(account: CreatedKey, capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["keys", "create", "--account", account.account_id, "--scope", "runs:read"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["organization_id"] == account.organization_id
    assert printed["account_id"] == account.account_id
