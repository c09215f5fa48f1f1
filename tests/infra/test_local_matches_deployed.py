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
        return {"tables": tables, "queues": queues}


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


def test_the_local_gateway_base64_encodes_the_deployed_apis_binary_media_types(
    template: dict[str, Any],
) -> None:
    from runplane.local.gateway import BINARY_MEDIA_TYPES

    [api] = resources(template, "AWS::ApiGateway::RestApi").values()
    assert "multipart/form-data" in api["Properties"]["BinaryMediaTypes"]  # file uploads arrive intact
    assert sorted(api["Properties"]["BinaryMediaTypes"]) == sorted(BINARY_MEDIA_TYPES)
