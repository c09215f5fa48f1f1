"""Local mode and the deployed stack come from one set of definitions: what moto is given equals the template."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from moto import mock_aws
from runplane import definitions as defs
from runplane.local.provision import provision

from tests.infra.conftest import resources

pytestmark = pytest.mark.infra


def _schema(keys: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(k["AttributeName"], k["KeyType"]) for k in keys]


def _indexes(indexes: list[dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    return {
        i["IndexName"]: (
            tuple(_schema(i["KeySchema"])),
            i["Projection"]["ProjectionType"],
            tuple(sorted(i["Projection"].get("NonKeyAttributes", []))),
        )
        for i in indexes
    }


@pytest.fixture(scope="module")
def local() -> dict[str, Any]:
    """What local mode creates, read back from moto."""
    with mock_aws():
        session = boto3.session.Session(
            aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1"
        )
        created = provision(session, "compare")
        dynamodb, sqs = session.client("dynamodb"), session.client("sqs")
        tables = {}
        for table in defs.TABLES:
            name = created[table.env_var]
            described = dynamodb.describe_table(TableName=name)["Table"]
            ttl = dynamodb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
            tables[table.name] = {
                "keys": _schema(described["KeySchema"]),
                "indexes": _indexes(described.get("GlobalSecondaryIndexes", [])),
                "ttl": ttl.get("AttributeName") if ttl.get("TimeToLiveStatus") == "ENABLED" else None,
                "billing": described["BillingModeSummary"]["BillingMode"],
            }
        queues = {}
        for queue in defs.QUEUES:
            attributes = sqs.get_queue_attributes(QueueUrl=created[queue.env_var], AttributeNames=["All"])[
                "Attributes"
            ]
            redrive = json.loads(attributes.get("RedrivePolicy", "{}"))
            queues[queue.name] = (
                int(attributes["VisibilityTimeout"]),
                int(attributes["MessageRetentionPeriod"]),
                int(attributes["MaximumMessageSize"]),
                redrive.get("maxReceiveCount"),
            )
        iam = session.client("iam")
        role = created["RUNPLANE_PRESIGN_ROLE_ARN"].rsplit("/", 1)[-1]
        bucket = f"arn:aws:s3:::{created[defs.PAYLOAD_BUCKET_ENV]}"
        statements = [
            statement
            for name in iam.list_role_policies(RoleName=role)["PolicyNames"]
            for statement in iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"][
                "Statement"
            ]
        ]
        presigner = {
            "max_session": iam.get_role(RoleName=role)["Role"]["MaxSessionDuration"],
            "grants": _grants(statements, lambda r: r.replace(bucket, "<bucket>")),
        }
        return {"tables": tables, "queues": queues, "presigner": presigner, "env": set(created)}


def _grants(statements: list[dict[str, Any]], rendered: Any) -> set[tuple[str, str, str]]:
    """(effect, action, resource) of each statement's every action and resource."""
    found = set()
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        listed = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        found |= {(statement["Effect"], a, rendered(r)) for a in actions for r in listed}
    return found


def test_tables_match(template: dict[str, Any], local: dict[str, Any]) -> None:
    deployed = {}
    for table in resources(template, "AWS::DynamoDB::Table").values():
        properties = table["Properties"]
        name = table["Metadata"]["aws:cdk:path"].split("/")[-2]
        deployed[name] = {
            "keys": _schema(properties["KeySchema"]),
            "indexes": _indexes(properties.get("GlobalSecondaryIndexes", [])),
            "ttl": properties.get("TimeToLiveSpecification", {}).get("AttributeName"),
            "billing": properties["BillingMode"],
        }
    assert deployed == local["tables"]


def test_queues_match(template: dict[str, Any], local: dict[str, Any]) -> None:
    deployed = {}
    for queue in resources(template, "AWS::SQS::Queue").values():
        properties = queue["Properties"]
        name = queue["Metadata"]["aws:cdk:path"].split("/")[-2]
        deployed[name] = (
            properties["VisibilityTimeout"],
            properties["MessageRetentionPeriod"],
            properties["MaximumMessageSize"],
            properties.get("RedrivePolicy", {}).get("maxReceiveCount"),
        )
    assert deployed == local["queues"]


def test_the_local_gateway_base64_encodes_the_deployed_rest_apis_binary_media_types(synthesize: Any) -> None:
    """An HTTP API has no such list: it base64-encodes every body whose media type is not text, and so does
    the local gateway's HTTP event (tests/e2e/test_gateway_http.py)."""
    from runplane.local.gateway import BINARY_MEDIA_TYPES

    [api] = resources(synthesize("rest")[1], "AWS::ApiGateway::RestApi").values()
    assert "multipart/form-data" in api["Properties"]["BinaryMediaTypes"]  # file uploads arrive intact
    assert sorted(api["Properties"]["BinaryMediaTypes"]) == sorted(BINARY_MEDIA_TYPES)


def test_the_presign_role_signs_what_the_deployed_one_does(
    template: dict[str, Any], local: dict[str, Any]
) -> None:
    """Local mode assumes a presign role as the deployed functions do: one that reaches what the stack's
    does (its trust differs: locally, the account's own credentials assume it)."""
    [(role, properties)] = [
        (k, r["Properties"])
        for k, r in resources(template, "AWS::IAM::Role").items()
        if r["Metadata"]["aws:cdk:path"].endswith("/functions/presigner/Resource")
    ]
    [bucket] = resources(template, "AWS::S3::Bucket")

    def rendered(value: Any) -> str:
        separator, parts = value["Fn::Join"]
        bucket_arn = {"Fn::GetAtt": [bucket, "Arn"]}
        return separator.join("<bucket>" if part == bucket_arn else part for part in parts)

    statements = [
        statement
        for policy in resources(template, "AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    deployed = {"max_session": properties["MaxSessionDuration"], "grants": _grants(statements, rendered)}
    assert deployed == local["presigner"]


def test_local_mode_sets_only_variables_the_stack_gives_every_function(
    template: dict[str, Any], local: dict[str, Any]
) -> None:
    for function in resources(template, "AWS::Lambda::Function").values():
        assert local["env"] <= set(function["Properties"]["Environment"]["Variables"])
