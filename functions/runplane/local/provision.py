"""Create every table, queue, the bucket and the presign role from `runplane.definitions`, as the CDK
stack does."""

from __future__ import annotations

import json
from typing import Any

from runplane import definitions as defs

# The presign role (infra/functions.py): what its sessions may sign, on every account's resources' bytes.
PRESIGN_ROLE_ENV = "RUNPLANE_PRESIGN_ROLE_ARN"
PRESIGN_ACTIONS = ("s3:GetObject", "s3:PutObject", "s3:PutObjectTagging")
RESOURCE_OBJECTS = "*/resources/*"
PRESIGN_MAX_SESSION_SECONDS = 12 * 3600


def _table_request(table: defs.Table, name: str) -> dict[str, Any]:
    keys = [table.partition_key, table.sort_key]
    for index in table.indexes:
        keys += [index.partition_key, index.sort_key]
    attributes = {key.name: key.type for key in keys if key is not None}

    def schema(partition: defs.Key, sort: defs.Key | None) -> list[dict[str, str]]:
        return [{"AttributeName": partition.name, "KeyType": "HASH"}] + (
            [{"AttributeName": sort.name, "KeyType": "RANGE"}] if sort else []
        )

    request: dict[str, Any] = {
        "TableName": name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": k, "AttributeType": t} for k, t in attributes.items()],
        "KeySchema": schema(table.partition_key, table.sort_key),
    }
    if table.indexes:
        request["GlobalSecondaryIndexes"] = [
            {
                "IndexName": index.name,
                "KeySchema": schema(index.partition_key, index.sort_key),
                "Projection": (
                    {"ProjectionType": "INCLUDE", "NonKeyAttributes": list(index.include)}
                    if index.include
                    else {"ProjectionType": "KEYS_ONLY"}
                ),
            }
            for index in table.indexes
        ]
    return request


def provision(session: Any, prefix: str) -> dict[str, str]:
    """Create all resources named `{prefix}-{name}`; returns the environment that points handlers at them."""
    dynamodb, sqs, s3 = session.client("dynamodb"), session.client("sqs"), session.client("s3")
    env: dict[str, str] = {}
    for table in defs.TABLES:
        name = f"{prefix}-{table.name}"
        dynamodb.create_table(**_table_request(table, name))
        if table.ttl_attribute:
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": table.ttl_attribute},
            )
        env[table.env_var] = name
    arns: dict[str, str] = {}
    for queue in defs.QUEUES:  # dead-letter queues come first in QUEUES
        attributes = {
            "VisibilityTimeout": str(queue.visibility_timeout_seconds),
            "MessageRetentionPeriod": str(queue.retention_seconds),
            "MaximumMessageSize": str(queue.max_message_bytes),
        }
        if queue.dead_letter_queue:
            attributes["RedrivePolicy"] = json.dumps(
                {
                    "deadLetterTargetArn": arns[queue.dead_letter_queue],
                    "maxReceiveCount": queue.max_receive_count,
                }
            )
        url = sqs.create_queue(QueueName=f"{prefix}-{queue.name}", Attributes=attributes)["QueueUrl"]
        arns[queue.name] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        env[queue.env_var] = url
    bucket = f"{prefix}-payloads"
    s3.create_bucket(Bucket=bucket)
    env[defs.PAYLOAD_BUCKET_ENV] = bucket
    env[PRESIGN_ROLE_ENV] = _presign_role(session, f"{prefix}-presigner", bucket)
    return env


def _presign_role(session: Any, name: str, bucket: str) -> str:
    """The presign role, its ARN. Deployed, it trusts the api and worker roles; here the account's own
    credentials (those local mode runs with) may assume it, so presigned URLs take the same AssumeRole path."""
    iam, sts = session.client("iam"), session.client("sts")
    account = sts.get_caller_identity()["Account"]
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    arn = iam.create_role(
        RoleName=name,
        AssumeRolePolicyDocument=json.dumps(trust),
        Description="Runplane presigned resource URLs (local)",
        MaxSessionDuration=PRESIGN_MAX_SESSION_SECONDS,
    )["Role"]["Arn"]
    signs = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": list(PRESIGN_ACTIONS),
                "Resource": f"arn:aws:s3:::{bucket}/{RESOURCE_OBJECTS}",
            }
        ],
    }
    iam.put_role_policy(RoleName=name, PolicyName="presign", PolicyDocument=json.dumps(signs))
    return arn
