"""`GET /v1/account` names the caller's own key (its id, name and scopes, never its secret) to any key of
the account; what operators see of an account (`runplane accounts show`) has no key."""

from __future__ import annotations

import json

from runplane.api.app import document_json
from runplane.logic import keys
from runplane.logic.accounts import describe_account

from tests.conftest import Api


def test_each_key_sees_itself_with_its_scopes_and_not_its_secret(api: Api, account: keys.CreatedKey) -> None:
    reader = keys.create_key(account.account_id, name="dashboard", scopes=["runs:read"])
    own = api.get("/v1/account").json()["key"]
    assert (own["id"], own["scopes"], own["revoked_at"]) == (account.key_id, ["admin"], None)
    reply = Api(reader.token).get("/v1/account")
    assert reply.status == 200  # needs no scope
    key = reply.json()["key"]
    assert (key["id"], key["name"], key["scopes"]) == (reader.key_id, "dashboard", ["runs:read"])
    assert (key["account_id"], key["created_at"][:4].isdigit()) == (account.account_id, True)
    secret = reader.token.split("_", 2)[2]
    assert secret not in reply.text
    assert set(key) == {"id", "account_id", "name", "scopes", "created_at", "revoked_at"}


def test_the_document_requires_the_key_and_operators_view_has_none(account: keys.CreatedKey) -> None:
    schemas = json.loads(document_json())["components"]["schemas"]
    view = schemas["AccountView"]
    assert "key" in view["required"]
    assert view["properties"]["key"]["$ref"] == "#/components/schemas/ApiKey"
    assert "api_key" not in schemas["ApiKey"]["properties"]
    assert "key" not in describe_account(account.account_id).model_dump()
